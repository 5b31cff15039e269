"""The compiled backend (fastdstn.ops.cpp, csrc/): opcheck, gradcheck, float32 accuracy against the
reference, the dropout mask's statistics and consistency, and the ops' own error messages.

Float32 accuracy follows tests/accuracy.py: each element of an output or gradient within γ_n times its
magnitude (Σ|terms|, the float64 reference on absolute values) of the float64 reference, n the op's
reduction lengths plus its elementwise roundings; a bound that any correct float32 implementation meets,
whatever BLAS the reference runs on."""
import json
import os

import pytest
import torch

import fastdstn.ops as ops
from fastdstn.ops import cpp
from fastdstn.ops import reference as ref
from fastdstn.ops.dispatch import resolve

from accuracy import LSTM_TERMS, assert_within_bound, dense_terms, magnitude, scale_of, tf32_roundings
from op_cases import backend_functions

compiled = backend_functions("cpp") if cpp.AVAILABLE else None  # each family's cpp.py

_INFO_PATH = os.path.join(os.path.dirname(cpp.__file__), os.pardir, "_build_info.json")


def _built() -> bool:
    try:
        with open(_INFO_PATH) as f:
            return bool(json.load(f).get("compiled"))
    except (OSError, ValueError):
        return False


# Skip only a deliberately pure-Python install; a compiled build that does not load is a failure.
pytestmark = pytest.mark.skipif(not cpp.AVAILABLE and not _built(), reason="built with FASTDSTN_NO_EXTENSIONS")

OPCHECK_UTILS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


def test_backend_loads():
    assert cpp.AVAILABLE, cpp.UNAVAILABLE_REASON
    assert "cpu" in cpp.DEVICE_TYPES
    assert isinstance(cpp.cuda_registered(), bool)


# ----------------------------------------------------------------------------- input builders
def _t(*shape, dtype, grad=False, contiguous=True):
    """A random tensor; non-contiguous ones are transposed views of a (reversed-shape) buffer."""
    if contiguous or len(shape) < 2:
        t = torch.randn(*shape, dtype=dtype)
    else:
        t = torch.randn(*reversed(shape), dtype=dtype).permute(*reversed(range(len(shape))))
        assert not t.is_contiguous()
    return t.requires_grad_(grad)


def dense_inputs(B, n_in, n_out, H, *, dtype=torch.float64, conv=None, has_bg=True, has_br=True, has_xt=True,
                 grads="all", contiguous=True):
    """(x, xt, eps, Wg, bg, Wr, br, V) for the dense ops; conv = (C_in, HW, k, groups) or None.

    grads: "all" (every tensor), "response" (Δ-STN's response sub-step: xt, Wr, br, V) or "none"."""
    need = {"all": set("x xt eps Wg bg Wr br V".split()), "response": {"xt", "Wr", "br", "V"}, "none": set()}[grads]
    if conv is None:
        xs, ws = (B, n_in), (n_out, n_in)
    else:
        c_in, hw, k, groups = conv
        xs, ws = (B, c_in, hw, hw + 1), (n_out, c_in // groups, k, k)
    x = _t(*xs, dtype=dtype, grad="x" in need, contiguous=contiguous)
    xt = _t(*xs, dtype=dtype, grad="xt" in need, contiguous=contiguous) if has_xt else None
    eps = _t(B, H, dtype=dtype, grad="eps" in need)
    Wg = (_t(*ws, dtype=dtype, contiguous=contiguous) * 0.3).requires_grad_("Wg" in need)
    Wr = (_t(*ws, dtype=dtype, contiguous=contiguous) * 0.3).requires_grad_("Wr" in need)
    bg = _t(n_out, dtype=dtype, grad="bg" in need) if has_bg else None
    br = _t(n_out, dtype=dtype, grad="br" in need) if has_br else None
    V = _t(2 * n_out if has_br else n_out, H, dtype=dtype, grad="V" in need)
    return x, xt, eps, Wg, bg, Wr, br, V


GEOMETRY = {1: ([1, 1], [1, 1], [1, 1], 1), 2: ([2, 1], [1, 0], [1, 2], 2)}

LINEAR_CASES = [  # (B, in, out, H, has_bg, has_br, has_xt, grads, contiguous)
    (4, 6, 5, 1, True, True, True, "all", True),
    (3, 5, 7, 7, False, True, True, "response", False),
    (5, 4, 3, 30, True, False, False, "all", True),
    (2, 3, 4, 7, False, False, True, "none", True),
    (33, 77, 129, 7, True, True, True, "response", False),
]
CONV_CASES = [  # (B, C_in, C_out, H, HW, k, geometry, has_bg, has_br, has_xt, grads, contiguous)
    (2, 3, 4, 1, 5, 3, 1, True, True, True, "all", True),
    (2, 4, 6, 7, 6, 3, 2, False, True, True, "response", False),
    (3, 2, 4, 30, 4, 1, 1, True, False, False, "all", True),
    (2, 4, 2, 7, 9, 5, 2, True, True, True, "none", True),
]


def _linear_args(case, dtype=torch.float64):
    B, n_in, n_out, H, has_bg, has_br, has_xt, grads, contiguous = case
    return dense_inputs(B, n_in, n_out, H, dtype=dtype, has_bg=has_bg, has_br=has_br, has_xt=has_xt, grads=grads,
                        contiguous=contiguous)


def _conv_args(case, dtype=torch.float64):
    B, c_in, c_out, H, hw, k, geo, has_bg, has_br, has_xt, grads, contiguous = case
    args = dense_inputs(B, c_in, c_out, H, dtype=dtype, conv=(c_in, hw, k, GEOMETRY[geo][3]), has_bg=has_bg,
                        has_br=has_br, has_xt=has_xt, grads=grads, contiguous=contiguous)
    return args, GEOMETRY[geo]


def _nonlinear(args):
    x, xt, eps, Wg, bg, Wr, br, V = args
    return x, eps, Wg, bg, Wr, br, V


# ----------------------------------------------------------------------------- opcheck
@pytest.mark.parametrize("case", LINEAR_CASES, ids=lambda c: f"{c[0]}x{c[1]}x{c[2]}-H{c[3]}-{c[7]}")
def test_opcheck_linear(case):
    args = _linear_args(case, torch.float32)
    torch.library.opcheck(torch.ops.fastdstn.stn_linear_dual.default, args, test_utils=OPCHECK_UTILS)
    torch.library.opcheck(torch.ops.fastdstn.stn_linear.default, _nonlinear(args), test_utils=OPCHECK_UTILS)


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{c[1]}to{c[2]}-k{c[5]}-g{c[6]}-{c[10]}")
def test_opcheck_conv(case):
    args, geo = _conv_args(case, torch.float32)
    torch.library.opcheck(torch.ops.fastdstn.stn_conv2d_dual.default, (*args, *geo), test_utils=OPCHECK_UTILS)
    torch.library.opcheck(torch.ops.fastdstn.stn_conv2d.default, (*_nonlinear(args), *geo), test_utils=OPCHECK_UTILS)


def _lstm_args(N, H, tangents, grad, dtype=torch.float32):
    gates = torch.randn(N, 4 * H, dtype=dtype, requires_grad=grad)
    c = torch.randn(N, H, dtype=dtype, requires_grad=grad)
    gates_t = torch.randn(N, 4 * H, dtype=dtype, requires_grad=grad) if "g" in tangents else None
    c_t = torch.randn(N, H, dtype=dtype, requires_grad=grad) if "c" in tangents else None
    return gates, gates_t, c, c_t


@pytest.mark.parametrize("tangents,grad", [("gc", True), ("g", True), ("c", False), ("", True)])
def test_opcheck_lstm(tangents, grad):
    args = _lstm_args(3, 5, tangents, grad)
    torch.library.opcheck(torch.ops.fastdstn.lstm_cell_dual.default, args, test_utils=OPCHECK_UTILS)


@pytest.mark.parametrize("shape,batch_dim,shared,has_xt", [((6, 5), 0, [], True), ((3, 4, 5, 2), 0, [2, 3], True),
                                                          ((7, 4, 3), 1, [0], False)])
def test_opcheck_dropout(shape, batch_dim, shared, has_xt):
    x = torch.randn(*shape, requires_grad=True)
    xt = torch.randn(*shape, requires_grad=True) if has_xt else None
    rate = torch.rand(shape[batch_dim]) * 0.9
    torch.library.opcheck(torch.ops.fastdstn.dropout_dual.default, (x, xt, rate, 1234, batch_dim, shared),
                          test_utils=OPCHECK_UTILS)


# ----------------------------------------------------------------------------- gradcheck (float64)
def _flat(outputs):
    return tuple(o for o in outputs if o is not None and o.requires_grad)


# Exhaustive gradcheck on small shapes; fast mode (a random projection) where H = 30 makes V large.
@pytest.mark.parametrize("case", LINEAR_CASES[:3], ids=lambda c: f"H{c[3]}-{c[7]}")
def test_gradcheck_linear(case):
    args = _linear_args(case)
    fast = case[3] >= 30
    assert torch.autograd.gradcheck(lambda *a: _flat(compiled.stn_linear_dual(*a)), args, fast_mode=fast)
    assert torch.autograd.gradcheck(lambda *a: compiled.stn_linear(*a), _nonlinear(args), fast_mode=fast)


GRADCHECK_CONV_CASES = [  # small: every input element is perturbed twice per op call
    (2, 2, 2, 2, 3, 2, 1, True, True, True, "all", True),
    (1, 4, 4, 3, 4, 3, 2, False, True, True, "response", False),
    (2, 2, 3, 1, 3, 1, 1, True, False, False, "all", True),
]


@pytest.mark.parametrize("case", GRADCHECK_CONV_CASES, ids=lambda c: f"g{c[6]}-{c[10]}")
def test_gradcheck_conv(case):
    args, geo = _conv_args(case)
    assert torch.autograd.gradcheck(lambda *a: _flat(compiled.stn_conv2d_dual(*a, *geo)), args)
    assert torch.autograd.gradcheck(lambda *a: compiled.stn_conv2d(*a, *geo), _nonlinear(args))


@pytest.mark.parametrize("tangents", ["gc", "g", "c", ""])
def test_gradcheck_lstm(tangents):
    args = _lstm_args(3, 4, tangents, True, torch.float64)
    assert torch.autograd.gradcheck(lambda *a: _flat(compiled.lstm_cell_dual(*a)), args)


def test_gradcheck_dropout():
    x = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    xt = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    rate = torch.tensor([0.0, 0.3, 0.6, 0.9], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: compiled.dropout_dual(a, b, rate, 7, 0, (2,)), (x, xt))


# ----------------------------------------------------------------------------- second order
def _op_calls():
    """name -> (the cpp op as a function of its differentiable float64 inputs, those inputs); small shapes."""
    lin = _linear_args((2, 3, 2, 2, True, True, True, "all", True))
    conv, geo = _conv_args(GRADCHECK_CONV_CASES[2])
    lstm = _lstm_args(2, 2, "gc", True, torch.float64)
    return {
        "stn_linear": (lambda *a: compiled.stn_linear(*a), _nonlinear(lin)),
        "stn_linear_dual": (lambda *a: _flat(compiled.stn_linear_dual(*a)), lin),
        "stn_conv2d": (lambda *a: compiled.stn_conv2d(*a, *geo), _nonlinear(conv)),
        "stn_conv2d_dual": (lambda *a: _flat(compiled.stn_conv2d_dual(*a, *geo)), conv),
        "lstm_cell_dual": (lambda *a: _flat(compiled.lstm_cell_dual(*a)), lstm),
    }


@pytest.mark.parametrize("name", list(_op_calls()))
def test_double_backward_is_refused_with_the_way_out(name):
    """The backward ops have no derivatives: gradgradcheck found None for W_g and V (stn_linear) and 7536.8
    against 5548.6 (stn_conv2d) before the refusal; the reference backend gives the right second derivatives."""
    fn, args = _op_calls()[name]
    with pytest.raises(RuntimeError, match=f"double backward through fastdstn::{name} is not supported.*"
                                           r'use_backend\("reference"\)'):
        torch.autograd.gradgradcheck(fn, args)
    first = torch.autograd.grad(_listed(fn(*args))[0].sum(), args[0])     # first order, no graph: still there
    assert first[0].shape == args[0].shape
    reference = getattr(ref, name)
    if name.startswith("stn_conv2d"):
        reference = lambda *a, op=reference: op(*a, *_conv_args(GRADCHECK_CONV_CASES[2])[1])  # noqa: E731
    assert torch.autograd.gradgradcheck(lambda *a: _flat(_listed(reference(*a))), args)


def test_double_backward_of_dropout_is_its_forward_op():
    x = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    xt = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    rate = torch.tensor([0.0, 0.3, 0.6, 0.9], dtype=torch.float64)
    assert torch.autograd.gradgradcheck(lambda a, b: compiled.dropout_dual(a, b, rate, 7, 0, (2,)), (x, xt))


# ----------------------------------------------------------------------------- float16/bfloat16 on CPU
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_on_cpu_runs_the_reference(dtype):
    """The CPU loops compute float32 and float64: half-precision CPU tensors (and CPU autocast) go to the
    reference, silently under "auto" and with one warning when "cpp" was asked for."""
    args = [None if a is None else a.detach().to(dtype) for a in _linear_args(LINEAR_CASES[0], torch.float32)]
    expected = ref.stn_linear_dual(*args)
    assert expected[0].dtype == dtype
    with ops.use_backend("auto"):
        assert resolve("stn_linear_dual", args[0]) is ref.stn_linear_dual
        for a, b in zip(ops.stn_linear_dual(*args), expected):
            assert torch.equal(a, b)
    with ops.use_backend("cpp"), pytest.warns(RuntimeWarning, match=f"does not compute {dtype} on cpu"):
        ops.stn_linear_dual(*args)
    x32 = args[0].float()
    with torch.autocast("cpu", dtype):
        assert resolve("stn_linear_dual", x32) is ref.stn_linear_dual
    assert resolve("stn_linear_dual", x32) is compiled.stn_linear_dual


# ----------------------------------------------------------------------------- float32 accuracy
def _listed(result):
    return list(result) if isinstance(result, tuple) else [result]


def _cotangents(result):
    """A fixed random float64 cotangent for each output of an op (None for an absent one)."""
    gen = torch.Generator().manual_seed(1)
    return [None if o is None else torch.randn(o.shape, generator=gen, dtype=torch.float64) for o in _listed(result)]


def _outputs_and_grads(fn, args, cotangents):
    """fn's outputs (those not None) and the gradients of Σ output·cotangent w.r.t. the arguments that require
    grad, all as float64 tensors."""
    outs = _listed(fn(*args))
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    loss = sum((o.double() * c.to(o.device)).sum() for o, c in zip(outs, cotangents)
               if o is not None and o.requires_grad)
    grads = torch.autograd.grad(loss, leaves) if leaves else ()
    return [o.detach().double() for o in outs if o is not None] + [g.double() for g in grads]


def _copy(args, dtype, device="cpu"):
    return tuple(a.detach().to(device, dtype).requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a
                 for a in args)


def _assert_accurate(fn_op, fn_ref, args, n, pointwise=False, device="cpu", rounding=0.0):
    """The op in float32 against the reference in float64 on the same values, outputs and input gradients,
    within the bound of tests/accuracy.py: γ_n times each element's magnitude (Σ|terms|, the reference on
    absolute values), or times the result's scale for a pointwise op."""
    args64 = _copy(args, torch.float64, device)
    cot = _cotangents(fn_ref(*args64))
    exact = _outputs_and_grads(fn_ref, args64, cot)
    got = _outputs_and_grads(fn_op, _copy(args, torch.float32, device), cot)
    if pointwise:
        mag = scale_of(exact)
    else:
        wanted = [isinstance(a, torch.Tensor) and a.requires_grad for a in args]
        mag = ([m for m in magnitude(fn_ref, args64) if m is not None]
               + [m for m, w in zip(magnitude(fn_ref, args64, cot), wanted) if w])
    assert_within_bound("output/grad", got, exact, mag, n, rounding=rounding)


def _dense_terms(args, geo=None):
    x, _, _, Wg, _, _, _, V = args
    return dense_terms(x, Wg, V, geo)


@pytest.mark.parametrize("case", LINEAR_CASES, ids=lambda c: f"{c[0]}x{c[1]}x{c[2]}-H{c[3]}-{c[7]}")
def test_float32_linear_vs_reference(case):
    args = _linear_args(case, torch.float32)
    _assert_accurate(compiled.stn_linear_dual, ref.stn_linear_dual, args, _dense_terms(args))
    _assert_accurate(compiled.stn_linear, ref.stn_linear, _nonlinear(args), _dense_terms(args))


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{c[1]}to{c[2]}-k{c[5]}-g{c[6]}-{c[10]}")
def test_float32_conv_vs_reference(case):
    args, geo = _conv_args(case, torch.float32)
    _assert_accurate(lambda *a: compiled.stn_conv2d_dual(*a, *geo), lambda *a: ref.stn_conv2d_dual(*a, *geo), args,
                     _dense_terms(args, geo))
    _assert_accurate(lambda *a: compiled.stn_conv2d(*a, *geo), lambda *a: ref.stn_conv2d(*a, *geo), _nonlinear(args),
                     _dense_terms(args, geo))


@pytest.mark.parametrize("tangents", ["gc", "g", ""])
def test_float32_lstm_vs_reference(tangents):
    args = _lstm_args(7, 33, tangents, True)
    _assert_accurate(compiled.lstm_cell_dual, ref.lstm_cell_dual, args, LSTM_TERMS, pointwise=True)


def test_response_substep_grads_and_frozen_primal():
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


def _saved_activation_bytes(run, resident):
    """Bytes of the storages autograd saves during `run()`, leaving out those of `resident` tensors."""
    skip = {t.untyped_storage().data_ptr() for t in resident}
    seen = {}

    def pack(t):
        seen.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(n for ptr, n in seen.items() if ptr not in skip)


def test_hyper_step_linear_saves_no_input_activation():
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
    assert _saved_activation_bytes(lambda: compiled.stn_linear(x * 1, h, Wg, bg, Wr, br, V), resident) <= u_and_st + 64
    assert _saved_activation_bytes(lambda: compiled.stn_linear_dual(x * 1, xt * 1, h, Wg, bg, Wr, br, V),
                                   resident) <= u_and_st + 64


def test_autograd_is_registered_in_cpp():
    """The autograd formulas are C++ kernels for the Autograd key (csrc/<family>/<family>_autograd.cpp), not
    Python ones."""
    for name in ("stn_linear", "stn_linear_dual", "stn_conv2d", "stn_conv2d_dual", "lstm_cell_dual", "dropout_dual"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fastdstn::{name}", "Autograd"), name


@pytest.mark.parametrize("has_xt,has_bg,has_br", [(False, False, True), (True, False, False), (False, True, False)])
def test_grad_of_a_subset_with_absent_optionals(has_xt, has_bg, has_br):
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


def test_public_api_dispatches_to_cpp():
    args = dense_inputs(4, 5, 6, 2, dtype=torch.float32)
    with ops.use_backend("cpp"):
        assert resolve("stn_linear_dual", args[0]) is compiled.stn_linear_dual
        y, yt = ops.stn_linear_dual(*args)
    y_ref, yt_ref = ref.stn_linear_dual(*args)
    torch.testing.assert_close(yt, yt_ref)


# ----------------------------------------------------------------------------- dropout mask
def test_dropout_statistics_and_consistency():
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


def test_dropout_shared_dims_and_backward_mask():
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


# ----------------------------------------------------------------------------- errors from the op
def test_errors_name_the_argument():
    x, xt, eps, Wg, bg, Wr, br, V = dense_inputs(4, 5, 6, 3, dtype=torch.float32, grads="none")
    op = torch.ops.fastdstn.stn_linear_dual.default
    with pytest.raises(RuntimeError, match=r"V: expected 12 rows"):
        op(x, xt, eps, Wg, bg, Wr, br, V[:6])
    with pytest.raises(RuntimeError, match=r"eps: expected shape \[4, 3\]"):
        op(x, xt, eps[:, :2], Wg, bg, Wr, br, V)
    with pytest.raises(RuntimeError, match=r"eps: expected 4 rows"):
        op(x, xt, eps[:3], Wg, bg, Wr, br, V)
    with pytest.raises(RuntimeError, match=r"x: expected 5 input features"):
        op(x[:, :4], None, eps, Wg, bg, Wr, br, V)
    with pytest.raises(RuntimeError, match=r"Wr: expected shape"):
        op(x, xt, eps, Wg, bg, Wr[:, :4], br, V)
    with pytest.raises(RuntimeError, match=r"xt: expected dtype Float"):
        op(x, xt.double(), eps, Wg, bg, Wr, br, V)
    with pytest.raises(RuntimeError, match=r"x: expected float32 or float64"):
        op(x.half(), None, eps.half(), Wg.half(), None, Wr.half(), None, V[:6].half())
    with pytest.raises(RuntimeError, match=r"br: expected shape \[6\]"):
        op(x, xt, eps, Wg, bg, Wr, br[:5], V)
    conv = torch.ops.fastdstn.stn_conv2d_dual.default
    xc = torch.randn(2, 4, 5, 5)
    Wc = torch.randn(6, 2, 3, 3)
    e2 = torch.randn(2, 3)
    with pytest.raises(RuntimeError, match=r"x: expected 2 input channels"):
        conv(xc, None, e2, Wc, None, Wc, None, torch.randn(6, 3), [1, 1], [0, 0], [1, 1], 1)
    with pytest.raises(RuntimeError, match=r"groups: expected a divisor"):
        conv(xc, None, e2, Wc, None, Wc, None, torch.randn(6, 3), [1, 1], [0, 0], [1, 1], 4)
    lstm = torch.ops.fastdstn.lstm_cell_dual.default
    with pytest.raises(RuntimeError, match=r"gates: expected shape \[3, 8\]"):
        lstm(torch.randn(3, 7), None, torch.randn(3, 2), None)
    with pytest.raises(RuntimeError, match=r"c_t: expected shape"):
        lstm(torch.randn(3, 8), None, torch.randn(3, 2), torch.randn(3, 3))
    drop = torch.ops.fastdstn.dropout_dual.default
    with pytest.raises(RuntimeError, match=r"rate: expected finite"):
        drop(torch.randn(2, 3), None, torch.tensor([0.1, float("nan")]), 0, 0, [])
    with pytest.raises(RuntimeError, match=r"rate: expected drop probabilities in \[0, 1\)"):
        drop(torch.randn(2, 3), None, torch.tensor([0.1, 1.0]), 0, 0, [])
    with pytest.raises(RuntimeError, match=r"rate: expected shape \[2\]"):
        drop(torch.randn(2, 3), None, torch.tensor([0.1, 0.2, 0.3]), 0, 0, [])
    with pytest.raises(RuntimeError, match=r"shared_dims: must not contain the batch dimension"):
        drop(torch.randn(2, 3), None, torch.tensor([0.1, 0.2]), 0, 0, [0])


# ----------------------------------------------------------------------------- CUDA kernels (GPU only)
# The same checks on the CUDA dispatch key: the epilogue kernels of csrc/<family>/<family>_cuda.cu against
# the reference on the GPU (float64 to round-off, float32 within the bound of tests/accuracy.py, bf16 loosely),
# opcheck on CUDA tensors, and the seeded dropout mask's statistics.
cuda_only = pytest.mark.skipif(not (torch.cuda.is_available() and cpp.cuda_registered()),
                               reason="needs a GPU and an extension built with FASTDSTN_CUDA=1")


def _dense_cases_on_cuda():
    for case in LINEAR_CASES:
        yield f"linear-{case[0]}x{case[1]}x{case[2]}-{case[7]}", _linear_args(case), None
    for case in CONV_CASES:
        args, geo = _conv_args(case)
        yield f"conv-{case[1]}to{case[2]}-k{case[5]}-g{case[6]}-{case[10]}", args, geo


def _dense_fns(geo):
    if geo is None:
        return [(compiled.stn_linear_dual, ref.stn_linear_dual, False), (compiled.stn_linear, ref.stn_linear, True)]
    return [(lambda *a: compiled.stn_conv2d_dual(*a, *geo), lambda *a: ref.stn_conv2d_dual(*a, *geo), False),
            (lambda *a: compiled.stn_conv2d(*a, *geo), lambda *a: ref.stn_conv2d(*a, *geo), True)]


@cuda_only
@pytest.mark.parametrize("name,args,geo", list(_dense_cases_on_cuda()), ids=lambda v: v if isinstance(v, str) else "")
def test_cuda_dense_ops_match_the_reference(name, args, geo):
    for fn_cpp, fn_ref, nonlinear in _dense_fns(geo):
        inputs = _nonlinear(args) if nonlinear else args
        args64 = _copy(inputs, torch.float64, "cuda")
        cot = _cotangents(fn_ref(*args64))
        want = _outputs_and_grads(fn_ref, args64, cot)
        got = _outputs_and_grads(fn_cpp, args64, cot)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)
        kinds = ("matmul",) if geo is None else ("matmul", "conv")
        _assert_accurate(fn_cpp, fn_ref, inputs, _dense_terms(args, geo), device="cuda",
                         rounding=sum(tf32_roundings(kind, "cuda") for kind in kinds))
        bf16 = _outputs_and_grads(fn_cpp, _copy(inputs, torch.bfloat16, "cuda"), cot)
        for b, w in zip(bf16, want):
            assert (b - w).abs().max().item() <= 0.05 * max(w.abs().max().item(), 1.0)


@cuda_only
@pytest.mark.parametrize("case", LINEAR_CASES[:2] + CONV_CASES[:2], ids=lambda c: f"{len(c)}-{c[0]}x{c[1]}x{c[2]}")
def test_cuda_opcheck(case):
    if len(case) == len(LINEAR_CASES[0]):
        args = _copy(_linear_args(case), torch.float32, "cuda")
        torch.library.opcheck(torch.ops.fastdstn.stn_linear_dual.default, args, test_utils=OPCHECK_UTILS)
    else:
        args, geo = _conv_args(case, torch.float32)
        torch.library.opcheck(torch.ops.fastdstn.stn_conv2d_dual.default, (*_copy(args, torch.float32, "cuda"), *geo),
                              test_utils=OPCHECK_UTILS)


@cuda_only
@pytest.mark.parametrize("tangents", ["gc", "g", ""])
def test_cuda_lstm_cell_matches_the_reference(tangents):
    args = _copy(_lstm_args(7, 33, tangents, True), torch.float64, "cuda")
    cot = _cotangents(ref.lstm_cell_dual(*args))
    want = _outputs_and_grads(ref.lstm_cell_dual, args, cot)
    for g, w in zip(_outputs_and_grads(compiled.lstm_cell_dual, args, cot), want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)


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


# ----------------------------------------------------------------------------- CPU instruction sets
def test_cpu_instruction_sets_agree(tmp_path):
    """The CPU loops exist for the x86-64 baseline, AVX2 and AVX-512 (csrc/common/isa.cpp picks the widest the
    CPU has; FASTDSTN_CPU_ISA caps it). Every copy gives the float64 results of the others up to rounding
    (FMA contraction differs) and bit-identical dropout masks."""
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(__file__), "isa_outputs.py")
    results = {}
    for isa in ("baseline", "avx2", "widest"):
        path = tmp_path / f"{isa}.pt"
        env = dict(os.environ, FASTDSTN_CPU_ISA=isa)
        subprocess.run([sys.executable, script, str(path)], check=True, env=env, timeout=300)
        saved = torch.load(path)
        assert saved["isa"] in ("baseline", "avx2", "avx512")
        if isa == "baseline":
            assert saved["isa"] == "baseline"
        if isa == "widest" and "FASTDSTN_CPU_ISA" not in os.environ:
            assert saved["isa"] == cpp.CPU_ISA  # what this process, uncapped, runs
        results[isa] = saved["outputs"]
    for isa in ("avx2", "widest"):
        for name, tensors in results["baseline"].items():
            for k, (a, b) in enumerate(zip(tensors, results[isa][name])):
                if name == "dropout":
                    assert torch.equal(a, b), f"{isa}: dropout mask {k} differs from the baseline loops'"
                else:
                    torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12, msg=f"{isa}: {name} output/grad {k}")


def test_wide_instructions_only_in_their_builds():
    """No AVX/AVX-512 instruction (VEX/EVEX-encoded, mnemonic v…) outside the isa_avx2/isa_avx512 copies of the
    CPU loops: templates of ATen and the standard library instantiated by those copies must keep the baseline
    target, or the linker could hand a baseline caller an AVX-512 body (an illegal instruction on older CPUs)."""
    import glob
    import platform
    import shutil
    import subprocess

    if shutil.which("objdump") is None:
        pytest.skip("objdump (binutils) is not installed")
    library = glob.glob(os.path.join(os.path.dirname(cpp.__file__), os.pardir, "_C*.so"))
    if not library:
        pytest.skip("no compiled extension")
    listing = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-C", library[0]], capture_output=True,
                             text=True, check=True, timeout=300).stdout
    offenders, function, inside = set(), "", 0
    for line in listing.splitlines():
        if line.endswith(">:"):
            function = line
        else:
            fields = line.split("\t")
            if len(fields) >= 2 and fields[1].startswith("v") and not fields[1].startswith(("verr", "verw")):
                if "isa_avx2" in function or "isa_avx512" in function:
                    inside += 1
                else:
                    offenders.add(function)
    assert not offenders, f"wide instructions outside the ISA builds: {sorted(offenders)[:5]}"
    if platform.machine() == "x86_64":
        assert inside > 0, "the listing shows no wide instruction at all: the AVX2/AVX-512 builds are missing"
