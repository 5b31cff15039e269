"""Batched per-example augmentation (SPEC §6): every example i has its own magnitude, all on the images'
device, with no Python loop over examples.

Each function takes images (B, C, H, W) (floating point) and magnitude tensors of shape (B,) (or a scalar for
the whole batch) and never modifies its input. A zero magnitude is exactly the identity for that example
(such examples are restored from the input, so resampling round-off cannot leak in). Randomness comes from
`generator` (drawn on the generator's device), so a seeded generator reproduces a batch bit for bit.
Magnitudes are detached, and no gradient flows to the images: the rates a regularizer consumes carry no
gradient (SPEC §2), and augmentation is data preparation.

The per-example parameters (B or B×K numbers: factors, matrices, hole masks, the colour plan) are computed
on the host in NumPy from one read of the magnitudes and of each random draw (no copy for CPU tensors), then
moved to the images' device: a NumPy op on 128 numbers costs ≈1 µs against 3–8 µs for a torch op, and an
Augmenter call's checks, draws, plan and matrices took 0.78 ms as torch ops against 0.49 ms now (medians,
interleaved, 128 examples).

Speed notes quote one CPU thread on 128×3×32×32 float32 (torch 2.14.1): on this build boolean ops,
`torch.where`, `masked_fill` and index gathers are far slower than float arithmetic, which shaped the code.

Semantics follow torchvision's RandomHorizontalFlip, RandomAffine, ColorJitter (per example: factors and the
random order of the four colour operations) and DeVries & Taylor's Cutout.

`Augmenter(spec)` composes them for the training step: `augmenter(images, values)` with the per-example
constrained hyperparameter values (SPEC §2) that `HyperSpace.example_values` returns.
"""
from __future__ import annotations

import math
import threading
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

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
    if isinstance(value, Tensor) and value.shape == (batch,) and value.dtype == torch.float32 \
            and value.device == images.device:
        return value.detach()  # the common case, without the checks and conversions below (≈5 µs each)
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


_BOUNDS: Dict[Tuple[str, ...], Tuple[np.ndarray, np.ndarray]] = {}


def _bounds(names: Tuple[str, ...]) -> Tuple[np.ndarray, np.ndarray]:
    """(lo, hi) columns (P, 1) such that a valid float32 magnitude lies in the closed range [lo, hi]: an open
    upper end becomes the next float32 below it, an infinite one the largest float32 (so that NaN and ±inf
    fail a comparison). Cached per parameter list."""
    if names not in _BOUNDS:
        lo, hi, closed = (np.array(v) for v in zip(*(_RANGES[n] for n in names)))
        hi = np.where(closed, hi, np.nextafter(hi.astype(np.float32), np.float32(-np.inf)))
        hi = np.minimum(hi, np.finfo(np.float32).max).astype(np.float32)
        _BOUNDS[names] = (lo.astype(np.float32)[:, None], hi[:, None])
    return _BOUNDS[names]


def _check_ranges(magnitudes: Mapping[str, Tensor], labels: Optional[Mapping[str, str]] = None
                  ) -> Dict[str, np.ndarray]:
    """The magnitudes on the host, checked against their ranges: one read of all of them (one host sync),
    the first offender named by its label (e.g. "hue (values['h'])") when one is given."""
    if not magnitudes:
        return {}
    names = tuple(magnitudes)
    m = _host(torch.stack([magnitudes[n] for n in names]))  # (P, B)
    lo, hi = _bounds(names)
    bad = ~((m >= lo) & (m <= hi)).all(axis=1)
    for n, row, flag in zip(names, m, bad):
        if flag:
            label = (labels or {}).get(n, n)
            raise ValueError(f"{label}: values must lie in {_describe_range(n)}, received "
                             f"min {float(row.min()):g}, max {float(row.max()):g}")
    return dict(zip(names, m))


def _check_generator(generator) -> Optional[torch.Generator]:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, received {type(generator).__name__}")
    return generator


def _host(t: Tensor) -> np.ndarray:
    """t as a NumPy array: no copy for a CPU tensor, one device-to-host read otherwise."""
    return t.detach().cpu().numpy()


def _uniform(shape: Sequence[int], generator: Optional[torch.Generator], device: torch.device) -> np.ndarray:
    """U[0, 1) float32 from `generator` (drawn on its device) or the global RNG of `device`, on the host."""
    where = generator.device if generator is not None else device
    return _host(torch.rand(tuple(shape), generator=generator, device=where))


def _integers(high: int, shape: Sequence[int], generator: Optional[torch.Generator],
              device: torch.device) -> np.ndarray:
    where = generator.device if generator is not None else device
    return _host(torch.randint(0, high, tuple(shape), generator=generator, device=where))


def _per_example(values: Tensor) -> Tensor:
    return values.view(-1, 1, 1, 1)


def _keep_inactive(out: Tensor, images: Tensor, active: np.ndarray) -> Tensor:
    """out where active (B,), else images, bit for bit. The common all-active case skips the select: a
    broadcast where costs 7x a multiply here (0.29 vs 0.04 ms, 128×3×32×32)."""
    if active.all():
        return out
    return torch.where(_per_example(torch.from_numpy(active).to(out.device)), out, images)


# ------------------------------------------------------------------------------------------ scratch buffers

class _Fresh:
    """Scratch tensors by role: new ones on every request (the public functions, which keep no state)."""

    def get(self, name: str, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> Tensor:
        return torch.empty(tuple(shape), dtype=dtype, device=device)


class _Kept(_Fresh):
    """Scratch tensors kept between calls, one per role, grown when a call needs more. A fresh 1.5 MB CPU
    buffer costs page faults whenever glibc has handed the memory back to the OS (it trims freed memory at the
    top of the heap): up to ≈1000 faults per Augmenter call were counted right after the per-image loops of
    benchmarks/bench_augment.py, none with kept buffers. Only the result is then a new tensor. Callers must
    not use two tensors of the same role at once."""

    def __init__(self) -> None:
        self._held: Dict[str, Tensor] = {}  # role → flat buffer
        self._last: Dict[str, Tuple[Tuple[object, ...], Tensor]] = {}  # role → (request, view) of the last get

    def get(self, name: str, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> Tensor:
        request = (tuple(shape), dtype, device)
        last = self._last.get(name)
        if last is not None and last[0] == request:  # the common case: the same request as last time
            return last[1]
        need = math.prod(request[0])
        buf = self._held.get(name)
        if buf is None or buf.numel() < need or buf.dtype != dtype or buf.device != device:
            buf = self._held[name] = torch.empty(need, dtype=dtype, device=device)
        view = buf[:need].view(request[0])
        self._last[name] = (request, view)
        return view


_FRESH = _Fresh()


# ------------------------------------------------------------------------------------------ flip and cutout

def _draw_flip(p: np.ndarray, generator, device: torch.device) -> np.ndarray:
    """(B,) bool: flip example i. u ∈ [0, 1): p = 0 never flips, p = 1 always does."""
    return _uniform(p.shape, generator, device) < p


def _flip_rows(images: Tensor, flip: np.ndarray, inplace: bool = False) -> Tensor:
    """Flip left-right the examples where flip (B,) is True, bit-exactly. Gather/flip/scatter of the flipped
    rows only: 0.18 vs 0.33 ms for a broadcast where (128×3×32×32)."""
    idx = torch.from_numpy(np.flatnonzero(flip)).to(images.device)
    out = images if inplace else images.clone()
    return out.index_copy_(0, idx, images.index_select(0, idx).flip(-1))


def hflip(images: Tensor, p: Magnitude, *, generator: Optional[torch.Generator] = None) -> Tensor:
    """Flip example i left-right with probability p_i."""
    images, generator = _check_images(images), _check_generator(generator)
    p = _check_ranges({"p": _magnitude("p", p, images)})["p"]
    return _flip_rows(images.detach(), _draw_flip(p, generator, images.device))


def _draw_cutout(holes: np.ndarray, length: np.ndarray, generator, h: int, w: int,
                 device: torch.device) -> Optional[Tuple[Tensor, Tensor]]:
    """The holes as (rows (B, K, H), cols (B, K, W)): 0/1 float32 indicators of the rows and columns each of
    K hole slots covers (slots past floor(holes_i) cover nothing); None when no example has a hole."""
    b = holes.shape[0]
    side = np.floor(length).astype(np.int64)
    n = np.where(side > 0, np.floor(holes), 0)
    k = int(n.max()) if b else 0  # the number of hole slots
    if k == 0:
        return None
    centres = np.stack([_integers(h, (b, k), generator, device), _integers(w, (b, k), generator, device)])
    # Square [c − side//2, c − side//2 + side) in each axis: side floor(length_i) exactly, clipped at borders
    # (DeVries & Taylor's centre convention). Rows and columns in one (2, B, K, ·) array.
    start = centres - (side // 2)[:, None]
    pos = np.arange(max(h, w))
    inside = ((pos >= start[..., None]) & (pos < (start + side[:, None])[..., None])).astype(np.float32)
    rows = inside[0, ..., :h] * (np.arange(k) < n[:, None])[..., None]
    return torch.from_numpy(rows).to(device), torch.from_numpy(inside[1, ..., :w]).to(device)


def _cut(images: Tensor, holes: Tuple[Tensor, Tensor], fill: float, inplace: bool = False) -> Tensor:
    in_rows, in_cols = holes
    # covered[i, y, x] = Σ_k row_k(y)·col_k(x), the number of holes over each pixel (small integers, exact in
    # float): one batched matmul over the K slots, 0.03 ms for 128×32×32 against 0.25 ms for the product of
    # K broadcast planes it replaces. keep = (covered == 0) as a float plane, via eq with a float out= (one
    # vectorized pass; bool planes and masked_fill are unvectorized on this CPU build).
    covered = torch.bmm(in_rows.transpose(1, 2), in_cols)
    keep = torch.eq(covered, 0, out=torch.empty_like(covered)).to(images.dtype).unsqueeze(1)
    # x·1 (+ 0) is x exactly: uncovered pixels keep their bits.
    out = images.mul_(keep) if inplace else images * keep
    return out if fill == 0 else out.add_(fill * (1 - keep))


def cutout(images: Tensor, holes: Magnitude, length: Magnitude, *, generator: Optional[torch.Generator] = None,
           fill: float = 0.0) -> Tensor:
    """Example i gets floor(holes_i) squares of side floor(length_i) filled with `fill`, at centres drawn
    uniformly over the image (clipped at the borders; squares may overlap)."""
    images, generator = _check_images(images), _check_generator(generator)
    mags = _check_ranges({"holes": _magnitude("holes", holes, images),
                          "length": _magnitude("length", length, images)})
    _, _, h, w = images.shape
    drawn = _draw_cutout(mags["holes"], mags["length"], generator, h, w, images.device)
    return images.detach() if drawn is None else _cut(images.detach(), drawn, float(fill))


# ------------------------------------------------------------------------------------------------- affine

_MODES = {"bilinear": 0, "nearest": 1}  # aten::grid_sampler_2d's interpolation codes


def _check_interpolation(interpolation: str) -> str:
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"interpolation: expected one of {', '.join(_INTERPOLATIONS)}, received {interpolation!r}")
    return interpolation


def _theta(params: np.ndarray, h: int, w: int, flip: Optional[np.ndarray] = None) -> np.ndarray:
    """affine_grid's (B, 2, 3) float64 matrices for torchvision's affine (inverse matrix about the image
    centre, x-shear) from params (5, B) = angle (degrees), translate x, y (pixels), scale, shear (degrees).
    With flip (B,) bool, example i is flipped left-right first: one resampling instead of a flip pass."""
    # float64 keeps the matrices as exact as torchvision's Python-float arithmetic.
    angle, tx, ty, s, shear = params.astype(np.float64)
    rot, sx = np.deg2rad(angle), np.deg2rad(shear)
    cos, sin, tan = np.cos(rot), np.sin(rot), np.tan(sx)
    # R(rot)·SHx(sx) with torchvision's conventions (sy = 0), inverted and divided by the scale: rows
    # (m0, m1), (m3, m4); then the translation column m2 = −(m0·tx + m1·ty), m5 = −(m3·tx + m4·ty).
    m0, m1, m3, m4 = (cos - sin * tan) / s, (cos * tan + sin) / s, -sin / s, cos / s
    m2, m5 = -(m0 * tx + m1 * ty), -(m3 * tx + m4 * ty)
    # Pixel-centred coordinates → affine_grid's normalized [-1, 1] (align_corners=False): x_n = x_c / (W/2).
    theta = np.stack([np.stack([m0, m1 * h / w, 2 * m2 / w], -1), np.stack([m3 * w / h, m4, 2 * m5 / h], -1)], 1)
    if flip is not None:
        # flip-then-warp samples the image at F·θ·p with F = diag(−1, 1): pixel centres are symmetric about
        # 0 in normalized coordinates, so negating θ's x row is the flip, exactly.
        theta[flip, 0] *= -1
    return theta


_CENTRES: Dict[Tuple[int, torch.device, torch.dtype], Tensor] = {}


def _pixel_centres(n: int, like: Tensor) -> Tensor:
    """The n pixel centres in normalized coordinates (align_corners=False), cached."""
    key = (n, like.device, like.dtype)
    if key not in _CENTRES:
        _CENTRES[key] = torch.linspace(-1 + 1 / n, 1 - 1 / n, n, device=like.device, dtype=like.dtype)
    return _CENTRES[key]


def _affine_grid(theta: Tensor, h: int, w: int, out: Optional[Tensor] = None) -> Tensor:
    """F.affine_grid(theta, (B, ·, h, w), align_corners=False), computed separably. affine_grid multiplies a
    (B, H·W, 3) base grid by θᵀ in a bmm with inner size 3 (1.15 ms for B = 128, 32×32, one thread). Here
    grid[b, y, (x, i)] = (θ_i0·x + θ_i2) + y·θ_i1: a (B, 1, W·2) row term plus a column of y times a
    (B, 1, W·2) slope, one addcmul whose innermost loop runs over W·2 contiguous values (0.09 ms; writing the
    (x, y) pairs as a last dimension of size 2 took 0.20–0.26 ms). Equal to affine_grid to float round-off
    (tested)."""
    b = theta.shape[0]
    xs, ys = _pixel_centres(w, theta), _pixel_centres(h, theta)
    th = theta.transpose(1, 2)  # (B, 3, 2): the coefficients of x, y and 1 for (source x, source y)
    lead = torch.addcmul(th[:, None, 2], xs.view(1, w, 1), th[:, None, 0]).reshape(b, 1, 2 * w)
    slope = th[:, 1:2].expand(b, w, 2).reshape(b, 1, 2 * w)
    if out is None:
        out = torch.empty(b, h, w, 2, device=theta.device, dtype=theta.dtype)
    torch.addcmul(lead, ys.view(1, h, 1), slope, out=out.view(b, h, 2 * w))
    return out


def _warp(images: Tensor, theta: np.ndarray, interpolation: str, scratch: _Fresh = _FRESH) -> Tensor:
    """grid_sample of every example with its own matrix; pixels from outside the image are 0. (The out=
    overload of grid_sampler_2d computes into a temporary and copies, so the result is its own new tensor.)"""
    b, c, h, w = images.shape
    theta = torch.from_numpy(theta).to(device=images.device, dtype=images.dtype)
    grid = _affine_grid(theta, h, w, out=scratch.get("grid", (b, h, w, 2), images.dtype, images.device))
    return torch.grid_sampler_2d(images, grid, _MODES[interpolation], 0, False)


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
    translate = translate.detach().to(images.device, torch.float32)
    params = _host(torch.stack([angle, translate[:, 0], translate[:, 1], scale, shear]))
    if (params[3] <= 0).any():
        raise ValueError("scale: values must be > 0")
    _, _, h, w = images.shape
    return _warp(images.detach(), _theta(params, h, w), interpolation)


def _draw_affine(degrees: np.ndarray, translate: np.ndarray, scale: np.ndarray, shear: np.ndarray, generator,
                 h: int, w: int, device: torch.device) -> Tuple[np.ndarray, np.ndarray]:
    """(params (5, B) for _theta, active (B,) bool: some magnitude of example i is non-zero)."""
    active = (np.stack([degrees, translate, scale, shear]) > 0).any(axis=0)
    u = _uniform((5, degrees.shape[0]), generator, device) * 2 - 1  # U[-1, 1): angle, tx, ty, scale, shear
    params = np.stack([degrees, translate * w, translate * h, scale, shear]) * u
    params[1:3] = np.round(params[1:3])  # RandomAffine rounds the translation to whole pixels
    params[3] += 1
    return params, active


def affine(images: Tensor, degrees: Magnitude = None, translate: Magnitude = None, scale: Magnitude = None,
           shear: Magnitude = None, *, generator: Optional[torch.Generator] = None,
           interpolation: str = "bilinear") -> Tensor:
    """RandomAffine per example: rotation U(−degrees_i, degrees_i), translation U(−t_i, t_i)·(W, H) rounded to
    pixels, scale U(1 − s_i, 1 + s_i), x-shear U(−shear_i, shear_i) degrees. Uncovered pixels become 0."""
    images, generator = _check_images(images), _check_generator(generator)
    _check_interpolation(interpolation)
    mags = _check_ranges({n: _magnitude(n, v, images) for n, v in
                          (("degrees", degrees), ("translate", translate), ("scale", scale), ("shear", shear))})
    _, _, h, w = images.shape
    params, active = _draw_affine(mags["degrees"], mags["translate"], mags["scale"], mags["shear"], generator,
                                  h, w, images.device)
    images = images.detach()
    return _keep_inactive(_warp(images, _theta(params, h, w), interpolation), images, active)


# ------------------------------------------------------------------------------------------------- colour

_LUMA = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
_IDENTITY = (1.0, 1.0, 1.0, 0.0)  # brightness, contrast, saturation factors and hue shift that change nothing
_CONSTANTS: Dict[Tuple[Tuple[float, ...], torch.device, torch.dtype], Tensor] = {}


def _constant(values: Tuple[float, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    """A cached (1, len(values), 1, 1) tensor: building it is a host-to-tensor copy (≈5 µs) per call."""
    key = (values, device, dtype)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = torch.tensor(values, device=device, dtype=dtype).view(1, -1, 1, 1)
    return _CONSTANTS[key]


def _tone_(x: Tensor, alpha: Tensor, w_contrast: Optional[Tensor], w_saturation: Optional[Tensor],
           scratch: _Fresh) -> None:
    """One brightness / contrast / saturation op per example, in place on x (n, C, H, W) in one pass:
    example i becomes clamp(α_i·x + w_c,i·mean(gray(x_i)) + w_s,i·gray(x_i), 0, 1) with (α, w_c, w_s) =
    (f, 0, 0) for brightness, (f, 1 − f, 0) for contrast, (f, 0, 1 − f) for saturation — torchvision's
    adjust_brightness and _blend(image, mean or gray, f); f = 1 gives x·1 + 0 = x exactly (the clamp is a
    no-op on pixels in [0, 1]). One pass serves all three: 0.16 ms for 128×3×32×32 on one thread against
    ≈0.39 ms for the three ops run separately. w_contrast / w_saturation None: no example here does it."""
    n, c, h, w = x.shape
    offset = None  # computed from x before x is scaled in place: (n, 1, 1, 1) or (n, 1, H, W)
    if w_contrast is not None:
        # mean(gray(x)) is the luma-weighted sum of the channel means: a contiguous (H, W) reduction, no
        # gray plane (same value as torchvision's to float round-off).
        means = x.mean(dim=(-2, -1))
        gray_mean = means @ _constant(_LUMA, x.device, x.dtype).view(3) if c == 3 else means[:, 0]
        offset = _per_example(gray_mean.mul_(w_contrast))
    if w_saturation is not None:
        # w_s·gray(x) (+ the contrast term) as one (1×3)·(3×H·W) matmul per example, the luma row scaled by
        # w_s: 0.04 ms for 128×3×32×32 where torchvision's three-op gray, the scaling and the add took 0.07.
        rows = w_saturation.view(n, 1, 1) * _constant(_LUMA, x.device, x.dtype).view(1, 1, 3)
        out = scratch.get("tone.offset", (n, 1, h * w), x.dtype, x.device)
        flat = x.view(n, c, h * w)
        offset = (torch.bmm(rows, flat, out=out) if offset is None else
                  torch.baddbmm(offset.view(n, 1, 1), rows, flat, out=out)).view(n, 1, h, w)
    if offset is None:
        x.mul_(_per_example(alpha))
    else:  # offset + α·x in one pass: 0.052 vs 0.070 ms with the clamp, as mul_ then add_ (128×3×32×32)
        torch.addcmul(offset, x, _per_example(alpha), out=x)
    x.clamp_(0, 1)


def _hue_(x: Tensor, shift: Tensor, scratch: _Fresh) -> None:
    """torchvision's adjust_hue (RGB → HSV, h += shift mod 1, HSV → RGB), in place on x (n, 3, H, W), without
    materializing S and V. A hue rotation keeps max M and min m of (r, g, b); with C = M − m, the hexcone hue
    h6 = 6h ∈ [0, 6) and channel centres a = 3, 5, 1 for r, g, b, channel n of the result is
        M + C − C·clamp(||h6 − a_n| − 3|, 1, 2)
    (M on the plateau ±1 around the channel's own hue, m = M − C opposite, linear in between). Same values as
    torchvision's _rgb_to_hsv/_hsv_to_rgb to float round-off (tested, ties and gray pixels included).

    ≈0.6 ms for 128×3×32×32 on one thread against 0.89 ms for the sextant-offset version it replaces: 25
    passes over one (n, H, W) plane (kept buffers, in place or out=) and 6 over the three planes. Measured
    on this CPU build: 0/1 masks from eq() into a float tensor cost one pass (boolean planes, torch.where and
    masked_fill are unvectorized: 0.44 ms per plane for where); x mod 6 as x − 6·floor(x/6) on the hue plane
    only (fmod_/remainder_ are unvectorized: 0.5 ms over three planes)."""
    n, _, h, w = x.shape
    plane = lambda name: scratch.get(name, (n, h, w), x.dtype, x.device)  # noqa: E731
    r, g, b = x.unbind(dim=1)
    top = torch.maximum(r, g, out=plane("hue.top"))
    torch.maximum(top, b, out=top)
    chroma = torch.minimum(r, g, out=plane("hue.chroma"))
    torch.minimum(chroma, b, out=chroma)
    torch.sub(top, chroma, out=chroma)
    # PIL/torchvision's tie order: the red formula where max = r, else green where max = g, else blue. M is
    # one of r, g, b exactly, so eq() partitions the pixels.
    is_r = torch.eq(r, top, out=plane("hue.is_r"))
    is_g = torch.eq(g, top, out=plane("hue.is_g")).sub_(is_r).clamp_(min=0)
    # h6·C = n_b + is_r·(n_r − n_b) + is_g·(n_g − n_b), numerators n_r = g − b, n_g = b − r, n_b = r − g;
    # every difference is exactly 0 on gray pixels (C = 0), whose hue is then 0 (any finite value gives M).
    h6 = torch.sub(r, g, out=plane("hue.h6"))
    d_r = torch.sub(g, b, out=plane("hue.d_r")).sub_(h6)
    d_g = torch.sub(b, r, out=plane("hue.d_g")).sub_(h6)
    h6.addcmul_(is_r, d_r).addcmul_(is_g, d_g)
    h6.div_(torch.clamp_min(chroma, torch.finfo(x.dtype).tiny, out=d_r))
    # Sextant bases 0 (red), 2 (green), 4 (blue) = 4 − 4·is_r − 2·is_g; the 4 goes with the shift.
    h6.add_(is_r, alpha=-4).add_(is_g, alpha=-2).add_((4 + 6 * shift).view(-1, 1, 1))
    q = torch.mul(h6, 1 / 6, out=d_r).floor_()
    h6.add_(q, alpha=-6)  # h6 mod 6; landing on 6 by round-off is harmless (the formula is 6-periodic)
    t = torch.sub(h6.unsqueeze(1), _constant((3.0, 5.0, 1.0), x.device, x.dtype), out=x)  # r, g, b are dead
    t.abs_().sub_(3).abs_().clamp_(1, 2)
    peak = torch.add(top, chroma, out=d_g)  # M + C
    torch.addcmul(peak.unsqueeze(1), chroma.unsqueeze(1), t, value=-1, out=x)


class _ColorPlan:
    """The four colour ops (torchvision's fn_idx: 0 brightness, 1 contrast, 2 saturation, 3 hue) for a
    batch, example i with factors f[i] in the order order[i] (a permutation of 0..3).

    Examples are sorted by where their hue falls (`perm`; the caller works on images[perm] and undoes it
    with `inv`), so that every pass covers a contiguous slice: three tone passes for the ops before the hue
    (on the examples that have 3, ≥ 2, ≥ 1 of them), one hue pass over every example that shifts hue, and
    three tone passes for the ops after it. Each example's three tone ops run once (3 batch-sized tone
    passes in all, not 4 over the whole batch) and the hue op runs once on one slice. Before, hue went in
    four stages on gathered quarters of the batch and cost 1.75 ms (gathers, scatters and four times its ≈40
    dispatches) where one call on the whole batch costs 0.89. Examples whose four factors are the identity
    are in no slice: they come back bit-identical."""

    def __init__(self, f: np.ndarray, order: np.ndarray, channels: int, device: torch.device) -> None:
        b = f.shape[0]
        if channels == 1:  # saturation and hue leave one-channel images unchanged (torchvision/PIL)
            f = np.concatenate([f[:, :2], np.ones_like(f[:, 2:3]), np.zeros_like(f[:, 3:])], axis=1)
        changes = f != np.array(_IDENTITY, dtype=f.dtype)
        hue_on = changes[:, 3]
        hue_at = (order == 3).argmax(axis=1)  # the stage of the hue op
        # Sort key: −1 changes nothing (in no pass); 4 no hue shift (its three tone ops all run "before" the
        # hue); else the hue stage s: s tone ops before the hue, 3 − s after.
        key = np.where(changes.any(axis=1), np.where(hue_on, hue_at, 4), -1)
        perm = np.argsort(-key, kind="stable")
        inv = np.empty_like(perm)
        inv[perm] = np.arange(b)
        rows = np.arange(b)[:, None]
        tone = order[order != 3].reshape(b, 3)  # each example's tone ops in its order
        after = np.minimum(np.where(hue_on, hue_at, 3)[:, None] + np.arange(3), 2)
        ops = np.concatenate([tone, tone[rows, after]], axis=1)[perm]  # (B, 6): each example's op in each pass
        alpha = f[perm[:, None], ops]  # its factor
        w_contrast = np.where(ops == 1, 1 - alpha, 0).astype(f.dtype)
        w_saturation = np.where(ops == 2, 1 - alpha, 0).astype(f.dtype)
        at_least = np.cumsum(np.bincount(key + 1, minlength=6)[::-1])[::-1].tolist()  # [v + 1]: # key ≥ v
        self.active = at_least[1]
        self.hue = (at_least[5], self.active)
        # (first, end) of the six tone passes (columns of the tables): three before the hue pass (examples
        # with > j tone ops before their hue), three after it (examples with ≤ 2 − j).
        self.passes = [(0, at_least[j + 2]) for j in range(3)] + [(at_least[4 - j], self.active) for j in range(3)]
        # Whether any example does contrast / saturation (else a pass skips the mean / the gray matmul).
        self.contrast, self.saturation = bool(w_contrast.any()), bool(w_saturation.any())
        self.tables = torch.from_numpy(np.stack([alpha, w_contrast, w_saturation])).to(device)  # (3, B, 6)
        self.shifts = torch.from_numpy(f[perm, 3]).to(device)
        self.perm_host = perm
        self.perm = torch.from_numpy(perm).to(device)
        self.inv = torch.from_numpy(inv).to(device)

    @property
    def changes(self) -> bool:
        return self.active > 0

    def apply(self, x: Tensor, scratch: _Fresh = _FRESH) -> Tensor:
        """Run the plan in place on x, which holds images[perm]."""
        tables, shifts = self.tables.to(x.dtype), self.shifts.to(x.dtype)
        for column, (lo, hi) in enumerate(self.passes):
            if column == 3 and self.hue[0] < self.hue[1]:
                _hue_(x[self.hue[0]:self.hue[1]], shifts[self.hue[0]:self.hue[1]], scratch)
            if lo < hi:
                alpha, w_c, w_s = tables[:, lo:hi, column]
                _tone_(x[lo:hi], alpha, w_c if self.contrast else None, w_s if self.saturation else None, scratch)
        return x


def _adjust(images: Tensor, f: np.ndarray, order: np.ndarray) -> Tensor:
    """The colour ops with factors f (B, 4) in order (B, 4), out of place."""
    plan = _ColorPlan(f, order, images.shape[1], images.device)
    if not plan.changes:
        return images
    return plan.apply(images.index_select(0, plan.perm)).index_select(0, plan.inv)


def adjust_color(images: Tensor, brightness: Magnitude = None, contrast: Magnitude = None,
                 saturation: Magnitude = None, hue: Magnitude = None, order: Optional[Tensor] = None) -> Tensor:
    """Deterministic per-example colour adjustment with explicit factors (B,): brightness, contrast and
    saturation factors (1 = unchanged), hue shift in [−0.5, 0.5] (0 = unchanged), applied in `order` (B, 4)
    (default 0, 1, 2, 3 for every example). Equals torchvision's adjust_* called one example at a time.
    Pixels are clamped to [0, 1] by every brightness / contrast / saturation op of an example that changes
    (as torchvision does for the op it runs; a factor-1 op here clamps too), while an example whose four
    factors are the identity comes back bit-identical."""
    images = _check_images(images)
    b = images.shape[0]
    f = [_magnitude(n, 1.0 if v is None else v, images) for n, v in
         (("brightness", brightness), ("contrast", contrast), ("saturation", saturation))]
    f = _host(torch.stack(f + [_magnitude("hue", hue, images)], dim=1))
    if (f[:, :3] < 0).any() or (np.abs(f[:, 3]) > 0.5).any():
        raise ValueError("brightness/contrast/saturation: factors must be >= 0; hue: shifts in [-0.5, 0.5]")
    if order is None:
        order = torch.arange(4).expand(b, 4)
    if not isinstance(order, Tensor) or order.shape != (b, 4):
        raise ValueError(f"order: expected a ({b}, 4) tensor of permutations of 0..3")
    order = _host(order)
    if not (np.sort(order, axis=1) == np.arange(4)).all():
        raise ValueError("order: every row must be a permutation of 0..3")
    return _adjust(images.detach(), f, order)


def _draw_color(brightness: np.ndarray, contrast: np.ndarray, saturation: np.ndarray, hue: np.ndarray, generator,
                device: torch.device) -> Tuple[np.ndarray, np.ndarray]:
    """(factors (B, 4), order (B, 4)) as ColorJitter draws them, per example."""
    b = brightness.shape[0]
    u = _uniform((4, b), generator, device)
    # ColorJitter's ranges: [max(0, 1 − m), 1 + m] for the three factors, [−h, h] for hue. With m = 0 both
    # ends are 1, and lo + (hi − lo)·u is exactly 1: the op changes nothing for that example.
    m = np.stack([brightness, contrast, saturation])
    lo = np.maximum(1 - m, 0)
    factors = np.concatenate([lo + ((1 + m) - lo) * u[:3], (hue * (2 * u[3] - 1))[None]])
    # A uniformly random permutation per example (argsort of i.i.d. keys), like torch.randperm(4) per call.
    order = np.argsort(_uniform((b, 4), generator, device), axis=1, kind="stable")
    return factors.T, order


def color_jitter(images: Tensor, brightness: Magnitude = None, contrast: Magnitude = None,
                 saturation: Magnitude = None, hue: Magnitude = None, *,
                 generator: Optional[torch.Generator] = None) -> Tensor:
    """ColorJitter per example on images in [0, 1]: brightness, contrast, saturation factors from
    U(max(0, 1 − m_i), 1 + m_i), hue shift from U(−h_i, h_i) (h_i ≤ 0.5), in a random order per example.
    Examples with all four magnitudes 0 come back bit-identical."""
    images, generator = _check_images(images), _check_generator(generator)
    mags = _check_ranges({n: _magnitude(n, v, images) for n, v in (("brightness", brightness),
                          ("contrast", contrast), ("saturation", saturation), ("hue", hue))})
    f, order = _draw_color(mags["brightness"], mags["contrast"], mags["saturation"], mags["hue"], generator,
                           images.device)
    return _adjust(images.detach(), f, order)


# ----------------------------------------------------------------------------------------------- composer

_NORMALIZATIONS: Dict[Tuple[Tuple[float, ...], Tuple[float, ...], torch.device, torch.dtype], Tuple[Tensor, ...]] = {}


def _normalization(mean: Tuple[float, ...], std: Tuple[float, ...], device: torch.device,
                   dtype: torch.dtype) -> Tuple[Tensor, ...]:
    """(mean, std, 1/std, −mean/std) as cached (1, C, 1, 1) tensors: x·std + mean to pixel space and back."""
    key = (mean, std, device, dtype)
    if key not in _NORMALIZATIONS:
        m, s = _constant(mean, device, dtype), _constant(std, device, dtype)
        _NORMALIZATIONS[key] = (m, s, 1 / s, -m / s)
    return _NORMALIZATIONS[key]


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

    The random numbers are those of `hflip`, `affine`, `color_jitter` and `cutout` called in turn with the same
    generator. The result equals theirs to float round-off, not bit for bit: an example that is flipped and
    warped is resampled once, with the flip folded into its affine matrix (one grid_sample instead of a flip
    pass and a resampling; the source coordinates then differ from flip-then-warp by round-off, ≈1e-7).
    Examples that are flipped but not warped are flipped exactly. No gradient flows to the images.

    On the CPU the augmenter keeps its scratch buffers (about 5 batch-sized tensors) between calls,
    one set per thread: only the result is newly allocated (see `_Kept`).
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
        self._local = threading.local()

    def __getstate__(self) -> Dict[str, object]:
        state = dict(self.__dict__)
        del state["_local"]  # scratch buffers are per process and thread
        return state

    def __setstate__(self, state: Dict[str, object]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def _scratch(self, device: torch.device) -> _Fresh:
        # Only CPU memory is kept: CUDA's caching allocator already reuses freed blocks without page faults.
        if device.type != "cpu":
            return _FRESH
        if not hasattr(self._local, "kept"):
            self._local.kept = _Kept()
        return self._local.kept

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
        mags = _check_ranges(self._magnitudes(images, values),
                             {k: f"{k} (values[{v!r}])" for k, v in self.spec.items() if isinstance(v, str)})
        images = images.detach()
        if not mags or images.shape[0] == 0:
            return images
        b, c, h, w = images.shape
        device = images.device
        zero = np.zeros(b, dtype=np.float32)
        get = lambda k: mags.get(k, zero)  # noqa: E731 (absent parameter = magnitude 0)
        # Examples with some non-zero magnitude (at least one hole of side ≥ 1 for cutout).
        touched = (np.stack([get(k) for k in AUGMENT_PARAMS[:9]] + [
            np.minimum(np.floor(get("cutout_holes")), np.floor(get("cutout_length")))]) > 0).any(axis=0)
        # Every random number first, in the order the public functions chained draw them.
        flip = _draw_flip(mags["hflip"], generator, device) if "hflip" in mags else None
        warp = None
        if any(k in mags for k in AUGMENT_PARAMS[1:5]):
            warp = _draw_affine(get("degrees"), get("translate"), get("scale"), get("shear"), generator, h, w, device)
        plan = None
        if any(k in mags for k in AUGMENT_PARAMS[5:9]):
            f, order = _draw_color(get("brightness"), get("contrast"), get("saturation"), get("hue"), generator,
                                   device)
            plan = _ColorPlan(f, order, c, device)
        holes_drawn = None
        if "cutout_holes" in mags:
            holes_drawn = _draw_cutout(get("cutout_holes"), get("cutout_length"), generator, h, w, device)
        if warp is not None and not warp[1].any():
            warp = None
        if plan is not None and not plan.changes:
            plan = None
        pixel_ops = warp is not None or plan is not None  # flip and cutout commute with the normalization
        scratch = self._scratch(device)
        # Half-precision images are augmented in float32 (grid_sample and HSV round-off) and cast back.
        x = images.float() if images.dtype in (torch.float16, torch.bfloat16) else images
        shape, dtype = x.shape, x.dtype
        if self.mean is not None and pixel_ops:
            mean, std, inv_std, shift = _normalization(self.mean, self.std, device, dtype)
        # Intermediates live in kept buffers; the result is the resampled batch (grid_sample's own output, or
        # a flipped copy), written over by the last step, or else a new gather. The input is never written.
        if warp is not None:
            params, active = warp
            src = x
            if self.mean is not None:
                src = torch.mul(x, std, out=scratch.get("pixels", shape, dtype, device)).add_(mean)
            x = _warp(src, _theta(params, h, w, flip), self.interpolation, scratch)
            if not active.all():  # unwarped examples: the input, flipped exactly where drawn
                idx = np.flatnonzero(~active)
                rows = src.index_select(0, torch.from_numpy(idx).to(device))
                rows = rows if flip is None else _flip_rows(rows, flip[idx], inplace=True)
                x.index_copy_(0, torch.from_numpy(idx).to(device), rows)
        elif flip is not None and plan is None:
            x = _flip_rows(x, flip, inplace=x is not images)
        if plan is not None:
            # The colour passes run on contiguous slices of the examples in the plan's order: a gather into a
            # kept buffer and one back (0.04 ms each for 128×3×32×32).
            work = torch.index_select(x, 0, plan.perm, out=scratch.get("work", shape, dtype, device))
            if warp is None:  # x is still the input: map to pixel space and flip after the gather
                if self.mean is not None:
                    work.mul_(std).add_(mean)
                if flip is not None:
                    _flip_rows(work, flip[plan.perm_host], inplace=True)
            plan.apply(work, scratch)
            if self.mean is not None:
                work.mul_(inv_std).add_(shift)  # (x − mean)/std
            x = torch.index_select(work, 0, plan.inv, out=x if x is not images else None)
        elif self.mean is not None and pixel_ops:
            x.mul_(inv_std).add_(shift)
        if holes_drawn is not None:
            x = _cut(x, holes_drawn, self.cutout_fill, inplace=x is not images)
        return _keep_inactive(x.to(images.dtype), images, touched)

    def __repr__(self) -> str:
        items = ", ".join(f"{k}={v!r}" for k, v in self.spec.items())
        norm = f", mean={self.mean}, std={self.std}" if self.mean is not None else ""
        return f"Augmenter({items}{norm})"
