"""The ops' autocast rules (fastdstn/ops/autocast.py) on CPU: every compiled and Triton operator of a ruled op
carries Autocast kernels; under torch.autocast the public ops take mixed dtypes and compute in their rule's dtype
(the dense and attention ops in the autocast dtype, the LSTM cell in float32) on every backend that runs on CPU,
the operators called directly do the same, and a per-example drop probability is never cast. The Triton kernels
run under the interpreter in float16 (its bf16 tl.dot is not exact); bf16 on CUDA: machine/test_autocast_gpu.py."""
import warnings

import pytest
import torch

import fastdstn.ops as ops
from fastdstn.ops import autocast, dispatch
from fastdstn.ops import reference as ref

from accuracy import dense_terms, roundings
from op_cases import check, compiled, lstm_args, needs_cpp, needs_triton, triton_module

TLIN = triton_module("dense.triton")
TLSTM = triton_module("lstm_cell.triton")
TATTN = triton_module("attention.triton")


def _dense(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    t = lambda *s: torch.randn(*s, generator=g).to(dtype)  # noqa: E731
    return t(6, 5), t(6, 5), t(6, 2), t(3, 5), t(3), t(3, 5), t(3), t(6, 2)


def test_rules_name_ops_of_the_table():
    assert set(autocast.RULES) <= set(dispatch.OPS)
    assert set(autocast.RULES.values()) <= {autocast.AUTOCAST, autocast.FLOAT32, autocast.FIRST}


@pytest.mark.parametrize("op", list(autocast.RULES))
def test_every_operator_of_a_ruled_op_has_autocast_kernels(op):
    names = dispatch.operator_names(op)
    if "cpp" in dispatch.OPS[op][1] and ("cpp", op) not in dispatch.NO_OPERATOR:
        assert op in names
    for name in names:
        if name.endswith("_triton"):
            if TLIN is None:
                continue
            triton_module(f"{dispatch.OPS[op][0]}.{dispatch.OPS[op][1]['triton']}")  # defines the operator
        elif compiled is None:
            continue
        for key in ("AutocastCPU", "AutocastCUDA"):
            assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fastdstn::{name}", key), (name, key)


def test_casts_follow_the_rules_inside_autocast_only():
    x = torch.randn(2, 3)
    assert autocast.cast("stn_linear_dual", x)[0] is x
    with torch.autocast("cpu", torch.bfloat16):
        assert autocast.cast("dropout_dual", x)[0] is x
        assert autocast.cast("stn_linear_dual", x.double())[0].dtype == torch.float64  # as torch: float64 stays
        assert autocast.cast("stn_linear_dual", x, None)[0].dtype == torch.bfloat16
        assert autocast.cast("lstm_cell_dual", x.bfloat16())[0].dtype == torch.float32
        assert [t.dtype for t in autocast.cast("dropout_dual", x.bfloat16(), x)] == [torch.bfloat16] * 2


@pytest.mark.parametrize("backend", ["reference", "auto", "cpp"])
def test_dense_op_takes_mixed_dtypes_and_computes_in_the_autocast_dtype(backend, monkeypatch):
    """x in bf16 (a previous layer's output under autocast), the weights float32: the result is the op on every
    argument in bf16, bit for bit (CPU bf16 is the reference's, whichever backend was asked for)."""
    monkeypatch.setattr(dispatch, "_warned", set())  # the once-only warning stays for test_dispatch to see
    args = _dense()
    mixed = (args[0].bfloat16(), *args[1:])
    expected = ref.stn_linear_dual(*(a.bfloat16() for a in args))
    with ops.use_backend(backend), warnings.catch_warnings(), torch.autocast("cpu", torch.bfloat16):
        warnings.simplefilter("ignore", RuntimeWarning)
        got = ops.stn_linear_dual(*mixed)
    for a, e in zip(got, expected):
        assert a.dtype == torch.bfloat16 and torch.equal(a, e)


def test_dense_op_gradients_reach_float32_parameters():
    args = [a.requires_grad_() for a in _dense()]
    with torch.autocast("cpu", torch.bfloat16):
        y, yt = ops.stn_linear_dual(*args)
    (y.float().sum() + yt.float().sum()).backward()
    assert all(a.grad is not None and a.grad.dtype == torch.float32 for a in args)


@needs_cpp
def test_lstm_cell_computes_in_float32_on_the_compiled_backend():
    """bf16 gates (a GEMM's output under autocast) and a float32 cell state: float32 results from the compiled
    CPU loops, equal to the op on the upcast inputs."""
    gates, gates_t, c, c_t = lstm_args(5, 4, "gc", False)
    with ops.use_backend("cpp"), torch.autocast("cpu", torch.bfloat16):
        assert dispatch.resolve("lstm_cell_dual", gates.bfloat16()) is compiled.lstm_cell_dual
        got = ops.lstm_cell_dual(gates.bfloat16(), gates_t.bfloat16(), c, c_t)
    expected = compiled.lstm_cell_dual(gates.bfloat16().float(), gates_t.bfloat16().float(), c, c_t)
    for a, e in zip(got, expected):
        assert a.dtype == torch.float32 and torch.equal(a, e)


@needs_cpp
def test_compiled_operator_called_directly_follows_the_rule():
    gates, gates_t, c, c_t = (t.bfloat16() for t in lstm_args(5, 4, "gc", False))
    with torch.autocast("cpu", torch.bfloat16):
        outputs = torch.ops.fastdstn.lstm_cell_dual(gates, gates_t, c, c_t)
    assert [o.dtype for o in outputs] == [torch.float32] * 4


@needs_cpp
def test_compiled_dense_operator_on_cpu_names_the_dtype_it_cannot_compute():
    """Called directly under CPU bf16 autocast, the compiled dense operator receives bf16 (its rule), which its CPU
    loops do not compute: one error naming it (the public function runs the reference instead)."""
    with torch.autocast("cpu", torch.bfloat16), pytest.raises(RuntimeError, match="received BFloat16"):
        torch.ops.fastdstn.stn_linear_dual(*_dense())


@needs_triton
@pytest.mark.parametrize("device, dtype", [
    ("cpu", torch.float16),
    pytest.param("cuda", torch.bfloat16, marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")),
])
def test_triton_linear_under_autocast(device, dtype):
    """float32 arguments, half-precision autocast: the kernel computes in that dtype, within the bound of the
    float64 reference plus the half-precision roundings of the operands (2) and of the kernel's chain (4). On
    CPU (the interpreter) float16, since the interpreter's bf16 tl.dot is not exact."""
    args = [a.to(device).requires_grad_() for a in _dense()]
    x, _, _, Wg, _, _, _, V = args

    def under_autocast(*a):
        with torch.autocast(device, dtype):
            out = TLIN.stn_linear_dual(*a)
        assert all(o.dtype == dtype for o in out)
        return out
    check(f"autocast {dtype}", under_autocast, ref.stn_linear_dual, args, dense_terms(x, Wg, V),
          rounding=roundings(6, dtype))


@needs_triton
def test_triton_lstm_cell_under_autocast_computes_float32():
    gates, gates_t, c, c_t = lstm_args(5, 4, "gc", False)
    with torch.autocast("cpu", torch.bfloat16):
        got = TLSTM.lstm_cell_dual(gates.bfloat16(), gates_t.bfloat16(), c, c_t)
    expected = ref.lstm_cell_dual(gates.bfloat16().float(), gates_t.bfloat16().float(), c, c_t)
    for a, e in zip(got, expected):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, e)


@needs_triton
def test_triton_attention_keeps_the_drop_probability(monkeypatch):
    """q, k, v cast to the autocast dtype; the per-example rate reaches the kernel as given (NEVER_CAST)."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 1, 4, 8, generator=g) for _ in range(3))
    rate = torch.tensor([0.1, 0.3])
    seen = {}
    original = TATTN._forward

    def spy(q, k, v, qt, kt, vt, mask, is_causal, scale, rate, seed):
        seen.update(q=q.dtype, rate=rate.dtype)
        return original(q, k, v, qt, kt, vt, mask, is_causal, scale, rate, seed)
    monkeypatch.setattr(TATTN, "_forward", spy)
    with torch.autocast("cpu", torch.float16):
        o, _ = torch.ops.fastdstn.attention_triton(q, k, v, None, False, 8 ** -0.5, rate, 5)
    assert seen == {"q": torch.float16, "rate": torch.float32} and o.dtype == torch.float16
