"""Max pooling in the dual pass (fastdstn.nn.pooling): primal, tangent and the tangent's gradient against PyTorch's
forward-mode rule in float64, with ties (the first maximum of a window wins on both routes), overlapping windows,
padding, dilation and ceil_mode; the fallbacks; and the routing of nn.MaxPool2d inside dual_routes()."""
import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn

from fastdstn.nn import dual_routes, pooling

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
        out, indices = pooling.max_pool2d(fwAD.make_dual(x, xt), 2, return_indices=True)
        assert indices.shape == (2, 3, 4, 4)
        for d in (fwAD.make_dual(x[0], xt[0]),                                          # unbatched (C, H, W)
                  fwAD.make_dual(x.contiguous(memory_format=torch.channels_last), xt)):  # already channels-last
            _, yt = fwAD.unpack_dual(pooling.max_pool2d(d, 2))
            assert type(yt.grad_fn).__name__ != "_MaxPoolTangentBackward"


def test_dual_routes_send_max_pool_modules_to_the_route():
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.MaxPool2d(2)).requires_grad_(False)
    xt = torch.randn(2, 2, 8, 8, requires_grad=True)
    with fwAD.dual_level(), dual_routes():
        _, yt = fwAD.unpack_dual(model(fwAD.make_dual(torch.randn(2, 2, 8, 8), xt)))
    assert type(yt.grad_fn).__name__ == "_MaxPoolTangentBackward"
