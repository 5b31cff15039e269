"""fastdstn.ops.dense.triton_conv (implicit-GEMM forward, ATen backward) against fastdstn.ops.reference."""
import pytest
import torch

from fastdstn.ops.dense import triton_conv as K
from fastdstn.ops import reference as R

from accuracy import assert_within_bound, dense_terms, roundings
from kernel_checks import DEVICE, OPCHECK_UTILS, check, expected, grads, make

# (batch, c_in, c_out, size, kernel, stride, padding, dilation)
GEOMETRIES = [
    (2, 1, 16, 12, 5, 1, 2, 1),   # SimpleCNN conv1, smaller image
    (2, 3, 5, 9, 3, 1, 1, 1),     # VGG-style 3x3
    (2, 4, 6, 7, 5, 1, 2, 1),     # SimpleCNN conv2-style 5x5, K = 100: several K steps
    (1, 3, 4, 9, 3, 2, 1, 1),     # stride 2
    (1, 2, 3, 9, 3, 1, 0, 2),     # dilation 2, no padding
]


def conv_inputs(b, cin, cout, size, k, H, with_xt=True, with_br=True, needs=None):
    shapes = dict(x=(b, cin, size, size), xt=(b, cin, size, size), eps=(b, H), Wg=(cout, cin, k, k), bg=(cout,),
                  Wr=(cout, cin, k, k), br=(cout,), V=(2 * cout if with_br else cout, H))
    present = dict(xt=with_xt, br=with_br)
    return [make(shapes[n], requires_grad=needs is None or n in needs) if present.get(n, True) else None
            for n in ("x", "xt", "eps", "Wg", "bg", "Wr", "br", "V")]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "b{}c{}o{}s{}k{}st{}p{}d{}".format(*g))
@pytest.mark.parametrize("H,with_xt", [(1, True), (7, False), (30, True)])
def test_conv_dual(geometry, H, with_xt):
    b, cin, cout, size, k, stride, pad, dil = geometry
    args = conv_inputs(b, cin, cout, size, k, H, with_xt=with_xt)
    geo = ((stride, stride), (pad, pad), (dil, dil), 1)
    check("conv dual", lambda *a: K.stn_conv2d_dual(*a, *geo), lambda *a: R.stn_conv2d_dual(*a, *geo), args,
          dense_terms(args[0], args[3], args[7], geo))


@pytest.mark.parametrize("geometry", GEOMETRIES[:3], ids=lambda g: "b{}c{}o{}s{}k{}".format(*g))
@pytest.mark.parametrize("with_br", [True, False])
def test_conv_nonlinear(geometry, with_br):
    b, cin, cout, size, k, stride, pad, dil = geometry
    x, _, h, Wg, bg, Wr, br, V = conv_inputs(b, cin, cout, size, k, 7, with_br=with_br)
    args = (x, h, Wg, bg, Wr, br, V)
    geo = ((stride, stride), (pad, pad), (dil, dil), 1)
    check("conv", lambda *a: K.stn_conv2d(*a, *geo), lambda *a: R.stn_conv2d(*a, *geo), args,
          dense_terms(x, Wg, V, geo))


def test_conv_response_substep():
    args = conv_inputs(2, 4, 6, 7, 5, 7, needs={"xt", "Wr", "br", "V"})
    geo = ((1, 1), (2, 2), (1, 1), 1)
    got = K.stn_conv2d_dual(*args, *geo)
    cot = [torch.randn_like(got[0]), torch.randn_like(got[1])]
    g = grads(got, cot, args)
    assert g[0] is None and g[2] is None and g[3] is None and g[4] is None
    want, mag = expected(lambda *a: R.stn_conv2d_dual(*a, *geo), args, cot)
    assert_within_bound("conv response bwd", g, want, mag, dense_terms(args[0], args[3], args[7], geo))


def test_grouped_conv_falls_back_to_reference():
    args = conv_inputs(2, 4, 6, 7, 3, 2)
    args[3] = make((6, 2, 3, 3))
    args[5] = make((6, 2, 3, 3))
    geo = ((1, 1), (1, 1), (1, 1), 2)
    got, ref = K.stn_conv2d_dual(*args, *geo), R.stn_conv2d_dual(*args, *geo)
    torch.testing.assert_close(got[0], ref[0])
    torch.testing.assert_close(got[1], ref[1])


@pytest.mark.parametrize("requires_grad", [True, False])
def test_conv_opcheck(requires_grad):
    args = conv_inputs(1, 2, 3, 5, 3, 2, needs=None if requires_grad else set())
    x, xt, eps, Wg, bg, Wr, br, V = args
    geo = ([1, 1], [1, 1], [1, 1])
    torch.library.opcheck(torch.ops.fastdstn.stn_conv2d_dual_triton.default,
                          (x, xt, eps, Wg, bg, Wr, br, V, *geo, requires_grad), test_utils=OPCHECK_UTILS)
    torch.library.opcheck(torch.ops.fastdstn.stn_conv2d_triton.default,
                          (x, eps, Wg, bg, Wr, br, V, *geo, requires_grad), test_utils=OPCHECK_UTILS)


def test_conv_half_precision():
    """fp16 storage (the interpreter's fp16 tl.dot is exact): the bound adds 4 half-precision roundings (the
    outputs and the backward's stored products) to the fp32 accumulation's."""
    args = [t.detach().half().requires_grad_() for t in conv_inputs(2, 4, 6, 7, 5, 7)]
    geo = ((1, 1), (2, 2), (1, 1), 1)
    check("conv half", lambda *a: K.stn_conv2d_dual(*a, *geo), lambda *a: R.stn_conv2d_dual(*a, *geo), args,
          dense_terms(args[0], args[3], args[7], geo), rounding=roundings(4, torch.float16))


def test_conv_gradcheck_float64():
    args = [t.double().detach().requires_grad_() for t in conv_inputs(1, 2, 3, 5, 3, 2)]
    geo = ((1, 1), (1, 1), (1, 1), 1)
    # On a GPU ∂b_r and ∂V are summed with atomics, so two backwards differ in the last bits (H100: gradcheck's
    # reentrancy check failed at tolerance 0 while analytical and numerical gradients matched).
    nondet = 1e-12 if DEVICE == "cuda" else 0.0
    assert torch.autograd.gradcheck(lambda *a: K.stn_conv2d_dual(*a, *geo), args, fast_mode=True, nondet_tol=nondet)
    x, _, h, Wg, bg, Wr, br, V = args
    assert torch.autograd.gradcheck(lambda *a: K.stn_conv2d(*a, *geo), (x, h, Wg, bg, Wr, br, V), fast_mode=True,
                                    nondet_tol=nondet)


def test_double_backward_is_refused():
    x, xt, eps, Wg, bg, Wr, br, V = conv_inputs(1, 2, 3, 5, 3, 2)
    geo = ((1, 1), (1, 1), (1, 1), 1)
    y, yt = K.stn_conv2d_dual(x, xt, eps, Wg, bg, Wr, br, V, *geo)
    with pytest.raises(RuntimeError, match="double backward through fastdstn::stn_conv2d_dual_triton is not supported"):
        torch.autograd.grad(y.sum() + yt.sum(), (x, Wg), create_graph=True)
    y = K.stn_conv2d(x, eps, Wg, bg, Wr, br, V, *geo)
    with pytest.raises(RuntimeError, match="double backward through fastdstn::stn_conv2d_triton is not supported"):
        torch.autograd.grad(y.sum(), (x, Wg), create_graph=True)
