"""Batched per-example augmentation (SPEC §6): every example i has its own magnitude, all on the images'
device, with no Python loop over examples.

Each function takes images (B, C, H, W) (floating point) and magnitude tensors of shape (B,) (or a scalar for
the whole batch) and never modifies its input. A zero magnitude is exactly the identity for that example
(such examples are restored from the input, so resampling round-off cannot leak in). Randomness comes from
`generator` (drawn on the generator's device, then moved), so a seeded generator reproduces a batch bit for
bit. Magnitudes are detached: the rates a regularizer consumes carry no gradient (SPEC §2).

Speed notes quote one CPU thread on 128×3×32×32 float32 (torch 2.14.1): on this build boolean ops,
`torch.where`, `masked_fill` and index gathers are far slower than float arithmetic, which shaped the code.

Semantics follow torchvision's RandomHorizontalFlip, RandomAffine, ColorJitter (per example: factors and the
random order of the four colour operations) and DeVries & Taylor's Cutout.

`Augmenter(spec)` composes them for the training step: `augmenter(images, values)` with the per-example
constrained hyperparameter values (SPEC §2) that `HyperSpace.example_values` returns.
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

Tensor = torch.Tensor
Magnitude = Union[Tensor, float, int, None]

# The augmentation parameters an Augmenter spec may name, in the order they are applied.
AUGMENT_PARAMS = ("hflip", "degrees", "translate", "scale", "shear", "brightness", "contrast", "saturation", "hue",
                  "cutout_holes", "cutout_length")
# Valid magnitude range of each parameter: [low, high] (high exclusive where marked False).
_RANGES: Dict[str, Tuple[float, float, bool]] = {
    "p": (0.0, 1.0, True), "hflip": (0.0, 1.0, True), "degrees": (0.0, math.inf, True),
    "translate": (0.0, 1.0, True), "scale": (0.0, 1.0, False), "shear": (0.0, 90.0, False),
    "brightness": (0.0, math.inf, True), "contrast": (0.0, math.inf, True), "saturation": (0.0, math.inf, True),
    "hue": (0.0, 0.5, True), "holes": (0.0, math.inf, True), "length": (0.0, math.inf, True),
    "cutout_holes": (0.0, math.inf, True), "cutout_length": (0.0, math.inf, True),
}
_INTERPOLATIONS = ("bilinear", "nearest")


# ------------------------------------------------------------------------------------------ argument handling

def _check_images(images) -> Tensor:
    if not isinstance(images, Tensor):
        raise TypeError(f"images: expected a torch.Tensor, received {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"images: expected shape (B, C, H, W), received {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images: expected a floating-point tensor (pixels in [0, 1]), received {images.dtype}")
    return images


def _magnitude(name: str, value: Magnitude, images: Tensor) -> Tensor:
    """A (B,) float32 tensor on the images' device; None means 0, a scalar applies to every example."""
    batch = images.shape[0]
    if value is None:
        return torch.zeros(batch, device=images.device)
    if isinstance(value, bool) or not isinstance(value, (Tensor, int, float)):
        raise TypeError(f"{name}: expected a tensor of shape ({batch},) or a number, received {type(value).__name__}")
    value = torch.as_tensor(value)
    if value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"{name}: expected real values, received {value.dtype}")
    if value.dim() == 0:
        value = value.expand(batch)
    if value.shape != (batch,):
        raise ValueError(f"{name}: expected shape ({batch},) (one value per example), received {tuple(value.shape)}")
    return value.detach().to(device=images.device, dtype=torch.float32)


def _describe_range(name: str) -> str:
    lo, hi, closed = _RANGES[name]
    return f"[{lo:g}, {hi:g}{']' if closed else ')'}"


def _check_ranges(magnitudes: Mapping[str, Tensor], labels: Optional[Mapping[str, str]] = None) -> None:
    """One host sync for all arguments: stack the violation flags, read them once, name the first offender
    (by its label, e.g. "hue (values['h'])", when one is given)."""
    if not magnitudes:
        return
    names = list(magnitudes)
    m = torch.stack([magnitudes[n] for n in names])  # (P, B): one comparison per bound for all parameters
    lo, hi, closed = zip(*(_RANGES[n] for n in names))
    lo = torch.tensor(lo, device=m.device)[:, None]
    hi = torch.tensor(hi, device=m.device)[:, None]
    closed = torch.tensor(closed, device=m.device)[:, None]
    above = torch.where(closed, m > hi, m >= hi)
    flags = (~m.isfinite() | (m < lo) | above).any(dim=1).tolist()
    for n, flag in zip(names, flags):
        if flag:
            m = magnitudes[n]
            label = (labels or {}).get(n, n)
            raise ValueError(f"{label}: values must lie in {_describe_range(n)}, received "
                             f"min {float(m.min()):g}, max {float(m.max()):g}")


def _check_generator(generator) -> Optional[torch.Generator]:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, received {type(generator).__name__}")
    return generator


def _rand(shape: Sequence[int], generator: Optional[torch.Generator], device: torch.device) -> Tensor:
    """U[0, 1) float32 drawn on the generator's device (so a CPU generator serves CUDA images), then moved."""
    where = generator.device if generator is not None else device
    return torch.rand(tuple(shape), generator=generator, device=where).to(device)


def _randint(high: int, shape: Sequence[int], generator: Optional[torch.Generator], device: torch.device) -> Tensor:
    where = generator.device if generator is not None else device
    return torch.randint(0, high, tuple(shape), generator=generator, device=where).to(device)


def _per_example(mask: Tensor) -> Tensor:
    return mask.view(-1, 1, 1, 1)


def _keep_inactive(out: Tensor, images: Tensor, active: Tensor) -> Tensor:
    """out where active, else images, bit for bit. The all() test (one host sync) skips the select in the
    common all-active case: a broadcast where costs 7x a multiply here (0.29 vs 0.04 ms, 128×3×32×32)."""
    if bool(active.all()):
        return out
    return torch.where(_per_example(active), out, images)


# ------------------------------------------------------------------------------------------ flip and cutout

def _hflip(images: Tensor, p: Tensor, generator, inplace: bool = False) -> Tensor:
    # u ∈ [0, 1): p = 0 never flips, p = 1 always does.
    flip = (_rand(p.shape, generator, images.device) < p).nonzero().squeeze(1)
    # Gather/flip/scatter of the flipped rows only: 0.18 vs 0.33 ms for a broadcast where (128×3×32×32).
    out = images if inplace else images.clone()
    return out.index_copy_(0, flip, images.index_select(0, flip).flip(-1))


def hflip(images: Tensor, p: Magnitude, *, generator: Optional[torch.Generator] = None) -> Tensor:
    """Flip example i left-right with probability p_i."""
    images, generator = _check_images(images), _check_generator(generator)
    p = _magnitude("p", p, images)
    _check_ranges({"p": p})
    return _hflip(images, p, generator)


def _cutout(images: Tensor, holes: Tensor, length: Tensor, generator, fill: float, inplace: bool = False) -> Tensor:
    b, _, h, w = images.shape
    n = holes.floor()
    side = length.floor().to(torch.long)
    n = torch.where(side > 0, n, torch.zeros_like(n))
    k = int(n.max()) if b else 0  # the number of hole slots: one host sync, needed for the shapes below
    if k == 0:
        return images
    device = images.device
    cy, cx = _randint(h, (b, k), generator, device), _randint(w, (b, k), generator, device)
    # Square [c − side//2, c − side//2 + side) in each axis: side floor(length_i) exactly, clipped at borders
    # by the comparisons below (DeVries & Taylor's centre convention).
    y0, x0 = cy - (side // 2)[:, None], cx - (side // 2)[:, None]
    y1, x1 = y0 + side[:, None], x0 + side[:, None]
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    dtype = images.dtype
    in_rows = ((rows >= y0[..., None]) & (rows < y1[..., None])).to(dtype)  # (B, K, H) as 0/1
    in_cols = ((cols >= x0[..., None]) & (cols < x1[..., None])).to(dtype)  # (B, K, W)
    in_rows *= (torch.arange(k, device=device) < n[:, None]).to(dtype)[..., None]  # slots past holes_i: empty
    # keep = Π_k (1 − row_k ⊗ col_k): 1 where no hole covers the pixel. The loop runs over hole slots (K is
    # small), never over examples. Float planes, not bool: boolean ops, masked_fill and where are
    # unvectorized on this CPU build (masked_fill 0.45 ms vs a multiply 0.2 ms for 128×3×32×32).
    keep = 1 - in_rows[:, 0, :, None] * in_cols[:, 0, None, :]
    for j in range(1, k):
        keep *= 1 - in_rows[:, j, :, None] * in_cols[:, j, None, :]
    keep = keep.unsqueeze(1)
    # x·1 (+ 0) is x exactly: uncovered pixels keep their bits.
    out = images.mul_(keep) if inplace else images * keep
    return out if fill == 0 else out.add_(fill * (1 - keep))


def cutout(images: Tensor, holes: Magnitude, length: Magnitude, *, generator: Optional[torch.Generator] = None,
           fill: float = 0.0) -> Tensor:
    """Example i gets floor(holes_i) squares of side floor(length_i) filled with `fill`, at centres drawn
    uniformly over the image (clipped at the borders; squares may overlap)."""
    images, generator = _check_images(images), _check_generator(generator)
    mags = {"holes": _magnitude("holes", holes, images), "length": _magnitude("length", length, images)}
    _check_ranges(mags)
    return _cutout(images, mags["holes"], mags["length"], generator, float(fill))


# ------------------------------------------------------------------------------------------------- affine

def _check_interpolation(interpolation: str) -> str:
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"interpolation: expected one of {', '.join(_INTERPOLATIONS)}, received {interpolation!r}")
    return interpolation


def _warp(images: Tensor, angle: Tensor, tx: Tensor, ty: Tensor, scale: Tensor, shear: Tensor,
          interpolation: str) -> Tensor:
    """torchvision's affine (inverse matrix about the image centre, x-shear) for B matrices at once."""
    b, c, h, w = images.shape
    # The 2×3 matrices are tiny: float64 keeps them as exact as torchvision's Python-float arithmetic.
    rot, sx = torch.deg2rad(angle.double()), torch.deg2rad(shear.double())
    s, tx, ty = scale.double(), tx.double(), ty.double()
    # R(rot)·SHx(sx) with torchvision's conventions (sy = 0), then its inverse divided by the scale.
    a, cc = torch.cos(rot), torch.sin(rot)
    bb = -torch.cos(rot) * torch.tan(sx) - torch.sin(rot)
    d = -torch.sin(rot) * torch.tan(sx) + torch.cos(rot)
    m0, m1, m3, m4 = d / s, -bb / s, -cc / s, a / s
    m2, m5 = -(m0 * tx + m1 * ty), -(m3 * tx + m4 * ty)
    # Pixel-centred coordinates → affine_grid's normalized [-1, 1] (align_corners=False): x_n = x_c / (W/2).
    theta = torch.stack([
        torch.stack([m0, m1 * h / w, 2 * m2 / w], -1),
        torch.stack([m3 * w / h, m4, 2 * m5 / h], -1),
    ], 1).to(images.dtype)
    return F.grid_sample(images, _affine_grid(theta, h, w), mode=interpolation, padding_mode="zeros",
                         align_corners=False)


def _affine_grid(theta: Tensor, h: int, w: int) -> Tensor:
    """F.affine_grid(theta, (B, ·, h, w), align_corners=False), computed separably. affine_grid multiplies a
    (B, H·W, 3) base grid by θᵀ in a bmm with inner size 3 (1.15 ms for B = 128, 32×32, one thread); the
    same grid is an outer sum of a (B, 1, W) row term and a (B, H, 1) column term (0.17 ms). Equal to
    affine_grid to float round-off (tested)."""
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=theta.device, dtype=theta.dtype)  # pixel centres
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=theta.device, dtype=theta.dtype)
    grid = torch.empty(theta.shape[0], h, w, 2, device=theta.device, dtype=theta.dtype)
    for i in range(2):  # i = 0: source x, i = 1: source y
        across = theta[:, i, 0, None, None] * xs.view(1, 1, w)
        down = theta[:, i, 1, None, None] * ys.view(1, h, 1) + theta[:, i, 2, None, None]
        torch.add(across, down, out=grid[..., i])
    return grid


def warp_affine(images: Tensor, angle: Magnitude, translate: Optional[Tensor], scale: Magnitude, shear: Magnitude,
                *, interpolation: str = "bilinear") -> Tensor:
    """Deterministic per-example affine, equal to torchvision.transforms.v2.functional.affine(image_i,
    angle_i, translate_i, scale_i, [shear_i, 0]) for every i: angle and shear in degrees, translate (B, 2)
    pixels (x, y), scale (B,) (> 0). Pixels from outside the image are 0."""
    images = _check_images(images)
    _check_interpolation(interpolation)
    angle = _magnitude("angle", angle, images)
    shear = _magnitude("shear", shear, images)
    scale = _magnitude("scale", 1.0 if scale is None else scale, images)
    if translate is None:
        translate = torch.zeros(images.shape[0], 2, device=images.device)
    if not isinstance(translate, Tensor) or translate.shape != (images.shape[0], 2):
        raise ValueError(f"translate: expected a tensor of shape ({images.shape[0]}, 2) in pixels")
    if bool((scale <= 0).any()):
        raise ValueError("scale: values must be > 0")
    translate = translate.to(images.device, torch.float32)
    return _warp(images, angle, translate[:, 0], translate[:, 1], scale, shear, interpolation)


def _affine(images: Tensor, degrees: Tensor, translate: Tensor, scale: Tensor, shear: Tensor, generator,
            interpolation: str) -> Tensor:
    b, _, h, w = images.shape
    active = (degrees > 0) | (translate > 0) | (scale > 0) | (shear > 0)
    u = _rand((5, b), generator, images.device) * 2 - 1  # U[-1, 1): angle, tx, ty, scale, shear
    angle = degrees * u[0]
    # RandomAffine rounds the translation to whole pixels.
    tx, ty = torch.round(translate * w * u[1]), torch.round(translate * h * u[2])
    out = _warp(images, angle, tx, ty, 1 + scale * u[3], shear * u[4], interpolation)
    return _keep_inactive(out, images, active)


def affine(images: Tensor, degrees: Magnitude = None, translate: Magnitude = None, scale: Magnitude = None,
           shear: Magnitude = None, *, generator: Optional[torch.Generator] = None,
           interpolation: str = "bilinear") -> Tensor:
    """RandomAffine per example: rotation U(−degrees_i, degrees_i), translation U(−t_i, t_i)·(W, H) rounded to
    pixels, scale U(1 − s_i, 1 + s_i), x-shear U(−shear_i, shear_i) degrees. Uncovered pixels become 0."""
    images, generator = _check_images(images), _check_generator(generator)
    _check_interpolation(interpolation)
    mags = {n: _magnitude(n, v, images) for n, v in
            (("degrees", degrees), ("translate", translate), ("scale", scale), ("shear", shear))}
    _check_ranges(mags)
    return _affine(images, mags["degrees"], mags["translate"], mags["scale"], mags["shear"], generator,
                   interpolation)


# ------------------------------------------------------------------------------------------------- colour

_LUMA = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


def _tone(x: Tensor, alpha: Tensor, w_contrast: Optional[Tensor], w_saturation: Optional[Tensor],
          inplace: bool = False) -> Tensor:
    """One stage of brightness / contrast / saturation for the whole batch in one pass:
    example i gets clamp(α_i·x + w_c,i·mean(gray(x_i)) + w_s,i·gray(x_i), 0, 1) with (α, w_c, w_s) =
    (f, 0, 0) for brightness, (f, 1 − f, 0) for contrast, (f, 0, 1 − f) for saturation — torchvision's
    adjust_brightness and _blend(image, mean or gray, f) — and (1, 0, 0) for an example that does none of
    them at this stage: x·1 + 0 = x exactly (the clamp is a no-op on pixels in [0, 1]). One pass serves all
    three: 0.22 ms per stage (128×3×32×32, one thread) against ≈0.39 ms for the three ops run separately
    over the batch, and far less than gathering each op's quarter of the batch."""
    offset = None  # computed from x before x is scaled (in place when the caller owns x)
    if w_saturation is not None:
        offset = TF.rgb_to_grayscale(x).mul_(_per_example(w_saturation))
    if w_contrast is not None:
        # mean(gray(x)) is the luma-weighted sum of the channel means: a contiguous (H, W) reduction, no
        # gray plane (same value as torchvision's to float round-off).
        means = x.mean(dim=(-2, -1))
        gray_mean = means @ torch.tensor(_LUMA, device=x.device, dtype=x.dtype) if x.shape[1] == 3 else means[:, 0]
        term = _per_example(gray_mean.mul_(w_contrast))
        offset = term if offset is None else offset.add_(term)
    out = x.mul_(_per_example(alpha)) if inplace else x * _per_example(alpha)
    if offset is not None:
        out.add_(offset)
    return out.clamp_(0, 1)


_SEXTANT_OFFSETS: Dict[Tuple[torch.device, torch.dtype], Tensor] = {}


def _hue(x: Tensor, f: Tensor) -> Tensor:
    """torchvision's adjust_hue (RGB → HSV, h += f mod 1, HSV → RGB) without materializing S and V: a hue
    rotation keeps max and min of (r, g, b), so with C = max − min and h6 = 6h,
    channel n (offsets 5, 3, 1 for r, g, b) = max − C·clamp(min(k, 4 − k), 0, 1), k = (n + h6) mod 6.
    Same values as torchvision's _rgb_to_hsv/_hsv_to_rgb to float round-off (tested).

    Written with in-place ops on few buffers: on this CPU a fresh 1.5 MB result costs page faults, and the
    same arithmetic out of place ran 2.4x slower (8.1 vs 3.4 ms, 128×3×32×32, loaded machine). Elementwise
    max/min of the planes, not aminmax(dim=1), whose reduction along the strided channel axis took 1.7 ms;
    0/1 masks from sign(), not torch.where or boolean planes, which are unvectorized here (where: 0.44 ms
    per plane against 0.02 ms for a subtraction); k mod 6 as k − 6·floor(k/6), not remainder (0.9 ms)."""
    r, g, b = x.unbind(dim=1)
    m = torch.maximum(r, g)
    torch.maximum(m, b, out=m)
    chroma = torch.minimum(r, g)
    torch.minimum(chroma, b, out=chroma)
    torch.sub(m, chroma, out=chroma)
    # Hue is undefined where C = 0 (gray); the numerators below are then 0 too, so any finite 1/C works.
    inv = chroma.clamp_min(torch.finfo(x.dtype).tiny).reciprocal_()
    # PIL/torchvision's tie order: the red formula when max = r, else green when max = g, else blue.
    # max ≥ r, so 1 − sign(max − r) is 1 exactly where max = r.
    is_r = torch.sub(m, r).sign_().neg_().add_(1)
    is_g = torch.sub(m, g).sign_().neg_().add_(1).mul_(torch.sub(1, is_r))
    h6 = torch.sub(r, g).mul_(inv).add_(4)  # the blue formula, then corrected where max is r or g
    from_r = torch.sub(g, b).mul_(inv).sub_(h6).mul_(is_r)
    from_g = is_r.copy_(b).sub_(r).mul_(inv).add_(2).sub_(h6).mul_(is_g)  # is_r's buffer is reused
    h6.add_(from_r).add_(from_g).add_(6 * f.view(-1, 1, 1))
    key = (x.device, x.dtype)
    if key not in _SEXTANT_OFFSETS:
        _SEXTANT_OFFSETS[key] = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = h6.unsqueeze(1) + _SEXTANT_OFFSETS[key]
    # Round-off that lands k mod 6 on 6 instead of 0 is harmless: the triangle wave below is 0 at both.
    scratch = torch.mul(k, 1 / 6).floor_().mul_(6)
    k.sub_(scratch)
    torch.neg(k, out=scratch).add_(4)
    torch.minimum(k, scratch, out=k).clamp_(0, 1)
    return k.mul_(chroma.unsqueeze(1)).neg_().add_(m.unsqueeze(1))


def _adjust(images: Tensor, factors: Sequence[Tensor], identity: Sequence[float], order: Tensor,
            inplace: bool = False) -> Tensor:
    """Apply the four colour ops (torchvision's fn_idx: 0 brightness, 1 contrast, 2 saturation, 3 hue),
    example i in the order order[i] (a permutation of 0..3), in four stages. At each stage every example
    does at most one op, so the stage is one fused brightness/contrast/saturation pass over the batch
    (`_tone`, identity for examples not doing one of those) plus hue on the examples whose op it is.
    Hue is gathered because it is the costly op and not exact at shift 0 (an HSV round trip)."""
    x, owned = images, inplace  # owned: x may be written (a private buffer or one the caller handed over)
    f = torch.stack(list(factors), dim=1)  # (B, 4)
    ident = torch.tensor(identity, device=f.device, dtype=f.dtype)
    # selected[i, s, k]: example i applies op k at stage s with a non-identity factor. Saturation and hue
    # leave 1-channel images unchanged (torchvision/PIL), so they are never selected there.
    selected = (order[:, :, None] == torch.arange(4, device=order.device)) & (f != ident)[:, None, :]
    if images.shape[1] == 1:
        selected[:, :, 2:] = False
    occurs = selected.any(dim=0).tolist()  # one host read of which (stage, op) pairs occur
    one, zero = torch.ones_like(f[:, :1]), torch.zeros_like(f[:, :1])
    fb, fc, fs = (f[:, k:k + 1] for k in range(3))
    alpha = torch.where(selected[..., 0], fb, torch.where(selected[..., 1], fc, torch.where(selected[..., 2], fs, one)))
    w_contrast = torch.where(selected[..., 1], 1 - fc, zero)  # (B, stage)
    w_saturation = torch.where(selected[..., 2], 1 - fs, zero)
    for stage in range(4):
        if any(occurs[stage][:3]):
            x = _tone(x, alpha[:, stage], w_contrast[:, stage] if occurs[stage][1] else None,
                      w_saturation[:, stage] if occurs[stage][2] else None, inplace=owned)
            owned = True
        if occurs[stage][3]:
            idx = selected[:, stage, 3].nonzero().squeeze(1)
            if not owned:  # the caller's tensor is never written
                x, owned = x.clone(), True
            x.index_copy_(0, idx, _hue(x.index_select(0, idx), f[:, 3].index_select(0, idx)))
    return x


def adjust_color(images: Tensor, brightness: Magnitude = None, contrast: Magnitude = None,
                 saturation: Magnitude = None, hue: Magnitude = None, order: Optional[Tensor] = None) -> Tensor:
    """Deterministic per-example colour adjustment with explicit factors (B,): brightness, contrast and
    saturation factors (1 = unchanged), hue shift in [−0.5, 0.5] (0 = unchanged), applied in `order` (B, 4)
    (default 0, 1, 2, 3 for every example). Equals torchvision's adjust_* called one example at a time."""
    images = _check_images(images)
    b = images.shape[0]
    f = [_magnitude(n, 1.0 if v is None else v, images) for n, v in
         (("brightness", brightness), ("contrast", contrast), ("saturation", saturation))]
    f.append(_magnitude("hue", hue, images))
    if any(bool((x < 0).any()) for x in f[:3]) or bool((f[3].abs() > 0.5).any()):
        raise ValueError("brightness/contrast/saturation: factors must be >= 0; hue: shifts in [-0.5, 0.5]")
    if order is None:
        order = torch.arange(4, device=images.device).expand(b, 4)
    if not isinstance(order, Tensor) or order.shape != (b, 4):
        raise ValueError(f"order: expected a ({b}, 4) tensor of permutations of 0..3")
    if not bool((order.sort(1).values.cpu() == torch.arange(4)).all()):
        raise ValueError("order: every row must be a permutation of 0..3")
    return _adjust(images, f, (1.0, 1.0, 1.0, 0.0), order.to(images.device))


def _color_jitter(images: Tensor, brightness: Tensor, contrast: Tensor, saturation: Tensor, hue: Tensor,
                  generator, inplace: bool = False) -> Tensor:
    b = images.shape[0]
    u = _rand((4, b), generator, images.device)
    # ColorJitter's ranges: [max(0, 1 − m), 1 + m] for the three factors, [−h, h] for hue. With m = 0 both
    # ends are 1, and lo + (hi − lo)·u is exactly 1: the op is skipped for that example.
    factors = []
    for m, r in zip((brightness, contrast, saturation), u[:3]):
        lo = (1 - m).clamp(min=0)
        factors.append(lo + ((1 + m) - lo) * r)
    factors.append(hue * (2 * u[3] - 1))
    # A uniformly random permutation per example (argsort of i.i.d. keys), like torch.randperm(4) per call.
    order = _rand((b, 4), generator, images.device).argsort(dim=1)
    active = (brightness > 0) | (contrast > 0) | (saturation > 0) | (hue > 0)
    if bool(active.all()):
        return _adjust(images, factors, (1.0, 1.0, 1.0, 0.0), order, inplace=inplace)
    # Pixels outside [0, 1] are clamped by a factor-1 op: restore examples with no colour change at all
    # (from the untouched input, so this path never works in place).
    return _keep_inactive(_adjust(images, factors, (1.0, 1.0, 1.0, 0.0), order), images, active)


def color_jitter(images: Tensor, brightness: Magnitude = None, contrast: Magnitude = None,
                 saturation: Magnitude = None, hue: Magnitude = None, *,
                 generator: Optional[torch.Generator] = None) -> Tensor:
    """ColorJitter per example on images in [0, 1]: brightness, contrast, saturation factors from
    U(max(0, 1 − m_i), 1 + m_i), hue shift from U(−h_i, h_i) (h_i ≤ 0.5), in a random order per example."""
    images, generator = _check_images(images), _check_generator(generator)
    mags = {n: _magnitude(n, v, images) for n, v in
            (("brightness", brightness), ("contrast", contrast), ("saturation", saturation), ("hue", hue))}
    _check_ranges(mags)
    return _color_jitter(images, mags["brightness"], mags["contrast"], mags["saturation"], mags["hue"], generator)


# ----------------------------------------------------------------------------------------------- composer

class Augmenter:
    """The training step's augmentation: `augmenter(images, values) -> images`.

    spec maps augmentation parameters (`AUGMENT_PARAMS`) to a hyperparameter name (read per example from
    `values`) or to a number (fixed for every example), e.g.
        Augmenter({"cutout_holes": "holes", "cutout_length": "length", "hflip": 0.5})
    `cutout_holes` defaults to 1 when only `cutout_length` is given; other absent parameters are off.

    Order: flip, affine, colour jitter in pixel space ([0, 1]), then cutout. With `mean`/`std` (the data
    bundle's normalization) images arrive normalized: they are mapped to pixel space for the first three and
    back, and cutout fills with 0 in normalized space (the mean colour), as in DeVries & Taylor. Examples
    whose magnitudes are all zero come back bit-identical (the normalization round trip is not exact, so it is
    masked out). Discrete parameters (cutout holes, length) take floor() of the continuous values.
    """

    def __init__(self, spec: Mapping[str, Union[str, float, int]], *, mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None, interpolation: str = "bilinear",
                 cutout_fill: float = 0.0) -> None:
        if not isinstance(spec, Mapping):
            raise TypeError(f"spec: expected a mapping of augmentation parameter → hyperparameter name or number, "
                            f"received {type(spec).__name__}")
        unknown = [k for k in spec if k not in AUGMENT_PARAMS]
        if unknown:
            raise ValueError(f"spec: unknown augmentation parameter {unknown[0]!r}; "
                             f"known: {', '.join(AUGMENT_PARAMS)}")
        for key, source in spec.items():
            if isinstance(source, bool) or not isinstance(source, (str, int, float)):
                raise TypeError(f"spec[{key!r}]: expected a hyperparameter name or a number, "
                                f"received {type(source).__name__}")
            if not isinstance(source, str):
                lo, hi, closed = _RANGES[key]
                if not (lo <= source and (source <= hi if closed else source < hi)):
                    raise ValueError(f"spec[{key!r}]: fixed value must lie in {_describe_range(key)}, "
                                     f"received {source}")
        self.spec: Dict[str, Union[str, float]] = dict(spec)
        if "cutout_length" in self.spec and "cutout_holes" not in self.spec:
            self.spec["cutout_holes"] = 1.0
        if (mean is None) != (std is None):
            raise ValueError("mean/std: pass both (the data's normalization) or neither")
        if std is not None and any(s <= 0 for s in std):
            raise ValueError(f"std: values must be > 0, received {tuple(std)}")
        self.mean = tuple(float(m) for m in mean) if mean is not None else None
        self.std = tuple(float(s) for s in std) if std is not None else None
        self.interpolation = _check_interpolation(interpolation)
        self.cutout_fill = float(cutout_fill)

    @property
    def hyperparameters(self) -> Tuple[str, ...]:
        """The hyperparameter names the augmenter reads from `values`."""
        return tuple(dict.fromkeys(v for v in self.spec.values() if isinstance(v, str)))

    def _magnitudes(self, images: Tensor, values: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        mags: Dict[str, Tensor] = {}
        for key in AUGMENT_PARAMS:
            if key not in self.spec:
                continue
            source = self.spec[key]
            if isinstance(source, str):
                if source not in values:
                    raise ValueError(f"values: no hyperparameter {source!r} (needed for {key}); "
                                     f"received {', '.join(values) or 'none'}")
                mags[key] = _magnitude(f"{key} (values[{source!r}])", values[source], images)
            else:
                mags[key] = _magnitude(key, source, images)
        return mags

    def __call__(self, images: Tensor, values: Mapping[str, Tensor],
                 generator: Optional[torch.Generator] = None) -> Tensor:
        images, generator = _check_images(images), _check_generator(generator)
        if not isinstance(values, Mapping):
            raise TypeError(f"values: expected a mapping of hyperparameter name → (B,) tensor, "
                            f"received {type(values).__name__}")
        if self.mean is not None and len(self.mean) != images.shape[1]:
            raise ValueError(f"images: {images.shape[1]} channels but mean/std have {len(self.mean)}")
        mags = self._magnitudes(images, values)
        _check_ranges(mags, {k: f"{k} (values[{v!r}])" for k, v in self.spec.items() if isinstance(v, str)})
        if not mags or images.shape[0] == 0:
            return images
        zero = torch.zeros(images.shape[0], device=images.device)
        get = lambda k: mags.get(k, zero)  # noqa: E731 (absent parameter = magnitude 0)
        holes = torch.where(get("cutout_length").floor() >= 1, get("cutout_holes").floor(), zero)
        touched = holes >= 1
        for k in AUGMENT_PARAMS[:9]:
            if k in mags:
                touched = touched | (mags[k] > 0)
        # Half-precision images are augmented in float32 (grid_sample and HSV round-off) and cast back.
        x = images.float() if images.dtype in (torch.float16, torch.bfloat16) else images
        # Once x is a buffer of our own, every later step writes into it: each fresh 1.5 MB result costs page
        # faults on this CPU (with glibc's defaults the out-of-place pipeline took 10.2 ms per 128×3×32×32
        # batch against 6.0 ms with freed memory kept; benchmarks/RESULTS_augment.md). The input is never
        # written.
        owned = lambda: x is not images  # noqa: E731 (a step that changed nothing may hand back the input)
        pixel_ops = any(k in mags for k in AUGMENT_PARAMS[1:9])
        if self.mean is not None and pixel_ops:
            mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
            std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
            # Two chained ops: addcmul with a (1, C, 1, 1) operand is 3x slower here (0.18 vs 0.06 ms).
            x = (x.mul_(std) if owned() else x * std).add_(mean)
        if "hflip" in mags:
            x = _hflip(x, mags["hflip"], generator, inplace=owned())
        if any(k in mags for k in AUGMENT_PARAMS[1:5]):
            x = _affine(x, get("degrees"), get("translate"), get("scale"), get("shear"), generator,
                        self.interpolation)
        if any(k in mags for k in AUGMENT_PARAMS[5:9]):
            x = _color_jitter(x, get("brightness"), get("contrast"), get("saturation"), get("hue"), generator,
                              inplace=owned())
        if self.mean is not None and pixel_ops:
            x = (x.mul_(1 / std) if owned() else x * (1 / std)).add_(-mean / std)  # (x − mean)/std
        if "cutout_holes" in mags:
            x = _cutout(x, get("cutout_holes"), get("cutout_length"), generator, self.cutout_fill, inplace=owned())
        return _keep_inactive(x.to(images.dtype), images, touched)

    def __repr__(self) -> str:
        items = ", ".join(f"{k}={v!r}" for k, v in self.spec.items())
        norm = f", mean={self.mean}, std={self.std}" if self.mean is not None else ""
        return f"Augmenter({items}{norm})"
