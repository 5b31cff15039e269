"""Max pooling through fastdstn's op (fastdstn.nn.pooling). In the dual pass: primal, tangent and the tangent's
gradient against PyTorch's forward-mode rule in float64, with ties (the first maximum of a window wins on both
routes), overlapping windows, padding, dilation and ceil_mode. Out of it: values, indices, gradient and double
backward of F.max_pool2d, bit for bit. The fallbacks to PyTorch's function; the routing inside dual_routes();
convert and export of nn.MaxPool2d."""
import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn

import fastdstn.ops as ops
from fastdstn.nn import MaxPool2d, convert, dual_routes, pooling
from fastdstn.nn.export import plain_model

GEOMETRIES = {
    "2x2 stride 2": dict(kernel_size=2),
    "3x3 stride 2 padding 1 (ResNet stem)": dict(kernel_size=3, stride=2, padding=1),
    "3x3 stride 1 padding 1, overlapping": dict(kernel_size=3, stride=1, padding=1),
    "2x3 ceil_mode": dict(kernel_size=(2, 3), stride=(2, 2), ceil_mode=True),
    "2x2 dilation 2": dict(kernel_size=2, stride=1, dilation=2),
}


def _dual_and_grad(fn, x, xt, cotangent_seed=2):
    xt = xt.clone().requires_grad_(True)
    with fwAD.dual_level():
        y, yt = fwAD.unpack_dual(fn(fwAD.make_dual(x, xt)))
    cotangent = torch.randn(yt.shape, generator=torch.Generator().manual_seed(cotangent_seed), dtype=yt.dtype)
    (grad,) = torch.autograd.grad(yt, xt, cotangent)
    return y, yt, grad


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_max_pool_matches_pytorchs_rule(geometry, ties):
    g = torch.Generator().manual_seed(0)
    shape = (3, 4, 9, 11)
    x = (torch.randint(0, 3, shape, generator=g).double() if ties else torch.randn(shape, generator=g,
                                                                                     dtype=torch.float64))
    xt = torch.randn(shape, generator=g, dtype=torch.float64)
    kwargs = GEOMETRIES[geometry]
    ours = _dual_and_grad(lambda d: pooling.max_pool2d(d, **kwargs), x, xt)
    theirs = _dual_and_grad(lambda d: F.max_pool2d(d, **kwargs), x, xt)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and a.is_contiguous()
        assert torch.equal(a, b)        # a selection and a scatter-add of the same elements: no rounding


def test_inputs_the_route_does_not_take_are_pytorchs():
    x, xt = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    with fwAD.dual_level():
        out, indices = pooling.max_pool2d(fwAD.make_dual(x, xt), 2, return_indices=True)   # taken, with indices
        assert torch.equal(indices, F.max_pool2d(x, 2, return_indices=True)[1])
        for d in (fwAD.make_dual(x[0], xt[0]),                                          # unbatched (C, H, W)
                  fwAD.make_dual(x.contiguous(memory_format=torch.channels_last), xt)):  # already channels-last
            _, yt = fwAD.unpack_dual(pooling.max_pool2d(d, 2))
            assert type(yt.grad_fn).__name__ != "_MaxPoolBackward"


def test_dual_routes_send_max_pool_modules_to_the_route():
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.MaxPool2d(2)).requires_grad_(False)
    xt = torch.randn(2, 2, 8, 8, requires_grad=True)
    with fwAD.dual_level(), dual_routes():
        _, yt = fwAD.unpack_dual(model(fwAD.make_dual(torch.randn(2, 2, 8, 8), xt)))
    assert type(yt.grad_fn).__name__ == "_MaxPoolBackward"


needs_compiled_pooling = pytest.mark.skipif(ops.available()["cpp"] != "available",
                                            reason="the compiled extension is not built")


@needs_compiled_pooling
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_plain_pooling_is_f_max_pool2d_bit_for_bit(geometry, dtype):
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 3, (3, 4, 9, 11), generator=g).to(dtype).requires_grad_(True)    # ties
    kwargs = GEOMETRIES[geometry]
    (y, indices), (y_torch, indices_torch) = (f(x, **kwargs, return_indices=True)
                                              for f in (pooling.max_pool2d, F.max_pool2d))
    assert type(y.grad_fn).__name__ == "_MaxPoolBackward"
    assert torch.equal(y, y_torch) and torch.equal(indices, indices_torch)
    cotangent = torch.randn(y.shape, generator=g, dtype=dtype)
    # the same additions in the same order where windows overlap: equal, not close
    assert torch.equal(*(torch.autograd.grad(out, x, cotangent)[0] for out in (y, y_torch)))


@needs_compiled_pooling
def test_plain_pooling_has_a_double_backward():
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: pooling.max_pool2d(t, 3, 2, 1, ceil_mode=True), (x,))


@pytest.mark.parametrize("case", ["channels-last", "bfloat16", "reference backend", "vmap", "compiled"])
def test_plain_pooling_falls_back_to_pytorch(case):
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    if case == "channels-last":
        y = pooling.max_pool2d(x.contiguous(memory_format=torch.channels_last), 2)
    elif case == "bfloat16":
        y = pooling.max_pool2d(x.bfloat16(), 2)
    elif case == "reference backend":
        with ops.use_backend("reference"):
            y = pooling.max_pool2d(x, 2)
    elif case == "vmap":
        y = torch.func.vmap(lambda t: pooling.max_pool2d(t, 2))(x.unsqueeze(0))[0]
    else:
        y = torch.compile(lambda t: pooling.max_pool2d(t, 2), backend="eager", fullgraph=True)(x)
    assert "MaxPool" not in type(y.grad_fn).__name__ or type(y.grad_fn).__name__.startswith("MaxPool2D")
    torch.testing.assert_close(y.float(), F.max_pool2d(x, 2).float(), rtol=0, atol=0.01)


def test_convert_puts_fastdstns_max_pool_in_place_and_export_takes_it_back():
    plain = nn.Sequential(nn.Conv2d(2, 3, 3), nn.MaxPool2d(3, 2, 1, ceil_mode=True), nn.Flatten(), nn.Linear(75, 2))
    model = convert(plain, 1)
    assert type(model[1]) is MaxPool2d and ("1", "MaxPool2d", "MaxPool2d") in model.stn_conversion.converted
    x = torch.randn(2, 2, 10, 10)
    torch.testing.assert_close(model(x), plain(x), rtol=0, atol=0)
    restored = plain_model(model, rate=lambda name: 0.0)[1]
    assert type(restored) is nn.MaxPool2d and restored.extra_repr() == plain[1].extra_repr()
