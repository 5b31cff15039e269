"""fastdstn.ops.dense.triton against fastdstn.ops.reference: forward and backward, fp32 (and float64)."""
import pytest
import torch

from fastdstn.ops.dense import triton as K
from fastdstn.ops import reference as R

from accuracy import assert_within_bound, dense_terms, roundings
from kernel_checks import DEVICE, OPCHECK_UTILS, check, expected, grads, make

# (rows, in, out): one shape inside a single pinned 32-tile, one multiple of it spanning tiles, and
# "weird" shapes that are multiples of nothing.
SHAPES = [(5, 9, 3), (64, 64, 32), (37, 50, 70)]


def dual_inputs(M, Kin, N, H, with_xt=True, with_bg=True, with_br=True, needs=None):
    names = ["x", "xt", "eps", "Wg", "bg", "Wr", "br", "V"]
    shapes = dict(x=(M, Kin), xt=(M, Kin), eps=(M, H), Wg=(N, Kin), bg=(N,), Wr=(N, Kin), br=(N,),
                  V=(2 * N if with_br else N, H))
    present = dict(xt=with_xt, bg=with_bg, br=with_br)
    out = []
    for n in names:
        if not present.get(n, True):
            out.append(None)
            continue
        rg = True if needs is None else n in needs
        out.append(make(shapes[n], requires_grad=rg))
    return out


def check_dual(args, name, rounding=0.0):
    x, _, _, Wg, _, _, _, V = args
    return check(name, K.stn_linear_dual, R.stn_linear_dual, args, dense_terms(x, Wg, V), rounding=rounding)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("H", [1, 7, 30])
@pytest.mark.parametrize("with_xt", [True, False], ids=["xt", "first_layer"])
def test_dual_forward_backward(shape, H, with_xt):
    check_dual(dual_inputs(*shape, H, with_xt=with_xt), f"dual{shape} H={H} xt={with_xt}")


@pytest.mark.parametrize("with_bg,with_br", [(False, True), (True, False), (False, False)])
def test_dual_without_biases(with_bg, with_br):
    check_dual(dual_inputs(37, 50, 70, 7, with_bg=with_bg, with_br=with_br), f"dual bg={with_bg} br={with_br}")


@pytest.mark.parametrize("with_xt", [True, False], ids=["xt", "first_layer"])
def test_dual_response_substep_grads_only(with_xt):
    """Response sub-step: only ẋ, W_r, b_r, V require grad; the rest must come back None."""
    args = dual_inputs(37, 50, 70, 7, with_xt=with_xt, needs={"xt", "Wr", "br", "V"})
    check_dual(args, "response sub-step")
    y, yt = K.stn_linear_dual(*args)
    g = grads([y, yt], [torch.ones_like(y), torch.ones_like(yt)], args)
    assert g[0] is None and g[2] is None and g[3] is None and g[4] is None


def test_dual_only_tangent_used():
    """The loss may use ẏ alone (∂y is then None inside the backward)."""
    args = dual_inputs(37, 50, 70, 7)
    y, yt = K.stn_linear_dual(*args)
    c = torch.randn_like(yt)
    want, mag = expected(R.stn_linear_dual, args, [None, c])
    assert_within_bound("tangent-only bwd", grads([yt], [c], args), want, mag, dense_terms(args[0], args[3], args[7]))


def test_dual_no_grad_saves_nothing():
    args = dual_inputs(37, 50, 70, 7, needs=set())
    with torch.no_grad():
        y, yt = K.stn_linear_dual(*args)
    want, mag = expected(R.stn_linear_dual, args)
    assert_within_bound("no-grad fwd", [y, yt], want, mag, dense_terms(args[0], args[3], args[7]))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("H", [1, 7, 30])
def test_nonlinear_forward_backward(shape, H):
    x, _, h, Wg, bg, Wr, br, V = dual_inputs(*shape, H)
    check("linear", K.stn_linear, R.stn_linear, (x, h, Wg, bg, Wr, br, V), dense_terms(x, Wg, V))


def test_nonlinear_without_br():
    x, _, h, Wg, bg, Wr, br, V = dual_inputs(37, 50, 70, 7, with_br=False)
    check("linear", K.stn_linear, R.stn_linear, (x, h, Wg, None, Wr, None, V), dense_terms(x, Wg, V))


@pytest.mark.skipif(DEVICE == "cuda", reason="the pinned test config's float64 tiles need 320 KB of shared memory "
                    "(an H100 has 227 KB); float64 is gradcheck-only and runs under the interpreter")
def test_gradcheck_float64():
    args = [t.double().detach().requires_grad_() for t in dual_inputs(3, 5, 4, 2)]
    assert torch.autograd.gradcheck(K.stn_linear_dual, args, fast_mode=True)
    x, _, h, Wg, bg, Wr, br, V = args
    assert torch.autograd.gradcheck(K.stn_linear, (x, h, Wg, bg, Wr, br, V), fast_mode=True)


def test_opcheck():
    x, xt, eps, Wg, bg, Wr, br, V = dual_inputs(5, 9, 3, 2)
    for save_u, rg in ((True, True), (False, False)):
        for t in (x, xt, eps, Wg, bg, Wr, br, V):
            t.requires_grad_(rg)
        torch.library.opcheck(torch.ops.fastdstn.stn_linear_dual_triton.default,
                              (x, xt, eps, Wg, bg, Wr, br, V, save_u), test_utils=OPCHECK_UTILS)
        torch.library.opcheck(torch.ops.fastdstn.stn_linear_triton.default, (x, eps, Wg, bg, Wr, br, V, save_u),
                              test_utils=OPCHECK_UTILS)
    torch.library.opcheck(torch.ops.fastdstn.stn_linear_dual_triton.default,
                          (x, None, eps, Wg, None, Wr, None, V[:3].contiguous(), False),
                          test_utils=OPCHECK_UTILS)


def test_backward_op_opcheck():
    x, xt, eps, Wg, bg, Wr, br, V = dual_inputs(5, 9, 3, 2, needs=set())
    u = torch.randn(5, 3, device=DEVICE)
    dy, dyt = torch.randn(5, 3, device=DEVICE), torch.randn(5, 3, device=DEVICE)
    for needs in ([True] * 8, [False, True, False, False, False, True, True, True]):
        torch.library.opcheck(torch.ops.fastdstn.stn_linear_backward_triton.default,
                              (dy, dyt, x, xt, eps, Wg, Wr, br, V, u, needs), test_utils=OPCHECK_UTILS)


def test_backend_dispatch():
    """fastdstn.ops routes to this module for CUDA tensors when the triton backend is chosen."""
    from fastdstn.ops import dispatch, triton_config
    assert dispatch.load("triton") is triton_config
    assert dispatch.supports(triton_config, "cuda") and not dispatch.supports(triton_config, "cpu")
    assert dispatch.implementation("triton", "stn_linear_dual") is K.stn_linear_dual
    if DEVICE == "cuda":  # pragma: no cover - GPU machines
        import fastdstn.ops as ops
        with ops.use_backend("triton"):
            assert dispatch.resolve("stn_linear_dual", torch.empty(0, device="cuda")) is K.stn_linear_dual


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dual_half_precision(dtype):
    """fp16 runs everywhere (the interpreter's fp16 tl.dot is exact); bf16 tl.dot returns garbage in the
    interpreter (Triton 3.8), so bf16 runs on a GPU only. The inputs are half already, the products
    accumulate in fp32: the bound adds one half-precision rounding per value stored in half along the chain
    (outputs, the cotangent's products in the backward), 4 of them."""
    if dtype == torch.bfloat16 and DEVICE != "cuda":
        pytest.skip("bf16 tl.dot is not exact under the Triton interpreter")
    args = [None if t is None else t.detach().to(dtype).requires_grad_() for t in dual_inputs(37, 50, 70, 7)]
    y, yt = check_dual(args, "half", rounding=roundings(4, dtype))
    assert y.dtype == dtype and yt.dtype == dtype


def test_noncontiguous_inputs():
    x, xt, eps, Wg, bg, Wr, br, V = dual_inputs(37, 50, 70, 7, needs=set())
    args = [x.t().contiguous().t(), xt, eps.t().contiguous().t(), Wg.t().contiguous().t(), bg, Wr, br,
            V.t().contiguous().t()]
    assert not args[0].is_contiguous()
    for a in args:
        if a is not None:
            a.requires_grad_()
    check_dual(args, "non-contiguous")


@pytest.mark.parametrize("M,Kin,N,H", [(0, 5, 3, 2), (4, 0, 3, 2), (4, 5, 3, 0)], ids=["no_rows", "no_inputs", "H0"])
def test_degenerate_shapes(M, Kin, N, H):
    check_dual(dual_inputs(M, Kin, N, H), f"degenerate {(M, Kin, N, H)}")


def test_double_backward_is_refused():
    """The backward op has no derivative: a backward that builds a graph is refused, naming the way out."""
    x, xt, eps, Wg, bg, Wr, br, V = dual_inputs(3, 5, 4, 2)
    y, yt = K.stn_linear_dual(x, xt, eps, Wg, bg, Wr, br, V)
    with pytest.raises(RuntimeError, match="double backward through fastdstn::stn_linear_dual_triton is not supported"):
        torch.autograd.grad(y.sum() + yt.sum(), (x, Wg), create_graph=True)
    y = K.stn_linear(x, eps, Wg, bg, Wr, br, V)
    with pytest.raises(RuntimeError, match=r"fastdstn::stn_linear_triton is not supported.*use_backend\("):
        torch.autograd.grad(y.sum(), (x, Wg), create_graph=True)
