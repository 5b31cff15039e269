"""fastdstn/data/augment.py: per-example semantics, exact identity at zero, agreement with torchvision."""
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from fastdstn.data import Augmenter, adjust_color, affine, color_jitter, cutout, hflip, warp_affine

B = 16


def images(b=B, c=3, h=32, w=32, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, h, w, generator=g).to(dtype)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def changed(a, b):
    """Per example: did anything change?"""
    return (a != b).flatten(1).any(1)


ALL_ON = {"degrees": 20.0, "translate": 0.1, "scale": 0.2, "shear": 10.0}
FUNCS = {
    "hflip": lambda x, m, g: hflip(x, m, generator=g),
    "cutout": lambda x, m, g: cutout(x, m * 3, m * 8, generator=g),
    "affine_degrees": lambda x, m, g: affine(x, degrees=m * 30, generator=g),
    "affine_translate": lambda x, m, g: affine(x, translate=m * 0.2, generator=g),
    "affine_scale": lambda x, m, g: affine(x, scale=m * 0.3, generator=g),
    "affine_shear": lambda x, m, g: affine(x, shear=m * 20, generator=g),
    "brightness": lambda x, m, g: color_jitter(x, brightness=m * 0.8, generator=g),
    "contrast": lambda x, m, g: color_jitter(x, contrast=m * 0.8, generator=g),
    "saturation": lambda x, m, g: color_jitter(x, saturation=m * 0.8, generator=g),
    "hue": lambda x, m, g: color_jitter(x, hue=m * 0.4, generator=g),
}


@pytest.mark.parametrize("name", FUNCS)
def test_zero_magnitude_is_exact_identity(name):
    x = images()
    out = FUNCS[name](x, torch.zeros(B), gen())
    assert torch.equal(out, x)
    assert torch.equal(x, images())  # the input is never modified


@pytest.mark.parametrize("name", FUNCS)
def test_per_example_magnitudes_are_honoured(name):
    """Even examples have magnitude 0 and must be untouched; odd ones have magnitude 1 and must change."""
    x = images()
    m = torch.arange(B).remainder(2).float()
    out = FUNCS[name](x, m, gen())
    diff = changed(out, x)
    assert not diff[0::2].any(), f"{name}: zero-magnitude examples changed"
    # A random draw can leave an example unchanged (a translation that rounds to 0 px, a flip not taken).
    minimum = {"hflip": 2, "affine_translate": 4}.get(name, B // 2)
    assert int(diff[1::2].sum()) >= minimum, f"{name}: only {int(diff[1::2].sum())} of {B // 2} changed"


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_device_and_seeded(name, dtype):
    x = images(dtype=dtype)
    m = torch.full((B,), 0.7)
    a, b = FUNCS[name](x, m, gen(5)), FUNCS[name](x, m, gen(5))
    assert a.shape == x.shape and a.dtype == dtype and a.device == x.device
    assert torch.equal(a, b)  # the same generator seed reproduces the batch bit for bit


def test_hflip_probability_zero_and_one():
    x = images()
    assert torch.equal(hflip(x, torch.ones(B)), x.flip(-1))
    assert torch.equal(hflip(x, 0.0), x)
    mixed = hflip(x, torch.tensor([1.0, 0.0] * (B // 2)))
    assert torch.equal(mixed[0::2], x[0::2].flip(-1)) and torch.equal(mixed[1::2], x[1::2])
    rate = changed(hflip(images(4000, 1, 2, 2), 0.3, generator=gen()), images(4000, 1, 2, 2)).float().mean()
    assert abs(float(rate) - 0.3) < 0.03


def expected_cut_fraction(size, side, holes):
    """E[fraction cut] for `holes` independent squares of `side` with centres uniform over a size×size image:
    per pixel P(covered by one) = P(row covered)·P(column covered); holes combine as 1 − (1 − p)^holes."""
    pos = torch.arange(size)
    centres = torch.arange(size)
    start = centres - side // 2
    covers = (pos[None, :] >= start[:, None]) & (pos[None, :] < start[:, None] + side)  # (centre, position)
    p_axis = covers.float().mean(0)
    p = p_axis[:, None] * p_axis[None, :]
    return float((1 - (1 - p) ** holes).mean())


@pytest.mark.parametrize("side, holes", [(8, 1), (5, 1), (12, 3), (16, 2)])
def test_cutout_covers_the_expected_area(side, holes):
    x = torch.ones(2000, 1, 24, 24)
    out = cutout(x, torch.full((2000,), holes + 0.9), torch.full((2000,), side + 0.5), generator=gen())
    got = float((out == 0).float().mean())
    want = expected_cut_fraction(24, side, holes)  # the floors: holes + 0.9 → holes, side + 0.5 → side
    assert abs(got - want) < 0.01, (got, want)


def test_cutout_squares_have_the_requested_side():
    x = torch.ones(500, 1, 40, 40)
    out = cutout(x, 1.0, torch.full((500,), 7.0), generator=gen())
    cut = out[:, 0] == 0
    rows, cols = cut.any(2), cut.any(1)
    for r, c, m in zip(rows, cols, cut):
        nr, nc = int(r.sum()), int(c.sum())
        assert int(m.sum()) == nr * nc  # one axis-aligned rectangle
        # Side 7 unless clipped by a border (then the rectangle touches that border).
        assert nr == 7 or r[0] or r[-1]
        assert nc == 7 or c[0] or c[-1]
    assert cut.flatten(1).sum(1).float().mean() > 35


def test_cutout_fill_and_no_hole_cases():
    x = images()
    assert torch.equal(cutout(x, torch.full((B,), 0.99), 8.0), x)  # floor(0.99) = 0 holes
    assert torch.equal(cutout(x, 2.0, torch.full((B,), 0.5)), x)  # side floor(0.5) = 0
    out = cutout(x, 1.0, 64.0, fill=-1.0)  # side 2·32: covers the 32×32 image from any centre
    assert torch.equal(out, torch.full_like(x, -1.0))


def test_warp_affine_matches_torchvision_per_example():
    x = images(6, 3, 20, 28)
    g = gen(1)
    angle = torch.randn(6, generator=g) * 25
    translate = torch.randint(-4, 5, (6, 2), generator=g).float()
    scale = 0.8 + 0.4 * torch.rand(6, generator=g)
    shear = torch.randn(6, generator=g) * 12
    for mode in ("bilinear", "nearest"):
        out = warp_affine(x, angle, translate, scale, shear, interpolation=mode)
        ref = torch.stack([TF.affine(x[i], angle=float(angle[i]), translate=translate[i].tolist(),
                                     scale=float(scale[i]), shear=[float(shear[i]), 0.0],
                                     interpolation=TF.InterpolationMode(mode)) for i in range(6)])
        err = (out - ref).abs().max()
        # Bilinear: float32 grid round-off only; nearest may flip a pixel whose source lies on a boundary.
        if mode == "bilinear":
            assert err < 1e-4, err
        else:
            assert (out != ref).float().mean() < 1e-3


def test_adjust_color_matches_torchvision_per_example():
    x = images(8)
    g = gen(2)
    b, c, s = (torch.rand(8, generator=g) * 1.6 for _ in range(3))
    h = torch.rand(8, generator=g) - 0.5
    order = torch.rand(8, 4, generator=g).argsort(1)
    out = adjust_color(x, b, c, s, h, order)
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    factors = [b, c, s, h]
    for i in range(8):
        ref = x[i]
        for k in order[i].tolist():
            ref = ops[k](ref, float(factors[k][i]))
        err = (out[i] - ref).abs().max()
        assert err < 1e-5, (i, err)


def test_hue_matches_torchvision_on_ties_and_gray_pixels():
    """Pixels quantized to {0, 0.5, 1} have tied maxima (r = g, g = b, …) and gray pixels (C = 0): the branch
    order and the undefined hue must agree with torchvision's HSV round trip."""
    x = (images(6, 3, 9, 9) * 3).floor().clamp(max=2) / 2
    hues = torch.tensor([-0.5, -0.3, -0.01, 0.01, 0.25, 0.5])
    out = adjust_color(x, hue=hues)
    ref = torch.stack([TF.adjust_hue(x[i], float(hues[i])) for i in range(6)])
    assert (out - ref).abs().max() < 1e-5


def test_color_jitter_grayscale_and_factor_ranges():
    gray = images(c=1)
    assert torch.equal(color_jitter(gray, saturation=0.9, hue=0.5), gray)  # no-ops on one channel (PIL)
    x = images(2000, 3, 4, 4) * 0.5  # no clamping at 1 for factors up to 2
    out = color_jitter(x, brightness=0.3, generator=gen())
    ratio = (out / x).flatten(1).median(1).values
    assert ratio.min() >= 0.7 - 1e-5 and ratio.max() <= 1.3 + 1e-5
    assert ratio.min() < 0.72 and ratio.max() > 1.28  # the whole range is used


def test_augmenter_composes_per_example_values():
    aug = Augmenter({"cutout_holes": "holes", "cutout_length": "length", "degrees": "deg", "hflip": 0.0,
                     "brightness": "bright"}, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    assert aug.hyperparameters == ("holes", "length", "deg", "bright")  # spec order
    x = torch.randn(B, 3, 32, 32)
    on = torch.arange(B).remainder(2).float()
    values = {"holes": on * 2.7, "length": on * 9 + 0.5, "deg": on * 15, "bright": on * 0.4}
    out = aug(x, values, generator=gen())
    assert out.shape == x.shape and out.dtype == x.dtype
    diff = changed(out, x)
    assert not diff[0::2].any() and diff[1::2].all()
    assert torch.equal(aug(x, {k: torch.zeros(B) for k in values}), x)
    # Scalars apply to the whole batch; the same generator seed reproduces the call.
    assert torch.equal(aug(x, {"holes": 1.0, "length": 4.0, "deg": 5.0, "bright": 0.1}, generator=gen(3)),
                       aug(x, {"holes": 1.0, "length": 4.0, "deg": 5.0, "bright": 0.1}, generator=gen(3)))


def test_augmenter_cutout_fills_zero_in_normalized_space():
    aug = Augmenter({"cutout_length": "length"}, mean=(0.5,), std=(0.25,))
    x = torch.full((B, 1, 16, 16), 3.0)
    out = aug(x, {"length": torch.full((B,), 32.0)})  # covers 16×16 from any centre
    assert torch.equal(out, torch.zeros_like(x))  # cutout_holes defaults to 1


def test_magnitudes_are_detached():
    """Rates consumed by augmentation carry no gradient (docs/METHOD.md §2), even if the caller forgets to detach."""
    m = torch.full((B,), 0.3, requires_grad=True)
    out = Augmenter({"brightness": "b", "degrees": "b"})(images(), {"b": m * 2})
    assert not out.requires_grad


def test_augmenter_with_hyper_space_values():
    from fastdstn.hyper import Hyper, HyperSpace

    space = HyperSpace([Hyper("length", 8.0, 2.0, 24.0, discrete=True), Hyper("holes", 1.5, 0.0, 5.0, discrete=True),
                        Hyper("hue", 0.1, 0.0, 0.5)])
    aug = Augmenter({"cutout_length": "length", "cutout_holes": "holes", "hue": "hue"})
    x = images()
    p = space.sample(B, generator=gen())
    out_lambda = aug(x, space.current_values(B), generator=gen(1))
    out_eps = aug(x, space.example_values(p.perturbed), generator=gen(1))
    assert out_lambda.shape == out_eps.shape == x.shape and not torch.equal(out_lambda, out_eps)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_augmenter_keeps_dtype(dtype):
    aug = Augmenter({"degrees": 10.0, "contrast": 0.3, "cutout_length": 6.0, "hflip": 0.5})
    x = images(dtype=dtype)
    out = aug(x, {})
    assert out.dtype == dtype and out.shape == x.shape and changed(out, x).any()


@pytest.mark.parametrize("call, exc, word", [
    (lambda: hflip(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), 0.5), TypeError, "images"),
    (lambda: hflip(torch.zeros(3, 4, 4), 0.5), ValueError, "images"),
    (lambda: hflip(torch.zeros(2, 3, 4, 4), torch.ones(3)), ValueError, "p"),
    (lambda: hflip(torch.zeros(2, 3, 4, 4), 1.5), ValueError, "p"),
    (lambda: hflip(torch.zeros(2, 3, 4, 4), "0.5"), TypeError, "p"),
    (lambda: hflip(torch.zeros(2, 3, 4, 4), 0.5, generator=0), TypeError, "generator"),
    (lambda: cutout(torch.zeros(2, 3, 4, 4), -1.0, 2.0), ValueError, "holes"),
    (lambda: cutout(torch.zeros(2, 3, 4, 4), 1.0, float("nan")), ValueError, "length"),
    (lambda: affine(torch.zeros(2, 3, 4, 4), scale=1.0), ValueError, "scale"),
    (lambda: affine(torch.zeros(2, 3, 4, 4), translate=torch.ones(2, 1)), ValueError, "translate"),
    (lambda: affine(torch.zeros(2, 3, 4, 4), degrees=5.0, interpolation="bicubic"), ValueError, "interpolation"),
    (lambda: color_jitter(torch.zeros(2, 3, 4, 4), hue=0.6), ValueError, "hue"),
    (lambda: color_jitter(torch.zeros(2, 3, 4, 4), brightness=-0.1), ValueError, "brightness"),
    (lambda: Augmenter({"rotate": "r"}), ValueError, "rotate"),
    (lambda: Augmenter(["hflip"]), TypeError, "spec"),
    (lambda: Augmenter({"hflip": 2.0}), ValueError, "hflip"),
    (lambda: Augmenter({"hue": None}), TypeError, "hue"),
    (lambda: Augmenter({"hflip": 0.5}, mean=(0.5,)), ValueError, "mean"),
    (lambda: Augmenter({"hflip": "p"})(torch.zeros(2, 3, 4, 4), {}), ValueError, "'p'"),
    (lambda: Augmenter({"hflip": "p"})(torch.zeros(2, 3, 4, 4), [0.5]), TypeError, "values"),
    (lambda: Augmenter({"hue": "h"})(torch.zeros(2, 3, 4, 4), {"h": torch.ones(2)}), ValueError,
     r"hue \(values\['h'\]\): values must lie in \[0, 0.5\]"),
    (lambda: Augmenter({"hue": 0.1}, mean=(0.5,), std=(0.2,))(torch.zeros(2, 3, 4, 4), {}), ValueError, "channels"),
])
def test_bad_arguments_name_themselves(call, exc, word):
    with pytest.raises(exc, match=word):
        call()


def test_separable_grid_equals_affine_grid():
    from fastdstn.data.augment.geometric import _affine_grid

    theta = torch.randn(5, 2, 3, generator=gen(4), dtype=torch.float64)
    for h, w in ((32, 32), (7, 12)):
        ref = torch.nn.functional.affine_grid(theta, [5, 3, h, w], align_corners=False)
        assert (_affine_grid(theta, h, w) - ref).abs().max() < 1e-12


EVERY_PARAM = {"hflip": "p", "degrees": "deg", "translate": "t", "scale": "s", "shear": "sh", "brightness": "b",
            "contrast": "c", "saturation": "sat", "hue": "h", "cutout_holes": "holes", "cutout_length": "len"}


def all_values(seed=9):
    g = torch.Generator().manual_seed(seed)
    m = (0.5 + torch.rand(B, generator=g)) * (torch.arange(B) % 4 != 0)  # every 4th example untouched
    return {"p": m.clamp(max=1), "deg": m * 20, "t": m * 0.1, "s": m * 0.2, "sh": m * 5, "b": m * 0.4,
            "c": m * 0.4, "sat": m * 0.4, "h": m * 0.1, "holes": m * 3, "len": m * 10}


def chained(x, values, spec, generator):
    """The public (out-of-place) functions in the Augmenter's order with one generator."""
    if "hflip" in spec:
        x = hflip(x, values["p"], generator=generator)
    x = affine(x, values["deg"], values["t"], values["s"], values["sh"], generator=generator)
    x = color_jitter(x, values["b"], values["c"], values["sat"], values["h"], generator=generator)
    return cutout(x, values["holes"], values["len"], generator=generator)


def test_augmenter_equals_the_functions_chained_and_keeps_its_input():
    """The composer works in place on its own buffers; without a flip it must give exactly what the public
    functions give in the same order with the same generator, and leave the caller's tensor alone."""
    x = images()
    keep = x.clone()
    values = all_values()
    spec = {k: v for k, v in EVERY_PARAM.items() if k != "hflip"}
    out = Augmenter(spec)(x, values, generator=gen(3))
    assert torch.equal(x, keep)
    assert torch.equal(out, chained(x, values, spec, gen(3)))
    assert torch.equal(out[0::4], x[0::4]) and changed(out, x)[1::4].all()
    normalized = Augmenter(EVERY_PARAM, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25))
    out = normalized(x, values, generator=gen(3))
    assert torch.equal(x, keep) and torch.equal(out[0::4], x[0::4])


def test_augmenter_folds_the_flip_into_the_affine():
    """A flipped and warped example is resampled once (the flip negates its matrix's x row): equal to the
    chained functions (flip, then warp) to float round-off, and bit-exact wherever nothing was flipped."""
    x = images()
    values = all_values()
    out = Augmenter(EVERY_PARAM)(x, values, generator=gen(3))
    ref = chained(x, values, EVERY_PARAM, gen(3))
    assert (out - ref).abs().max() < 1e-5
    flipped = torch.rand(B, generator=gen(3)) < values["p"]  # the Augmenter's first draw
    assert flipped.any() and (~flipped).any()
    assert torch.equal(out[~flipped], ref[~flipped])


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_flip_folded_into_the_matrix_equals_flip_then_warp(mode):
    from fastdstn.data.augment.geometric import _theta, _warp

    x = images(8, 3, 20, 28)
    g = gen(6)
    params = torch.stack([torch.randn(8, generator=g) * 25, torch.randint(-4, 5, (8,), generator=g).float(),
                          torch.randint(-4, 5, (8,), generator=g).float(), 0.8 + 0.4 * torch.rand(8, generator=g),
                          torch.randn(8, generator=g) * 12]).numpy()  # angle, tx, ty, scale, shear
    flip = torch.arange(8) % 2 == 0
    folded = _warp(x, _theta(params, 20, 28, flip.numpy()), mode)
    ref = _warp(torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x), _theta(params, 20, 28), mode)
    assert torch.equal(folded[1::2], ref[1::2])  # unflipped: the same matrix
    if mode == "bilinear":
        assert (folded - ref).abs().max() < 1e-5
    else:  # a source exactly on a pixel boundary may round the other way
        assert (folded != ref).float().mean() < 1e-3


def test_augmenter_flips_unwarped_examples_exactly():
    """Examples flipped with zero affine magnitudes are not resampled: an exact flip, with or without
    a colour stage (whose sorting of the examples must not mix them up)."""
    x = images()
    on = (torch.arange(B) % 2).float()  # odd examples warped, even ones not
    for spec in ({"hflip": 1.0, "degrees": "d"}, {"hflip": 1.0, "degrees": "d", "brightness": "d"},
                 {"hflip": 1.0, "brightness": "d"}):
        out = Augmenter(spec)(x, {"d": on * 0.5}, generator=gen(2))
        assert torch.equal(out[0::2], x[0::2].flip(-1))
        assert changed(out, x.flip(-1))[1::2].all()


def test_adjust_color_orders_mixed_batches_like_torchvision():
    """Every combination the colour plan sorts by: the hue at any of the four stages, no hue shift, factors
    of 1 mixed with others, and examples with nothing to do (bit-identical, not even clamped)."""
    n = 96
    x = images(n)
    g = gen(8)
    b, c, s = (torch.rand(n, generator=g) * 1.6 for _ in range(3))
    h = torch.rand(n, generator=g) - 0.5
    h[torch.arange(n) % 5 == 0] = 0.0  # no hue shift
    b[torch.arange(n) % 3 == 0] = 1.0
    s[torch.arange(n) % 7 == 0] = 1.0
    idle = torch.arange(n) % 11 == 0
    b[idle], c[idle], s[idle], h[idle] = 1.0, 1.0, 1.0, 0.0
    order = torch.rand(n, 4, generator=g).argsort(1)
    out = adjust_color(x, b, c, s, h, order)
    outside = x * 1.2 - 0.1  # pixels outside [0, 1]: an example with nothing to do is not even clamped
    assert torch.equal(adjust_color(outside, b, c, s, h, order)[idle], outside[idle])
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    factors = [b, c, s, h]
    for i in range(n):
        ref = x[i]
        for k in order[i].tolist():
            ref = ops[k](ref, float(factors[k][i]))
        assert (out[i] - ref).abs().max() < 1e-5, i
    gray = images(n, 1)
    out = adjust_color(gray, b, c, s, h, order)
    for i in range(n):
        ref = gray[i]
        for k in order[i].tolist():
            ref = ops[k](ref, float(factors[k][i]))
        assert (out[i] - ref).abs().max() < 1e-5, i


def test_augmenter_results_are_independent_of_its_kept_buffers():
    """The Augmenter reuses scratch buffers between calls: an earlier result must not change, the
    same seed must give the same result, threads must not share buffers, and it must still pickle."""
    import pickle
    import threading

    aug = Augmenter(EVERY_PARAM, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25))
    values = all_values()
    x, y = images(seed=1), images(seed=2)
    first = aug(x, values, generator=gen(3))
    kept = first.clone()
    aug(y, values, generator=gen(4))
    aug(images(B // 2, seed=5), {k: v[: B // 2] for k, v in values.items()}, generator=gen(4))  # other shape
    assert torch.equal(first, kept)
    assert torch.equal(aug(x, values, generator=gen(3)), kept)
    results = {}

    def work(i):
        results[i] = [aug(images(seed=i), values, generator=gen(i)) for _ in range(5)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(3):
        want = aug(images(seed=i), values, generator=gen(i))
        assert all(torch.equal(r, want) for r in results[i])
    clone = pickle.loads(pickle.dumps(aug))
    assert torch.equal(clone(x, values, generator=gen(3)), kept)


def test_no_gradient_flows_to_the_images():
    x = images().requires_grad_()
    out = Augmenter(EVERY_PARAM)(x, all_values(), generator=gen(3))
    assert not out.requires_grad
    for fn in FUNCS.values():
        assert not fn(x, torch.full((B,), 0.7), gen()).requires_grad
