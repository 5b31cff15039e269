"""The dense ops (linear, conv2d) on every backend, one set of tests parametrised over backend and device
(op_cases.backends: the public ops on the reference backend, the compiled ops on CPU and CUDA, the Triton kernels
on a GPU or under TRITON_INTERPRET=1): gradcheck, accuracy against the float64 reference, the response
sub-step's gradients, opcheck, and what each backend keeps or refuses."""
import pytest
import torch

import fastdstn.ops as ops
from fastdstn.ops import reference as ref

from accuracy import assert_within_bound, roundings, tf32_roundings
from op_cases import (CONV_CASES, GEOMETRY, GRADCHECK_CONV_CASES, LINEAR_CASES, backends, check, conv_args,
                      copied, dense_inputs, dense_op_terms, expected, fixed_cotangents, flat, grads, linear_args,
                      named, nonlinear_args, outputs_and_grads, triton_module)

TCONV = triton_module("dense.triton_conv")


def linear_id(case):
    B, n_in, n_out, H, has_bg, has_br, has_xt, grads_, contiguous = case
    return (f"{B}x{n_in}x{n_out}-H{H}-{grads_}" + ("" if has_bg else "-no_bg") + ("" if has_br else "-no_br")
            + ("" if has_xt else "-no_xt") + ("" if contiguous else "-strided"))


def conv_id(case):
    B, c_in, c_out, H, hw, k, geo, has_bg, has_br, has_xt, grads_, contiguous = case
    return (f"b{B}-{c_in}to{c_out}-H{H}-s{hw}-k{k}-{geo}-{grads_}" + ("" if has_bg else "-no_bg")
            + ("" if has_br else "-no_br") + ("" if has_xt else "-no_xt") + ("" if contiguous else "-strided"))


# Gradcheck: the first three accuracy cases, and each combination of biases and ẋ at (4, 5, 3, H = 2).
GRADCHECK_LINEAR_CASES = LINEAR_CASES[:3] + [(4, 5, 3, 2, bias, bias, with_xt, "all", True)
                                             for bias in (True, False) for with_xt in (True, False)]
GRADCHECK_CONV_CASES_ALL = GRADCHECK_CONV_CASES + [
    (2, 2, 3, 2, 6, 3, "strided", True, True, True, "all", True),
    (2, 2, 3, 2, 6, 3, "strided", False, False, True, "all", True),
    (1, 2, 3, 2, 5, 3, "unit", True, True, True, "all", True),
    (1, 4, 4, 2, 1, 3, "pad2", True, True, True, "all", True),   # batched [x; ẋ] (below)
]

# Accuracy: besides LINEAR_CASES, shapes inside a single pinned 32-tile of the Triton kernels, a multiple of it
# spanning tiles, and "weird" shapes that are multiples of nothing; at H = 1, 7, 30, with and without ẋ; without
# each bias; degenerate shapes; strided inputs; Δ-STN's response sub-step.
ACCURACY_LINEAR_CASES = LINEAR_CASES + [
    (rows, n_in, n_out, H, True, True, with_xt, "all", True)
    for rows, n_in, n_out in [(5, 9, 3), (64, 64, 32), (37, 50, 70)] for H in (1, 7, 30) for with_xt in (True, False)
] + [(37, 50, 70, 7, has_bg, has_br, True, "all", True) for has_bg, has_br in [(False, True), (True, False),
                                                                              (False, False)]] + [
    (0, 5, 3, 2, True, True, True, "all", True), (4, 0, 3, 2, True, True, True, "all", True),
    (4, 5, 3, 0, True, True, True, "all", True),
    (37, 50, 70, 7, True, True, True, "all", False),
    (37, 50, 70, 7, True, True, True, "response", True), (37, 50, 70, 7, True, True, False, "response", True),
]
# (B, C_in, C_out, H, HW, k, geometry, ...): besides CONV_CASES, SimpleCNN's conv1 (smaller image) and conv2-style
# 5x5 (K = 100: several K steps), a VGG-style 3x3, stride 2 and dilation 2, at H = 1, 7, 30, with and without ẋ
# and b_r; layers with more weights than input elements.
ACCURACY_CONV_CASES = CONV_CASES + [
    (B, c_in, c_out, H, hw, k, geo, True, True, with_xt, "all", True)
    for B, c_in, c_out, hw, k, geo in [(2, 1, 16, 12, 5, "pad2"), (2, 3, 5, 9, 3, "unit"), (2, 4, 6, 7, 5, "pad2"),
                                        (1, 3, 4, 9, 3, "stride2"), (1, 2, 3, 9, 3, "dilated")]
    for H, with_xt in [(1, True), (7, False), (30, True)]
] + [(2, c_in, c_out, 7, hw, k, geo, True, False, True, "all", True)
     for c_in, c_out, hw, k, geo in [(1, 16, 12, 5, "pad2"), (3, 5, 9, 3, "unit"), (4, 6, 7, 5, "pad2")]] + [
    (2, 4, 6, 7, 7, 5, "pad2", True, True, True, "response", True),
] + [  # at least 4x as many weights as input elements: the CPU op convolves [x; ẋ] as one batch (dense_ops.cpp)
    (2, 8, 8, 7, 2, 3, "pad2", True, True, True, "all", True),
    (2, 16, 16, 7, 2, 3, "stride2", False, True, True, "response", True),
]


def skip_float64_triton(backend, dtype):
    if backend.name == "triton" and dtype == torch.float64 and backend.device == "cuda":
        pytest.skip("the pinned test config's float64 tiles need 320 KB of shared memory (an H100 has 227 KB); "
                    "Triton float64 runs under the interpreter")


def tf32(backend, kinds):
    """The TF32 operand roundings of the compiled CUDA ops' products (the Triton kernels use IEEE float32)."""
    return sum(tf32_roundings(kind, backend.device) for kind in kinds) if backend.name == "cpp" else 0.0


def conv_ops(backend, geo):
    return [(lambda *a: backend.stn_conv2d_dual(*a, *geo), lambda *a: ref.stn_conv2d_dual(*a, *geo), False),
            (lambda *a: backend.stn_conv2d(*a, *geo), lambda *a: ref.stn_conv2d(*a, *geo), True)]


def linear_ops(backend):
    return [(backend.stn_linear_dual, ref.stn_linear_dual, False), (backend.stn_linear, ref.stn_linear, True)]


# -------------------------------------------------------------------------------------------------------- gradcheck
@pytest.mark.parametrize("case", GRADCHECK_LINEAR_CASES, ids=linear_id)
@pytest.mark.parametrize("backend", backends())
def test_linear_gradcheck(backend, case):
    skip_float64_triton(backend, torch.float64)
    args = linear_args(case, device=backend.device)
    # Exhaustive on small shapes; fast mode (a random projection) where H = 30 makes V large, and for Triton.
    fast = case[3] >= 30 or backend.name == "triton"
    assert torch.autograd.gradcheck(lambda *a: flat(backend.stn_linear_dual(*a)), args, fast_mode=fast)
    assert torch.autograd.gradcheck(lambda *a: backend.stn_linear(*a), nonlinear_args(args), fast_mode=fast)


@pytest.mark.parametrize("case", GRADCHECK_CONV_CASES_ALL, ids=conv_id)
@pytest.mark.parametrize("backend", backends())
def test_conv_gradcheck(backend, case):
    args, geo = conv_args(case, device=backend.device)
    # On a GPU the Triton kernels sum ∂b_r and ∂V with atomics, so two backwards differ in the last bits (H100:
    # gradcheck's reentrancy check failed at tolerance 0 while analytical and numerical gradients matched).
    nondet = 1e-12 if backend.name == "triton" and backend.device == "cuda" else 0.0
    fast = backend.name == "triton"
    assert torch.autograd.gradcheck(lambda *a: flat(backend.stn_conv2d_dual(*a, *geo)), args, fast_mode=fast,
                                    nondet_tol=nondet)
    assert torch.autograd.gradcheck(lambda *a: backend.stn_conv2d(*a, *geo), nonlinear_args(args), fast_mode=fast,
                                    nondet_tol=nondet)


# ---------------------------------------------------------------------------------- accuracy against float64
ACCURACY_DTYPES = [pytest.param(dtype, id=str(dtype).split(".")[1])
                   for dtype in (torch.float32, torch.float64, torch.bfloat16)]


def check_in(dtype, backend, name, fn, fn_ref, args, n, kinds):
    """`check` in float32 (TF32 operand roundings where the compiled CUDA ops allow them) and float64 (its own
    unit roundoff); bf16 (the compiled CUDA ops only) within 5% of the largest value, a loose check of that
    path (Triton's half precision: test_dense_half_precision)."""
    if dtype == torch.float64 and backend.name == "triton":
        pytest.skip("Triton float64 is checked by gradcheck")
    if dtype == torch.bfloat16 and (backend.name, backend.device) != ("cpp", "cuda"):
        pytest.skip("bf16 here is the compiled CUDA ops' (the CPU loops compute float32 and float64; Triton's: "
                    "test_dense_half_precision)")
    if dtype != torch.bfloat16:
        check(name, fn, fn_ref, copied(args, dtype, backend.device), n, rounding=tf32(backend, kinds),
              accumulate=dtype)
        return
    inputs64 = copied(args, torch.float64, backend.device)
    cot = fixed_cotangents(fn_ref(*inputs64))
    for b, w in zip(outputs_and_grads(fn, copied(args, dtype, backend.device), cot),
                    outputs_and_grads(fn_ref, inputs64, cot)):
        assert (b - w).abs().max().item() <= 0.05 * max(w.abs().max().item(), 1.0)


@pytest.mark.parametrize("dtype", ACCURACY_DTYPES)
@pytest.mark.parametrize("case", ACCURACY_LINEAR_CASES, ids=linear_id)
@pytest.mark.parametrize("backend", backends("cpp", "triton"))
def test_linear_matches_the_float64_reference(backend, case, dtype):
    args = linear_args(case)
    for fn, fn_ref, nonlinear in linear_ops(backend):
        check_in(dtype, backend, "linear", fn, fn_ref, nonlinear_args(args) if nonlinear else args,
                 dense_op_terms(args), ("matmul",))


@pytest.mark.parametrize("dtype", ACCURACY_DTYPES)
@pytest.mark.parametrize("case", ACCURACY_CONV_CASES, ids=conv_id)
@pytest.mark.parametrize("backend", backends("cpp", "triton"))
def test_conv_matches_the_float64_reference(backend, case, dtype):
    args, geo = conv_args(case)
    for fn, fn_ref, nonlinear in conv_ops(backend, geo):
        check_in(dtype, backend, "conv", fn, fn_ref, nonlinear_args(args) if nonlinear else args,
                 dense_op_terms(args, geo), ("matmul", "conv"))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("op", ["linear", "conv"])
@pytest.mark.parametrize("backend", backends("triton"))
def test_dense_half_precision(backend, op, dtype):
    """Half-precision storage, float32 accumulation: fp16 everywhere (the interpreter's fp16 tl.dot is exact), bf16
    on a GPU only (bf16 tl.dot returns garbage in the interpreter, Triton 3.8). The bound adds one half-precision
    rounding per value stored in half along the chain (outputs, the backward's stored products), 4 of them."""
    if backend.interpreted and dtype == torch.bfloat16:
        pytest.skip("bf16 tl.dot is not exact under the Triton interpreter")
    if op == "linear":
        args, geo = linear_args((37, 50, 70, 7, True, True, True, "all", True), dtype, backend.device), None
        fn, fn_ref = backend.stn_linear_dual, ref.stn_linear_dual
    else:
        args, geo = conv_args((2, 4, 6, 7, 7, 5, "pad2", True, True, True, "all", True), dtype, backend.device)
        fn, fn_ref = (lambda *a: backend.stn_conv2d_dual(*a, *geo)), (lambda *a: ref.stn_conv2d_dual(*a, *geo))
    y, yt = check(f"{op} half", fn, fn_ref, args, dense_op_terms(args, geo), rounding=roundings(4, dtype))
    assert y.dtype == dtype and yt.dtype == dtype


# ------------------------------------------------------------------------------------- Δ-STN's response sub-step
@pytest.mark.parametrize("op", ["linear", "conv"])
@pytest.mark.parametrize("backend", backends())
def test_response_substep_gradients_and_frozen_primal(backend, op):
    """Δ-STN's response sub-step: x, W_g, b_g frozen, so the gradients of x, ε, W_g, b_g are None (and y carries
    none where the op records it apart from ẏ); those of ẋ, W_r, b_r, V match the reference."""
    if op == "linear":
        args, geo = dense_inputs(16, 24, 20, 3, dtype=torch.float32, device=backend.device, grads="response"), None
        fn, fn_ref = backend.stn_linear_dual, ref.stn_linear_dual
    else:
        args, geo = conv_args((2, 4, 6, 7, 7, 5, "pad2", True, True, True, "response", True), torch.float32,
                              backend.device)
        fn, fn_ref = (lambda *a: backend.stn_conv2d_dual(*a, *geo)), (lambda *a: ref.stn_conv2d_dual(*a, *geo))
    y, yt = fn(*args)
    # The Triton op is one autograd node for (y, ẏ), so y is marked as requiring grad; what reaches the frozen
    # inputs is checked below on every backend.
    assert yt.requires_grad and (backend.name == "triton" or not y.requires_grad)
    cot = fixed_cotangents([y, yt])
    got = grads([y, yt], cot, args)
    assert got[0] is None and got[2] is None and got[3] is None and got[4] is None
    want, mag = expected(fn_ref, args, cot)
    assert_within_bound(f"{op} response bwd", got, want, mag, dense_op_terms(args, geo))


@pytest.mark.parametrize("backend", backends())
def test_linear_loss_on_the_tangent_alone(backend):
    """The loss may use ẏ alone (∂y is then None inside the backward)."""
    args = dense_inputs(37, 50, 70, 7, dtype=torch.float32, device=backend.device)
    _, yt = backend.stn_linear_dual(*args)
    c = fixed_cotangents(yt)[0]
    want, mag = expected(ref.stn_linear_dual, args, [None, c])
    assert_within_bound("tangent-only bwd", grads([yt], [c], args), want, mag, dense_op_terms(args))


@pytest.mark.parametrize("backend", backends())
def test_linear_without_grad(backend):
    args = dense_inputs(37, 50, 70, 7, dtype=torch.float32, device=backend.device, grads="none")
    with torch.no_grad():
        y, yt = backend.stn_linear_dual(*args)
    want, mag = expected(ref.stn_linear_dual, args)
    assert_within_bound("no-grad fwd", [y, yt], want, mag, dense_op_terms(args))


@pytest.mark.parametrize("has_xt,has_bg,has_br", [(False, False, True), (True, False, False), (False, True, False)])
@pytest.mark.parametrize("backend", backends())
def test_grad_of_a_subset_with_absent_optionals(backend, has_xt, has_bg, has_br):
    """needs_input_grad maps autograd's edges (absent optionals have none) back to argument positions."""
    args = dense_inputs(5, 6, 4, 3, dtype=torch.float32, device=backend.device, has_xt=has_xt, has_bg=has_bg,
                        has_br=has_br)
    y, yt = backend.stn_linear_dual(*args)
    c = fixed_cotangents(yt)[0]
    x, xt, eps, Wg, bg, Wr, br, V = args
    for wanted in ([V], [Wr, eps], [Wg, x], [p for p in (bg, br, xt) if p is not None] or [Wr]):
        got = torch.autograd.grad(((y + yt) * c).sum(), wanted, retain_graph=True)
        exact, mag = expected(lambda *a: sum(ref.stn_linear_dual(*a)), args, [c])
        picked = [next(e for e, a in zip(exact, args) if a is w) for w in wanted]
        picked_mag = [next(m for m, a in zip(mag, args) if a is w) for w in wanted]
        assert_within_bound("subset grads", list(got), picked, picked_mag, dense_op_terms(args))


# ----------------------------------------------------------------------------------------------------------- opcheck
# LINEAR_CASES and, at (5, 9, 3, H = 2), every tensor requiring grad, none, and none with the optionals absent.
OPCHECK_LINEAR_CASES = LINEAR_CASES + [(5, 9, 3, 2, True, True, True, "all", True),
                                       (5, 9, 3, 2, True, True, True, "none", True),
                                       (5, 9, 3, 2, False, False, False, "none", True)]


def opcheck_args(backend, args):
    """The op's arguments: the Triton ops take one more, whether to save u for the backward."""
    return (*args, any(a is not None and a.requires_grad for a in args)) if backend.name == "triton" else args


@pytest.mark.parametrize("case", OPCHECK_LINEAR_CASES, ids=linear_id)
@pytest.mark.parametrize("backend", backends("cpp", "triton"))
def test_linear_opcheck(backend, case):
    args = linear_args(case, torch.float32, backend.device)
    torch.library.opcheck(backend.registered("stn_linear_dual"), opcheck_args(backend, args),
                          test_utils=backend.opcheck_utils)
    torch.library.opcheck(backend.registered("stn_linear"), opcheck_args(backend, nonlinear_args(args)),
                          test_utils=backend.opcheck_utils)


@pytest.mark.parametrize("case", CONV_CASES + [(1, 2, 3, 2, 5, 3, "unit", True, True, True, grads_, True)
                                               for grads_ in ("all", "none")]
                         + [(2, 8, 8, 7, 2, 3, "pad2", True, True, True, "all", True)], ids=conv_id)
@pytest.mark.parametrize("backend", backends("cpp", "triton"))
def test_conv_opcheck(backend, case):
    args, geo = conv_args(case, torch.float32, backend.device)
    if backend.name == "triton" and geo[3] != 1:
        pytest.skip("the Triton conv op has no groups argument (grouped convolutions run the reference)")
    geometry = geo if backend.name == "cpp" else geo[:3]
    dual, nonlinear = opcheck_args(backend, args), opcheck_args(backend, nonlinear_args(args))
    if backend.name == "triton":   # the save-u flag goes after the geometry
        dual, nonlinear = (*dual[:-1], *geometry, dual[-1]), (*nonlinear[:-1], *geometry, nonlinear[-1])
    else:
        dual, nonlinear = (*dual, *geometry), (*nonlinear, *geometry)
    torch.library.opcheck(backend.registered("stn_conv2d_dual"), dual, test_utils=backend.opcheck_utils)
    torch.library.opcheck(backend.registered("stn_conv2d"), nonlinear, test_utils=backend.opcheck_utils)


@pytest.mark.parametrize("backend", backends("triton"))
def test_linear_backward_op_opcheck(backend):
    """The Triton backward is an op of its own (the compiled backwards are checked through autograd's)."""
    x, xt, eps, Wg, bg, Wr, br, V = dense_inputs(5, 9, 3, 2, dtype=torch.float32, device=backend.device,
                                                 grads="none")
    u, dy, dyt = (t.to(backend.device) for t in (torch.randn(5, 3), torch.randn(5, 3), torch.randn(5, 3)))
    for needs in ([True] * 8, [False, True, False, False, False, True, True, True]):
        torch.library.opcheck(torch.ops.fastdstn.stn_linear_backward_triton.default,
                              (dy, dyt, x, xt, eps, Wg, Wr, br, V, u, needs), test_utils=backend.opcheck_utils)


# ----------------------------------------------------------------------------------- what each backend keeps or refuses
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


@pytest.mark.parametrize("backend", backends("cpp"))
def test_hyper_step_linear_saves_no_input_activation(backend):
    """Weights frozen, h and x requiring grad (the hyper step): the compiled linear ops keep u = x·W_rᵀ and
    [s|t] but not x or ẋ, which only the weights' gradients read."""
    B, n_in, n_out, H = 32, 64, 48, 3
    x, xt, h, Wg, bg, Wr, br, V = dense_inputs(B, n_in, n_out, H, dtype=torch.float32, device=backend.device,
                                               grads={"x", "xt", "eps"})
    resident = [x, xt, h, Wg, Wr, bg, br, V]
    u_and_st = (B * n_out + B * 2 * n_out) * 4
    assert saved_activation_bytes(lambda: backend.stn_linear(x * 1, h, Wg, bg, Wr, br, V), resident) <= u_and_st + 64
    assert saved_activation_bytes(lambda: backend.stn_linear_dual(x * 1, xt * 1, h, Wg, bg, Wr, br, V),
                                  resident) <= u_and_st + 64


@pytest.mark.parametrize("backend", backends("triton"))
def test_grouped_conv_falls_back_to_the_reference(backend):
    args, geo = conv_args((2, 4, 6, 2, 7, 3, "grouped_unit", True, True, True, "all", True), torch.float32,
                          backend.device)
    got, want = TCONV.stn_conv2d_dual(*args, *geo), ref.stn_conv2d_dual(*args, *geo)
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])


@pytest.mark.parametrize("op", ["stn_linear", "stn_conv2d"])
@pytest.mark.parametrize("backend", backends("cpp", "triton"))
def test_double_backward_is_refused(backend, op):
    """The backward ops have no derivative: a backward that builds a graph is refused, naming the way out
    (gradgradcheck on the compiled ops: test_dispatch.py)."""
    x, xt, eps, Wg, bg, Wr, br, V = (conv_args((1, 2, 3, 2, 5, 3, "unit", True, True, True, "all", True),
                                               torch.float32, backend.device)[0] if op == "stn_conv2d" else
                                     dense_inputs(3, 5, 4, 2, dtype=torch.float32, device=backend.device))
    geo = GEOMETRY["unit"] if op == "stn_conv2d" else ()
    suffix = "" if backend.name == "cpp" else "_triton"
    y, yt = getattr(backend, f"{op}_dual")(x, xt, eps, Wg, bg, Wr, br, V, *geo)
    with pytest.raises(RuntimeError, match=f"double backward through fastdstn::{op}_dual{suffix} is not supported"):
        torch.autograd.grad(y.sum() + yt.sum(), (x, Wg), create_graph=True)[0].sum().backward()
    y = getattr(backend, op)(x, eps, Wg, bg, Wr, br, V, *geo)
    with pytest.raises(RuntimeError, match=rf"double backward through fastdstn::{op}{suffix} is not supported"):
        torch.autograd.grad(y.sum(), (x, Wg), create_graph=True)[0].sum().backward()


# ------------------------------------------------------------------------------- the public ops' argument checks
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
    a = named(dense_inputs(4, 5, 3, 2, grads="none"))
    a.update(change)
    with pytest.raises(error, match=message):
        ops.stn_linear(a["x"], a["h"], a["Wg"], a["bg"], a["Wr"], a["br"], a["V"])
