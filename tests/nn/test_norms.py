"""BatchNorm and LayerNorm in the dual pass (fastdstn.nn.norms): the tangent and its adjoint as one ATen kernel
each, against PyTorch's forward-mode rule and autograd through it, in float64; gradcheck of the tangent maps; the
fallbacks to PyTorch's functions; and the routing of F.batch_norm / F.layer_norm inside dual_routes()."""
import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn

from fastdstn.nn import dual_routes, norms
from fastdstn.nn.norms import _BatchNormTangent, _LayerNormTangent

# Both sides sum the same products in another order: a few float64 roundings of the tangent's scale.
TOL = 1e-12


def _dual_and_grad(fn, x, xt, cotangent):
    """(y, ẏ, ∂⟨cotangent, ẏ⟩/∂ẋ) of fn at the dual input (x, ẋ)."""
    xt = xt.clone().requires_grad_(True)
    with fwAD.dual_level():
        y, yt = fwAD.unpack_dual(fn(fwAD.make_dual(x, xt)))
    (grad,) = torch.autograd.grad(yt, xt, cotangent)
    return y, yt, grad


def _assert_same(ours, theirs):
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= TOL * max(1.0, b.abs().max().item())


def _gen(*shape, seed=0, **kw):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64, **kw)


BATCH_NORM_CASES = {
    "2d affine": ((6, 3, 5, 5), True, True, torch.contiguous_format),
    "2d channels_last": ((6, 3, 5, 5), True, True, torch.channels_last),
    "2d no affine, no running stats": ((6, 3, 5, 5), False, False, torch.contiguous_format),
    "1d (N, C)": ((7, 4), True, True, torch.contiguous_format),
    "1d (N, C, L)": ((5, 4, 9), True, False, torch.contiguous_format),
}


@pytest.mark.parametrize("case", list(BATCH_NORM_CASES))
def test_batch_norm_tangent_and_adjoint_match_pytorchs_rule(case):
    shape, affine, running, layout = BATCH_NORM_CASES[case]
    channels = shape[1]
    x = _gen(*shape).contiguous(memory_format=layout)
    xt, cotangent = _gen(*shape, seed=1), _gen(*shape, seed=2)
    weight, bias = (_gen(channels, seed=3), _gen(channels, seed=4)) if affine else (None, None)
    stats = [(torch.zeros(channels, dtype=torch.float64), torch.ones(channels, dtype=torch.float64))
             if running else (None, None) for _ in range(2)]
    ours = _dual_and_grad(lambda d: norms.batch_norm(d, *stats[0], weight, bias, True, 0.1, 1e-5), x, xt, cotangent)
    theirs = _dual_and_grad(lambda d: F.batch_norm(d, *stats[1], weight, bias, True, 0.1, 1e-5), x, xt, cotangent)
    _assert_same(ours, theirs)
    if running:
        _assert_same(stats[0], stats[1])


@pytest.mark.parametrize("normalized, affine", [((10,), True), ((7, 10), True), ((10,), False)])
def test_layer_norm_tangent_and_adjoint_match_pytorchs_rule(normalized, affine):
    x, xt, cotangent = _gen(4, 7, 10), _gen(4, 7, 10, seed=1), _gen(4, 7, 10, seed=2)
    weight, bias = (_gen(*normalized, seed=3), _gen(*normalized, seed=4)) if affine else (None, None)
    ours = _dual_and_grad(lambda d: norms.layer_norm(d, normalized, weight, bias, 1e-5), x, xt, cotangent)
    theirs = _dual_and_grad(lambda d: F.layer_norm(d, normalized, weight, bias, 1e-5), x, xt, cotangent)
    _assert_same(ours, theirs)


def test_tangent_maps_pass_gradcheck_and_refuse_double_backward():
    x, weight = _gen(6, 3, 4, 4), _gen(3, seed=1)
    _, mean, rstd = torch.native_batch_norm(x, weight, None, None, None, True, 0.1, 1e-5)
    xt = _gen(6, 3, 4, 4, seed=2, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _BatchNormTangent.apply(t, x, weight, mean, rstd, 1e-5), (xt,))
    y = torch.randn(5, 8, dtype=torch.float64)
    gamma = _gen(8, seed=3)
    _, mean, rstd = torch.native_layer_norm(y, (8,), gamma, None, 1e-5)
    yt = _gen(5, 8, seed=4, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _LayerNormTangent.apply(t, y, (8,), gamma, mean, rstd), (yt,))
    out = _LayerNormTangent.apply(yt, y, (8,), gamma, mean, rstd)
    cotangent = torch.ones_like(out, requires_grad=True)
    (grad,) = torch.autograd.grad(out, yt, cotangent, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad.sum().backward()


def test_a_primal_that_needs_a_gradient_takes_pytorchs_route():
    """Outside the frozen-primal case (e.g. plain forward-mode AD of a trainable model) the functions are PyTorch's:
    the primal's gradient exists and is PyTorch's."""
    x, xt = _gen(6, 3, 4, 4), _gen(6, 3, 4, 4, seed=1)
    weight = _gen(3, seed=2, requires_grad=True)
    for fn in (lambda d, w: norms.batch_norm(d, None, None, w, None, True), lambda d, w: F.batch_norm(
            d, None, None, w, None, True)):
        with fwAD.dual_level():
            _, yt = fwAD.unpack_dual(fn(fwAD.make_dual(x, xt), weight))
        assert type(yt.grad_fn).__name__ != "_BatchNormTangentBackward"
        grads = torch.autograd.grad(yt.sum(), weight)
        assert grads[0].abs().sum() > 0


def test_dual_routes_send_norm_modules_to_the_fused_tangent():
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.LayerNorm(12)).double()
    model.requires_grad_(False)
    x, xt = _gen(4, 2, 4, 4), _gen(4, 2, 4, 4, seed=1, requires_grad=True)
    seen = []
    with fwAD.dual_level(), dual_routes():
        hook = model[1].register_forward_hook(lambda m, i, o: seen.append(type(fwAD.unpack_dual(o)[1].grad_fn)))
        _, yt = fwAD.unpack_dual(model(fwAD.make_dual(x, xt)))
        hook.remove()
    assert [t.__name__ for t in seen] == ["_BatchNormTangentBackward"]
    assert type(yt.grad_fn).__name__ == "_LayerNormTangentBackward"


def test_under_autocast_the_norms_are_pytorchs():
    x, xt = torch.randn(4, 8), torch.randn(4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16), fwAD.dual_level():
        _, yt = fwAD.unpack_dual(norms.layer_norm(fwAD.make_dual(x, xt.requires_grad_()), (8,)))
    assert type(yt.grad_fn).__name__ != "_LayerNormTangentBackward"
