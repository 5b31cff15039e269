"""dropout_dual on every backend: per-example rates, one mask on primal and tangent, shared dims, seeds and the
backward's mask, on the reference, the compiled op (on CUDA where a GPU is there) and the Triton kernel."""
import pytest
import torch

import fastdstn.ops as ops
from fastdstn.ops import reference as ref

from op_cases import (CPP_OPCHECK_UTILS, DEVICE, TRITON_OPCHECK_UTILS, compiled, cuda_only, grads, make, needs_cpp,
                      needs_triton, triton_module)

TDROP = triton_module("dropout.triton")


@pytest.mark.usefixtures("reference_backend")
def test_dropout_rate_per_example_and_same_mask_on_tangent():
    rate = torch.tensor([0.0, 0.1, 0.5, 0.9])
    x = torch.ones(4, 20000)
    y, yt = ops.dropout_dual(x, 2 * x, rate, seed=7)
    dropped = (y == 0).float().mean(1)
    torch.testing.assert_close(dropped, rate, atol=0.015, rtol=0)
    torch.testing.assert_close(yt, 2 * y)
    kept = y[y != 0].reshape(-1)
    assert torch.allclose(y[2][y[2] != 0], torch.full_like(y[2][y[2] != 0], 2.0))   # 1/(1 − 0.5)
    assert kept.numel() > 0
    torch.testing.assert_close(y.mean(1), torch.ones(4), atol=0.05, rtol=0)          # unbiased


@pytest.mark.usefixtures("reference_backend")
def test_dropout_shared_dims_share_one_draw():
    x = torch.ones(3, 4, 5, 6)
    y, _ = ops.dropout_dual(x, None, torch.full((3,), 0.5), seed=3, shared_dims=(2, 3))
    per_channel = y.flatten(2)
    assert (per_channel == per_channel[..., :1]).all(), "channel dropout keeps or drops whole channels"
    seq = torch.ones(7, 3, 4)
    z, _ = ops.dropout_dual(seq, None, torch.full((3,), 0.5), seed=3, batch_dim=1, shared_dims=(0,))
    assert (z == z[:1]).all(), "locked dropout uses one mask for all time steps"


@pytest.mark.usefixtures("reference_backend")
def test_dropout_seed_determines_mask_and_backward_reuses_it():
    x = torch.randn(4, 50, requires_grad=True)
    rate = torch.full((4,), 0.3)
    y1, _ = ops.dropout_dual(x, None, rate, seed=11)
    y2, _ = ops.dropout_dual(x, None, rate, seed=11)
    torch.testing.assert_close(y1, y2)
    y1.sum().backward()
    torch.testing.assert_close(x.grad, (y1 / x).detach())


# --------------------------------------------------------------------------------------------------- the compiled op
@needs_cpp
@pytest.mark.parametrize("shape,batch_dim,shared,has_xt", [((6, 5), 0, [], True), ((3, 4, 5, 2), 0, [2, 3], True),
                                                          ((7, 4, 3), 1, [0], False)])
def test_cpp_opcheck_dropout(shape, batch_dim, shared, has_xt):
    x = torch.randn(*shape, requires_grad=True)
    xt = torch.randn(*shape, requires_grad=True) if has_xt else None
    rate = torch.rand(shape[batch_dim]) * 0.9
    torch.library.opcheck(torch.ops.fastdstn.dropout_dual.default, (x, xt, rate, 1234, batch_dim, shared),
                          test_utils=CPP_OPCHECK_UTILS)


def gradcheck_inputs():
    """float64 x and ẋ of shape (4, 3, 5) that require grad, and one rate per example."""
    x = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    xt = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    return x, xt, torch.tensor([0.0, 0.3, 0.6, 0.9], dtype=torch.float64)


@needs_cpp
def test_cpp_gradcheck_dropout():
    x, xt, rate = gradcheck_inputs()
    assert torch.autograd.gradcheck(lambda a, b: compiled.dropout_dual(a, b, rate, 7, 0, (2,)), (x, xt))


@needs_cpp
def test_cpp_double_backward_of_dropout_is_its_forward_op():
    x, xt, rate = gradcheck_inputs()
    assert torch.autograd.gradgradcheck(lambda a, b: compiled.dropout_dual(a, b, rate, 7, 0, (2,)), (x, xt))


@needs_cpp
def test_cpp_dropout_statistics_and_consistency():
    B, D = 6, 20000
    rate = torch.tensor([0.0, 0.1, 0.25, 0.5, 0.75, 0.9])
    x, xt = torch.ones(B, D), torch.randn(B, D)
    y, yt = compiled.dropout_dual(x, xt, rate, 42, 0, ())
    for i, p in enumerate(rate.tolist()):
        kept = (y[i] != 0).float().mean().item()
        sd = (p * (1 - p) / D) ** 0.5
        assert abs(kept - (1 - p)) <= 5 * sd + 1e-9, (i, kept, p)
        torch.testing.assert_close(y[i][y[i] != 0], torch.full_like(y[i][y[i] != 0], 1 / (1 - p)))
    torch.testing.assert_close(yt, xt * y)  # the tangent sees the primal's mask
    # deterministic in the seed, different across seeds
    assert torch.equal(compiled.dropout_dual(x, None, rate, 42, 0, ())[0], y)
    assert not torch.equal(compiled.dropout_dual(x, None, rate, 43, 0, ())[0], y)


@needs_cpp
def test_cpp_dropout_shared_dims_and_backward_mask():
    x = torch.ones(8, 16, 5, 5, requires_grad=True)
    xt = torch.randn(8, 16, 5, 5, requires_grad=True)
    rate = torch.full((8,), 0.5)
    y, yt = compiled.dropout_dual(x, xt, rate, 3, 0, (2, 3))
    mask = y.detach()
    assert torch.equal(mask, mask[:, :, :1, :1].expand_as(mask))  # one draw per (example, channel)
    gy, gyt = torch.randn_like(y), torch.randn_like(yt)
    gx, gxt = torch.autograd.grad((y * gy).sum() + (yt * gyt).sum(), (x, xt))
    torch.testing.assert_close(gx, gy * mask)
    torch.testing.assert_close(gxt, gyt * mask)
    # locked dropout of a (T, B, D) sequence: the time dimension shares the draw
    seq = torch.ones(7, 4, 9)
    ys, _ = compiled.dropout_dual(seq, None, torch.full((4,), 0.5), 5, 1, (0,))
    assert torch.equal(ys, ys[:1].expand_as(ys))


@needs_cpp
@cuda_only
def test_cuda_dropout_rates_masks_and_backward():
    rate = torch.tensor([0.0, 0.2, 0.5, 0.8], device="cuda")
    x = torch.ones(4, 20000, device="cuda", requires_grad=True)
    xt = torch.randn(4, 20000, device="cuda", requires_grad=True)
    y, yt = compiled.dropout_dual(x, xt, rate, 11, 0, ())
    kept = (y != 0).float().mean(1)
    torch.testing.assert_close(kept, 1 - rate, atol=0.015, rtol=0)
    mask = y.detach()
    torch.testing.assert_close(yt, xt * mask)
    gy = torch.randn_like(y)
    gx, gxt = torch.autograd.grad((y * gy).sum() + (yt * gy).sum(), (x, xt))
    torch.testing.assert_close(gx, gy * mask)
    torch.testing.assert_close(gxt, gy * mask)
    assert torch.equal(compiled.dropout_dual(x, None, rate, 11, 0, ())[0], y)


# ------------------------------------------------------------------------------------------------------------ Triton
def applied_mask(y, x):
    """The mask that was applied: y / x (x has no zeros in these tests)."""
    return (y / x).detach()


@needs_triton
def test_triton_dropout_same_mask_on_primal_and_tangent():
    x, xt = make((8, 300)), make((8, 300))
    rate = torch.linspace(0.0, 0.7, 8, device=DEVICE)
    y, yt = TDROP.dropout_dual(x, xt, rate, 1234)
    m, mt = applied_mask(y, x), applied_mask(yt, xt)
    torch.testing.assert_close(m, mt)
    expected = (1 / (1 - rate))[:, None].expand_as(m)
    kept = m != 0
    torch.testing.assert_close(m[kept], expected[kept])
    assert kept[0].all(), "rate 0 keeps everything"


@needs_triton
def test_triton_dropout_rates_per_example():
    x = torch.ones((4, 16384), device=DEVICE)
    rate = torch.tensor([0.0, 0.1, 0.5, 0.9], device=DEVICE)
    y, yt = TDROP.dropout_dual(x, None, rate, 7)
    assert yt is None
    dropped = (y == 0).float().mean(1)
    # Binomial standard error at n = 16384 is <= 0.004; 0.02 is 5 standard errors.
    assert (dropped - rate).abs().max() < 0.02, dropped


@needs_triton
def test_triton_dropout_deterministic_in_seed():
    x = make((6, 50))
    rate = torch.full((6,), 0.5, device=DEVICE)
    a, _ = TDROP.dropout_dual(x, None, rate, 5)
    b, _ = TDROP.dropout_dual(x, None, rate, 5)
    c, _ = TDROP.dropout_dual(x, None, rate, 6)
    assert torch.equal(a, b) and not torch.equal(a, c)


@needs_triton
@pytest.mark.parametrize("shape,batch_dim,shared", [
    ((4, 6, 5, 7), 0, (2, 3)),   # channel dropout of images
    ((9, 4, 33), 1, (0,)),       # locked dropout of (T, B, D)
    ((3, 5, 2, 4, 6), 0, (1, 3)),  # five dims, two shared groups
])
def test_triton_dropout_shared_dims(shape, batch_dim, shared):
    x, xt = make(shape), make(shape)
    rate = torch.rand(shape[batch_dim], device=DEVICE) * 0.6
    y, yt = TDROP.dropout_dual(x, xt, rate, 99, batch_dim, shared)
    m = applied_mask(y, x)
    torch.testing.assert_close(m, applied_mask(yt, xt))
    for d in shared:
        # y / x recovers the scale up to rounding: compare with a tolerance, and the zero pattern exactly.
        first = m.narrow(d, 0, 1).expand_as(m)
        torch.testing.assert_close(m, first, msg=f"mask varies along shared dim {d}")
        assert torch.equal(m == 0, first == 0)
    view = [1] * len(shape)
    view[batch_dim] = -1
    expected = (1 / (1 - rate)).reshape(view).expand_as(m)
    torch.testing.assert_close(m[m != 0], expected[m != 0])


@needs_triton
def test_triton_dropout_unmergeable_falls_back_to_reference():
    x = make((2, 3, 4, 5, 6, 7))
    rate = torch.full((2,), 0.3, device=DEVICE)
    y, _ = TDROP.dropout_dual(x, None, rate, 3, 0, (1, 3, 5))
    torch.testing.assert_close(y, ref.dropout_dual(x, None, rate, 3, 0, (1, 3, 5))[0])


@needs_triton
@pytest.mark.parametrize("with_xt", [True, False])
def test_triton_dropout_backward_is_the_same_mask(with_xt):
    x, xt = make((5, 70)), (make((5, 70)) if with_xt else None)
    rate = torch.rand(5, device=DEVICE) * 0.8
    rate.requires_grad_(True)
    y, yt = TDROP.dropout_dual(x, xt, rate, 11)
    m = applied_mask(y, x)
    cy, cyt = torch.randn_like(y), torch.randn_like(y)
    g = grads([y, yt], [cy, cyt], [x, xt, rate])
    torch.testing.assert_close(g[0], cy * m)
    if with_xt:
        torch.testing.assert_close(g[1], cyt * m)
    assert g[2] is None, "rates are detached (docs/METHOD.md §2)"


@needs_triton
def test_triton_dropout_opcheck():
    x, xt = make((3, 10)), make((3, 10))
    rate = torch.full((3,), 0.4, device=DEVICE)
    torch.library.opcheck(torch.ops.fastdstn.dropout_dual_triton.default, (x, xt, rate, 1, 0, []),
                          test_utils=TRITON_OPCHECK_UTILS)
    torch.library.opcheck(torch.ops.fastdstn.dropout_dual_triton.default, (x, None, rate, 1, 0, []),
                          test_utils=TRITON_OPCHECK_UTILS)
