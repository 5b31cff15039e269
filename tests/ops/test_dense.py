"""The dense ops (linear, conv2d) on every backend: the public ops on the reference backend, the compiled ops
(fastdstn.ops.dense.cpp: opcheck, gradcheck, float32 accuracy, what autograd saves; on CUDA too where a GPU is
there) and the Triton kernels (fastdstn.ops.dense.triton, triton_conv: against the float64 reference, on CPU
under TRITON_INTERPRET=1)."""
import os

import pytest
import torch

import fastdstn.ops as ops
from fastdstn.ops import reference as ref

from accuracy import assert_within_bound, dense_terms, roundings, tf32_roundings
from op_cases import (CONV_CASES, CPP_OPCHECK_UTILS, DEVICE, GRADCHECK_CONV_CASES, LINEAR_CASES, TRITON_OPCHECK_UTILS,
                      assert_accurate, check, compiled, conv_args, copied, cuda_only, dense_args, dense_inputs,
                      dense_op_terms, expected, fixed_cotangents, flat, grads, linear_args, make, needs_cpp,
                      needs_triton, nonlinear_args, outputs_and_grads, triton_module)

TLIN = triton_module("dense.triton")
TCONV = triton_module("dense.triton_conv")


# --------------------------------------------------------------------------- the public ops on the reference backend
@pytest.mark.usefixtures("reference_backend")
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("with_tangent", [True, False])
def test_linear_ops_gradcheck(bias, with_tangent):
    a = dense_args(bias=bias)
    xt = a["xt"] if with_tangent else None
    assert torch.autograd.gradcheck(lambda *t: ops.stn_linear(*t), (a["x"], a["h"], a["Wg"], a["bg"], a["Wr"], a["br"], a["V"]))
    assert torch.autograd.gradcheck(lambda *t: ops.stn_linear_dual(*t),
                                    (a["x"], xt, a["h"], a["Wg"], a["bg"], a["Wr"], a["br"], a["V"]))


@pytest.mark.usefixtures("reference_backend")
@pytest.mark.parametrize("bias", [True, False])
def test_conv_ops_gradcheck(bias):
    a = dense_args(B=2, n_in=2, n_out=3, bias=bias, conv=True)
    geometry = dict(stride=(2, 1), padding=(1, 0), dilation=1, groups=1)
    assert torch.autograd.gradcheck(lambda *t: ops.stn_conv2d(*t, **geometry),
                                    (a["x"], a["h"], a["Wg"], a["bg"], a["Wr"], a["br"], a["V"]))
    assert torch.autograd.gradcheck(lambda *t: ops.stn_conv2d_dual(*t, **geometry),
                                    (a["x"], a["xt"], a["h"], a["Wg"], a["bg"], a["Wr"], a["br"], a["V"]))


@pytest.mark.usefixtures("reference_backend")
@pytest.mark.parametrize("change, error, message", [
    (dict(x=torch.randn(4, 6)), ValueError, r"x: expected 5 input features"),
    (dict(h=torch.randn(4, 3)), ValueError, r"h: expected 2 hyperparameter columns"),
    (dict(h=torch.randn(3, 2)), ValueError, r"h: expected 4 rows"),
    (dict(Wr=torch.randn(3, 4)), ValueError, r"Wr: expected shape \(3, 5\)"),
    (dict(V=torch.randn(3, 2)), ValueError, r"V: expected 6 rows"),
    (dict(bg=torch.randn(4)), ValueError, r"bg: expected shape \(3,\)"),
    (dict(x=torch.randn(4, 5, dtype=torch.float32)), TypeError, r"expected dtype torch.float32"),
    (dict(x=torch.ones(4, 5, dtype=torch.int64)), TypeError, r"x: expected a floating-point tensor"),
    (dict(Wg=[[1.0]]), TypeError, r"Wg: expected a torch.Tensor, received list"),
])
def test_bad_linear_arguments_are_named(change, error, message):
    a = {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in dense_args().items()}
    a.update(change)
    with pytest.raises(error, match=message):
        ops.stn_linear(a["x"], a["h"], a["Wg"], a["bg"], a["Wr"], a["br"], a["V"])


# -------------------------------------------------------------------------------------------------- the compiled ops
def saved_activation_bytes(run, resident):
    """Bytes of the storages autograd saves during `run()`, leaving out those of `resident` tensors."""
    skip = {t.untyped_storage().data_ptr() for t in resident}
    seen = {}

    def pack(t):
        seen.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(n for ptr, n in seen.items() if ptr not in skip)


@needs_cpp
@pytest.mark.parametrize("case", LINEAR_CASES, ids=lambda c: f"{c[0]}x{c[1]}x{c[2]}-H{c[3]}-{c[7]}")
def test_cpp_opcheck_linear(case):
    args = linear_args(case, torch.float32)
    torch.library.opcheck(torch.ops.fastdstn.stn_linear_dual.default, args, test_utils=CPP_OPCHECK_UTILS)
    torch.library.opcheck(torch.ops.fastdstn.stn_linear.default, nonlinear_args(args), test_utils=CPP_OPCHECK_UTILS)


@needs_cpp
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{c[1]}to{c[2]}-k{c[5]}-g{c[6]}-{c[10]}")
def test_cpp_opcheck_conv(case):
    args, geo = conv_args(case, torch.float32)
    torch.library.opcheck(torch.ops.fastdstn.stn_conv2d_dual.default, (*args, *geo), test_utils=CPP_OPCHECK_UTILS)
    torch.library.opcheck(torch.ops.fastdstn.stn_conv2d.default, (*nonlinear_args(args), *geo),
                          test_utils=CPP_OPCHECK_UTILS)


@needs_cpp
# Exhaustive gradcheck on small shapes; fast mode (a random projection) where H = 30 makes V large.
@pytest.mark.parametrize("case", LINEAR_CASES[:3], ids=lambda c: f"H{c[3]}-{c[7]}")
def test_cpp_gradcheck_linear(case):
    args = linear_args(case)
    fast = case[3] >= 30
    assert torch.autograd.gradcheck(lambda *a: flat(compiled.stn_linear_dual(*a)), args, fast_mode=fast)
    assert torch.autograd.gradcheck(lambda *a: compiled.stn_linear(*a), nonlinear_args(args), fast_mode=fast)


@needs_cpp
@pytest.mark.parametrize("case", GRADCHECK_CONV_CASES, ids=lambda c: f"g{c[6]}-{c[10]}")
def test_cpp_gradcheck_conv(case):
    args, geo = conv_args(case)
    assert torch.autograd.gradcheck(lambda *a: flat(compiled.stn_conv2d_dual(*a, *geo)), args)
    assert torch.autograd.gradcheck(lambda *a: compiled.stn_conv2d(*a, *geo), nonlinear_args(args))


@needs_cpp
@pytest.mark.parametrize("case", LINEAR_CASES, ids=lambda c: f"{c[0]}x{c[1]}x{c[2]}-H{c[3]}-{c[7]}")
def test_cpp_float32_linear_vs_reference(case):
    args = linear_args(case, torch.float32)
    assert_accurate(compiled.stn_linear_dual, ref.stn_linear_dual, args, dense_op_terms(args))
    assert_accurate(compiled.stn_linear, ref.stn_linear, nonlinear_args(args), dense_op_terms(args))


@needs_cpp
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{c[1]}to{c[2]}-k{c[5]}-g{c[6]}-{c[10]}")
def test_cpp_float32_conv_vs_reference(case):
    args, geo = conv_args(case, torch.float32)
    assert_accurate(lambda *a: compiled.stn_conv2d_dual(*a, *geo), lambda *a: ref.stn_conv2d_dual(*a, *geo), args,
                     dense_op_terms(args, geo))
    assert_accurate(lambda *a: compiled.stn_conv2d(*a, *geo), lambda *a: ref.stn_conv2d(*a, *geo), nonlinear_args(args),
                     dense_op_terms(args, geo))


@needs_cpp
def test_cpp_response_substep_grads_and_frozen_primal():
    """Δ-STN's response sub-step: x, W_g, b_g frozen; y carries no gradient; the others match."""
    args = dense_inputs(16, 24, 20, 3, grads="response")
    y, yt = compiled.stn_linear_dual(*args)
    assert not y.requires_grad and yt.requires_grad
    y_ref, yt_ref = ref.stn_linear_dual(*args)
    w = torch.randn_like(yt)
    leaves = [a for a in args if a is not None and a.requires_grad]
    got = torch.autograd.grad(((y + yt) * w).sum(), leaves)
    want = torch.autograd.grad(((y_ref + yt_ref) * w).sum(), leaves)
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r)


@needs_cpp
def test_cpp_hyper_step_linear_saves_no_input_activation():
    """Weights frozen, h and x requiring grad (the hyper step): the linear ops keep u = x·W_rᵀ and [s|t] but
    not x or ẋ, which only the weights' gradients read."""
    B, n_in, n_out, H = 32, 64, 48, 3
    x = torch.randn(B, n_in, requires_grad=True)
    xt = torch.randn(B, n_in, requires_grad=True)
    h = torch.randn(B, H, requires_grad=True)
    Wg, Wr, bg, br = torch.randn(n_out, n_in), torch.randn(n_out, n_in), torch.randn(n_out), torch.randn(n_out)
    V = torch.randn(2 * n_out, H)
    resident = [x, xt, h, Wg, Wr, bg, br, V]
    u_and_st = (B * n_out + B * 2 * n_out) * 4
    assert saved_activation_bytes(lambda: compiled.stn_linear(x * 1, h, Wg, bg, Wr, br, V), resident) <= u_and_st + 64
    assert saved_activation_bytes(lambda: compiled.stn_linear_dual(x * 1, xt * 1, h, Wg, bg, Wr, br, V),
                                   resident) <= u_and_st + 64


@needs_cpp
@pytest.mark.parametrize("has_xt,has_bg,has_br", [(False, False, True), (True, False, False), (False, True, False)])
def test_cpp_grad_of_a_subset_with_absent_optionals(has_xt, has_bg, has_br):
    """needs_input_grad maps autograd's edges (absent optionals have none) back to argument positions."""
    args = dense_inputs(5, 6, 4, 3, has_xt=has_xt, has_bg=has_bg, has_br=has_br)
    y, yt = compiled.stn_linear_dual(*args)
    y_ref, yt_ref = ref.stn_linear_dual(*args)
    w = torch.randn_like(yt)
    x, xt, eps, Wg, bg, Wr, br, V = args
    for wanted in ([V], [Wr, eps], [Wg, x], [p for p in (bg, br, xt) if p is not None] or [Wr]):
        got = torch.autograd.grad(((y + yt) * w).sum(), wanted, retain_graph=True)
        want = torch.autograd.grad(((y_ref + yt_ref) * w).sum(), wanted, retain_graph=True)
        for g, r in zip(got, want):
            torch.testing.assert_close(g, r)


# ------------------------------------------------------------------------------- the compiled ops on CUDA (GPU only)
def dense_cases_on_cuda():
    for case in LINEAR_CASES:
        yield f"linear-{case[0]}x{case[1]}x{case[2]}-{case[7]}", linear_args(case), None
    for case in CONV_CASES:
        args, geo = conv_args(case)
        yield f"conv-{case[1]}to{case[2]}-k{case[5]}-g{case[6]}-{case[10]}", args, geo


def dense_fns(geo):
    if geo is None:
        return [(compiled.stn_linear_dual, ref.stn_linear_dual, False), (compiled.stn_linear, ref.stn_linear, True)]
    return [(lambda *a: compiled.stn_conv2d_dual(*a, *geo), lambda *a: ref.stn_conv2d_dual(*a, *geo), False),
            (lambda *a: compiled.stn_conv2d(*a, *geo), lambda *a: ref.stn_conv2d(*a, *geo), True)]


@needs_cpp
@cuda_only
@pytest.mark.parametrize("name,args,geo", list(dense_cases_on_cuda()), ids=lambda v: v if isinstance(v, str) else "")
def test_cuda_dense_ops_match_the_reference(name, args, geo):
    for fn_cpp, fn_ref, nonlinear in dense_fns(geo):
        inputs = nonlinear_args(args) if nonlinear else args
        args64 = copied(inputs, torch.float64, "cuda")
        cot = fixed_cotangents(fn_ref(*args64))
        want = outputs_and_grads(fn_ref, args64, cot)
        got = outputs_and_grads(fn_cpp, args64, cot)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)
        kinds = ("matmul",) if geo is None else ("matmul", "conv")
        assert_accurate(fn_cpp, fn_ref, inputs, dense_op_terms(args, geo), device="cuda",
                         rounding=sum(tf32_roundings(kind, "cuda") for kind in kinds))
        bf16 = outputs_and_grads(fn_cpp, copied(inputs, torch.bfloat16, "cuda"), cot)
        for b, w in zip(bf16, want):
            assert (b - w).abs().max().item() <= 0.05 * max(w.abs().max().item(), 1.0)


@needs_cpp
@cuda_only
@pytest.mark.parametrize("case", LINEAR_CASES[:2] + CONV_CASES[:2], ids=lambda c: f"{len(c)}-{c[0]}x{c[1]}x{c[2]}")
def test_cuda_dense_opcheck(case):
    if len(case) == len(LINEAR_CASES[0]):
        args = copied(linear_args(case), torch.float32, "cuda")
        torch.library.opcheck(torch.ops.fastdstn.stn_linear_dual.default, args, test_utils=CPP_OPCHECK_UTILS)
    else:
        args, geo = conv_args(case, torch.float32)
        torch.library.opcheck(torch.ops.fastdstn.stn_conv2d_dual.default, (*copied(args, torch.float32, "cuda"), *geo),
                              test_utils=CPP_OPCHECK_UTILS)


# ---------------------------------------------------------------------------------------------------- Triton: linear
# (rows, in, out): one shape inside a single pinned 32-tile, one multiple of it spanning tiles, and
# "weird" shapes that are multiples of nothing.
LINEAR_SHAPES = [(5, 9, 3), (64, 64, 32), (37, 50, 70)]


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
    return check(name, TLIN.stn_linear_dual, ref.stn_linear_dual, args, dense_terms(x, Wg, V), rounding=rounding)


@needs_triton
@pytest.mark.parametrize("shape", LINEAR_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("H", [1, 7, 30])
@pytest.mark.parametrize("with_xt", [True, False], ids=["xt", "first_layer"])
def test_triton_linear_dual_forward_backward(shape, H, with_xt):
    check_dual(dual_inputs(*shape, H, with_xt=with_xt), f"dual{shape} H={H} xt={with_xt}")


@needs_triton
@pytest.mark.parametrize("with_bg,with_br", [(False, True), (True, False), (False, False)])
def test_triton_linear_dual_without_biases(with_bg, with_br):
    check_dual(dual_inputs(37, 50, 70, 7, with_bg=with_bg, with_br=with_br), f"dual bg={with_bg} br={with_br}")


@needs_triton
@pytest.mark.parametrize("with_xt", [True, False], ids=["xt", "first_layer"])
def test_triton_linear_dual_response_substep_grads_only(with_xt):
    """Response sub-step: only ẋ, W_r, b_r, V require grad; the rest must come back None."""
    args = dual_inputs(37, 50, 70, 7, with_xt=with_xt, needs={"xt", "Wr", "br", "V"})
    check_dual(args, "response sub-step")
    y, yt = TLIN.stn_linear_dual(*args)
    g = grads([y, yt], [torch.ones_like(y), torch.ones_like(yt)], args)
    assert g[0] is None and g[2] is None and g[3] is None and g[4] is None


@needs_triton
def test_triton_linear_dual_only_tangent_used():
    """The loss may use ẏ alone (∂y is then None inside the backward)."""
    args = dual_inputs(37, 50, 70, 7)
    y, yt = TLIN.stn_linear_dual(*args)
    c = torch.randn_like(yt)
    want, mag = expected(ref.stn_linear_dual, args, [None, c])
    assert_within_bound("tangent-only bwd", grads([yt], [c], args), want, mag, dense_terms(args[0], args[3], args[7]))


@needs_triton
def test_triton_linear_dual_no_grad_saves_nothing():
    args = dual_inputs(37, 50, 70, 7, needs=set())
    with torch.no_grad():
        y, yt = TLIN.stn_linear_dual(*args)
    want, mag = expected(ref.stn_linear_dual, args)
    assert_within_bound("no-grad fwd", [y, yt], want, mag, dense_terms(args[0], args[3], args[7]))


@needs_triton
@pytest.mark.parametrize("shape", LINEAR_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("H", [1, 7, 30])
def test_triton_linear_nonlinear_forward_backward(shape, H):
    x, _, h, Wg, bg, Wr, br, V = dual_inputs(*shape, H)
    check("linear", TLIN.stn_linear, ref.stn_linear, (x, h, Wg, bg, Wr, br, V), dense_terms(x, Wg, V))


@needs_triton
def test_triton_linear_nonlinear_without_br():
    x, _, h, Wg, bg, Wr, br, V = dual_inputs(37, 50, 70, 7, with_br=False)
    check("linear", TLIN.stn_linear, ref.stn_linear, (x, h, Wg, None, Wr, None, V), dense_terms(x, Wg, V))


@needs_triton
@pytest.mark.skipif(DEVICE == "cuda", reason="the pinned test config's float64 tiles need 320 KB of shared memory "
                    "(an H100 has 227 KB); float64 is gradcheck-only and runs under the interpreter")
def test_triton_linear_gradcheck_float64():
    args = [t.double().detach().requires_grad_() for t in dual_inputs(3, 5, 4, 2)]
    assert torch.autograd.gradcheck(TLIN.stn_linear_dual, args, fast_mode=True)
    x, _, h, Wg, bg, Wr, br, V = args
    assert torch.autograd.gradcheck(TLIN.stn_linear, (x, h, Wg, bg, Wr, br, V), fast_mode=True)


@needs_triton
def test_triton_linear_opcheck():
    x, xt, eps, Wg, bg, Wr, br, V = dual_inputs(5, 9, 3, 2)
    for save_u, rg in ((True, True), (False, False)):
        for t in (x, xt, eps, Wg, bg, Wr, br, V):
            t.requires_grad_(rg)
        torch.library.opcheck(torch.ops.fastdstn.stn_linear_dual_triton.default,
                              (x, xt, eps, Wg, bg, Wr, br, V, save_u), test_utils=TRITON_OPCHECK_UTILS)
        torch.library.opcheck(torch.ops.fastdstn.stn_linear_triton.default, (x, eps, Wg, bg, Wr, br, V, save_u),
                              test_utils=TRITON_OPCHECK_UTILS)
    torch.library.opcheck(torch.ops.fastdstn.stn_linear_dual_triton.default,
                          (x, None, eps, Wg, None, Wr, None, V[:3].contiguous(), False),
                          test_utils=TRITON_OPCHECK_UTILS)


@needs_triton
def test_triton_linear_backward_op_opcheck():
    x, xt, eps, Wg, bg, Wr, br, V = dual_inputs(5, 9, 3, 2, needs=set())
    u = torch.randn(5, 3, device=DEVICE)
    dy, dyt = torch.randn(5, 3, device=DEVICE), torch.randn(5, 3, device=DEVICE)
    for needs in ([True] * 8, [False, True, False, False, False, True, True, True]):
        torch.library.opcheck(torch.ops.fastdstn.stn_linear_backward_triton.default,
                              (dy, dyt, x, xt, eps, Wg, Wr, br, V, u, needs), test_utils=TRITON_OPCHECK_UTILS)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_linear_dual_half_precision(dtype):
    """fp16 runs everywhere (the interpreter's fp16 tl.dot is exact); bf16 tl.dot returns garbage in the
    interpreter (Triton 3.8), so bf16 runs on a GPU only. The inputs are half already, the products
    accumulate in fp32: the bound adds one half-precision rounding per value stored in half along the chain
    (outputs, the cotangent's products in the backward), 4 of them."""
    if dtype == torch.bfloat16 and DEVICE != "cuda":
        pytest.skip("bf16 tl.dot is not exact under the Triton interpreter")
    args = [None if t is None else t.detach().to(dtype).requires_grad_() for t in dual_inputs(37, 50, 70, 7)]
    y, yt = check_dual(args, "half", rounding=roundings(4, dtype))
    assert y.dtype == dtype and yt.dtype == dtype


@needs_triton
def test_triton_linear_noncontiguous_inputs():
    x, xt, eps, Wg, bg, Wr, br, V = dual_inputs(37, 50, 70, 7, needs=set())
    args = [x.t().contiguous().t(), xt, eps.t().contiguous().t(), Wg.t().contiguous().t(), bg, Wr, br,
            V.t().contiguous().t()]
    assert not args[0].is_contiguous()
    for a in args:
        if a is not None:
            a.requires_grad_()
    check_dual(args, "non-contiguous")


@needs_triton
@pytest.mark.parametrize("M,Kin,N,H", [(0, 5, 3, 2), (4, 0, 3, 2), (4, 5, 3, 0)], ids=["no_rows", "no_inputs", "H0"])
def test_triton_linear_degenerate_shapes(M, Kin, N, H):
    check_dual(dual_inputs(M, Kin, N, H), f"degenerate {(M, Kin, N, H)}")


@needs_triton
def test_triton_linear_double_backward_is_refused():
    """The backward op has no derivative: a backward that builds a graph is refused, naming the way out."""
    x, xt, eps, Wg, bg, Wr, br, V = dual_inputs(3, 5, 4, 2)
    y, yt = TLIN.stn_linear_dual(x, xt, eps, Wg, bg, Wr, br, V)
    with pytest.raises(RuntimeError, match="double backward through fastdstn::stn_linear_dual_triton is not supported"):
        torch.autograd.grad(y.sum() + yt.sum(), (x, Wg), create_graph=True)
    y = TLIN.stn_linear(x, eps, Wg, bg, Wr, br, V)
    with pytest.raises(RuntimeError, match=r"fastdstn::stn_linear_triton is not supported.*use_backend\("):
        torch.autograd.grad(y.sum(), (x, Wg), create_graph=True)


# ---------------------------------------------------------------------------------------------------- Triton: conv2d
# (batch, c_in, c_out, size, kernel, stride, padding, dilation)
CONV_GEOMETRIES = [
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


@needs_triton
@pytest.mark.parametrize("geometry", CONV_GEOMETRIES, ids=lambda g: "b{}c{}o{}s{}k{}st{}p{}d{}".format(*g))
@pytest.mark.parametrize("H,with_xt", [(1, True), (7, False), (30, True)])
def test_triton_conv_dual(geometry, H, with_xt):
    b, cin, cout, size, k, stride, pad, dil = geometry
    args = conv_inputs(b, cin, cout, size, k, H, with_xt=with_xt)
    geo = ((stride, stride), (pad, pad), (dil, dil), 1)
    check("conv dual", lambda *a: TCONV.stn_conv2d_dual(*a, *geo), lambda *a: ref.stn_conv2d_dual(*a, *geo), args,
          dense_terms(args[0], args[3], args[7], geo))


@needs_triton
@pytest.mark.parametrize("geometry", CONV_GEOMETRIES[:3], ids=lambda g: "b{}c{}o{}s{}k{}".format(*g))
@pytest.mark.parametrize("with_br", [True, False])
def test_triton_conv_nonlinear(geometry, with_br):
    b, cin, cout, size, k, stride, pad, dil = geometry
    x, _, h, Wg, bg, Wr, br, V = conv_inputs(b, cin, cout, size, k, 7, with_br=with_br)
    args = (x, h, Wg, bg, Wr, br, V)
    geo = ((stride, stride), (pad, pad), (dil, dil), 1)
    check("conv", lambda *a: TCONV.stn_conv2d(*a, *geo), lambda *a: ref.stn_conv2d(*a, *geo), args,
          dense_terms(x, Wg, V, geo))


@needs_triton
def test_triton_conv_response_substep():
    args = conv_inputs(2, 4, 6, 7, 5, 7, needs={"xt", "Wr", "br", "V"})
    geo = ((1, 1), (2, 2), (1, 1), 1)
    got = TCONV.stn_conv2d_dual(*args, *geo)
    cot = [torch.randn_like(got[0]), torch.randn_like(got[1])]
    g = grads(got, cot, args)
    assert g[0] is None and g[2] is None and g[3] is None and g[4] is None
    want, mag = expected(lambda *a: ref.stn_conv2d_dual(*a, *geo), args, cot)
    assert_within_bound("conv response bwd", g, want, mag, dense_terms(args[0], args[3], args[7], geo))


@needs_triton
def test_triton_conv_grouped_conv_falls_back_to_reference():
    args = conv_inputs(2, 4, 6, 7, 3, 2)
    args[3] = make((6, 2, 3, 3))
    args[5] = make((6, 2, 3, 3))
    geo = ((1, 1), (1, 1), (1, 1), 2)
    got, want = TCONV.stn_conv2d_dual(*args, *geo), ref.stn_conv2d_dual(*args, *geo)
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])


@needs_triton
@pytest.mark.parametrize("requires_grad", [True, False])
def test_triton_conv_opcheck(requires_grad):
    args = conv_inputs(1, 2, 3, 5, 3, 2, needs=None if requires_grad else set())
    x, xt, eps, Wg, bg, Wr, br, V = args
    geo = ([1, 1], [1, 1], [1, 1])
    torch.library.opcheck(torch.ops.fastdstn.stn_conv2d_dual_triton.default,
                          (x, xt, eps, Wg, bg, Wr, br, V, *geo, requires_grad), test_utils=TRITON_OPCHECK_UTILS)
    torch.library.opcheck(torch.ops.fastdstn.stn_conv2d_triton.default,
                          (x, eps, Wg, bg, Wr, br, V, *geo, requires_grad), test_utils=TRITON_OPCHECK_UTILS)


@needs_triton
def test_triton_conv_half_precision():
    """fp16 storage (the interpreter's fp16 tl.dot is exact): the bound adds 4 half-precision roundings (the
    outputs and the backward's stored products) to the fp32 accumulation's."""
    args = [t.detach().half().requires_grad_() for t in conv_inputs(2, 4, 6, 7, 5, 7)]
    geo = ((1, 1), (2, 2), (1, 1), 1)
    check("conv half", lambda *a: TCONV.stn_conv2d_dual(*a, *geo), lambda *a: ref.stn_conv2d_dual(*a, *geo), args,
          dense_terms(args[0], args[3], args[7], geo), rounding=roundings(4, torch.float16))


@needs_triton
def test_triton_conv_gradcheck_float64():
    args = [t.double().detach().requires_grad_() for t in conv_inputs(1, 2, 3, 5, 3, 2)]
    geo = ((1, 1), (1, 1), (1, 1), 1)
    # On a GPU ∂b_r and ∂V are summed with atomics, so two backwards differ in the last bits (H100: gradcheck's
    # reentrancy check failed at tolerance 0 while analytical and numerical gradients matched).
    nondet = 1e-12 if DEVICE == "cuda" else 0.0
    assert torch.autograd.gradcheck(lambda *a: TCONV.stn_conv2d_dual(*a, *geo), args, fast_mode=True, nondet_tol=nondet)
    x, _, h, Wg, bg, Wr, br, V = args
    assert torch.autograd.gradcheck(lambda *a: TCONV.stn_conv2d(*a, *geo), (x, h, Wg, bg, Wr, br, V), fast_mode=True,
                                    nondet_tol=nondet)


@needs_triton
def test_triton_conv_double_backward_is_refused():
    x, xt, eps, Wg, bg, Wr, br, V = conv_inputs(1, 2, 3, 5, 3, 2)
    geo = ((1, 1), (1, 1), (1, 1), 1)
    y, yt = TCONV.stn_conv2d_dual(x, xt, eps, Wg, bg, Wr, br, V, *geo)
    with pytest.raises(RuntimeError, match="double backward through fastdstn::stn_conv2d_dual_triton is not supported"):
        torch.autograd.grad(y.sum() + yt.sum(), (x, Wg), create_graph=True)
    y = TCONV.stn_conv2d(x, eps, Wg, bg, Wr, br, V, *geo)
    with pytest.raises(RuntimeError, match="double backward through fastdstn::stn_conv2d_triton is not supported"):
        torch.autograd.grad(y.sum(), (x, Wg), create_graph=True)
