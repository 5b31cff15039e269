"""lstm_cell_dual on every backend, one set of tests parametrised over backend and device (op_cases.backends):
gradcheck, the tangent is the JVP, accuracy against the float64 reference, opcheck, and the refused double
backward."""
import pytest
import torch

from fastdstn.ops import reference as ref

from accuracy import LSTM_TERMS, assert_within_bound, scale_of
from op_cases import backends, check, copied, flat, lstm_args

TANGENTS = ["gc", "g", "c", ""]   # which tangents are given: of the gates, of the cell


@pytest.mark.parametrize("rows,hidden", [(3, 2), (3, 4)])
@pytest.mark.parametrize("tangents", TANGENTS, ids=lambda t: f"tangents-{t or 'none'}")
@pytest.mark.parametrize("backend", backends())
def test_lstm_cell_gradcheck(backend, tangents, rows, hidden):
    args = lstm_args(rows, hidden, tangents, True, torch.float64, backend.device)
    fn = lambda *a: flat(backend.lstm_cell_dual(*a))  # noqa: E731
    if backend.name == "triton":
        # The kernel computes in fp32 (its activations use exp in fp32), so the float64 check compares the
        # analytical backward with finite differences at fp32-level tolerances.
        assert torch.autograd.gradcheck(fn, args, eps=1e-3, atol=1e-3, rtol=1e-3)
    else:
        assert torch.autograd.gradcheck(fn, args)


@pytest.mark.parametrize("backend", backends())
def test_lstm_cell_tangent_is_the_jvp(backend):
    gates, gates_t, c, c_t = lstm_args(3, 2, "gc", False, torch.float64, backend.device)
    h, h_t, c_new, c_new_t = backend.lstm_cell_dual(gates, gates_t, c, c_t)
    cell = lambda g, cc: ref.lstm_cell_dual(g, None, cc, None)[::2]  # noqa: E731
    _, (jh, jc) = torch.func.jvp(cell, (gates, c), (gates_t, c_t))
    # The pointwise bound of tests/accuracy.py, in the precision the backend computes (Triton: float32).
    accumulate = torch.float32 if backend.name == "triton" else torch.float64
    assert_within_bound("tangents", [h_t, c_new_t], [jh, jc], scale_of([jh, jc]), LSTM_TERMS, accumulate=accumulate)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("rows,hidden", [(7, 33), (3, 5), (16, 64), (7, 300)])
@pytest.mark.parametrize("tangents", TANGENTS, ids=lambda t: f"tangents-{t or 'none'}")
@pytest.mark.parametrize("backend", backends("cpp", "triton"))
def test_lstm_cell_matches_the_float64_reference(backend, tangents, rows, hidden, dtype):
    """Pointwise: the magnitude is each result's scale and n = LSTM_TERMS (tests/accuracy.py)."""
    if dtype == torch.float64 and backend.name == "triton":
        pytest.skip("the Triton kernel computes in float32 (test_lstm_cell_gradcheck checks its float64 path)")
    args = copied(lstm_args(rows, hidden, tangents, True), dtype, backend.device)
    check("lstm", backend.lstm_cell_dual, ref.lstm_cell_dual, args, LSTM_TERMS, pointwise=True, accumulate=dtype)


@pytest.mark.parametrize("tangents,grad", [("gc", True), ("g", True), ("c", False), ("", True), ("gc", False),
                                           ("", False)])
@pytest.mark.parametrize("backend", backends("cpp", "triton"))
def test_lstm_cell_opcheck(backend, tangents, grad):
    args = lstm_args(3, 5, tangents, grad, torch.float32, backend.device)
    torch.library.opcheck(backend.registered("lstm_cell_dual"), args, test_utils=backend.opcheck_utils)


@pytest.mark.parametrize("backend", backends("triton"))
def test_lstm_cell_backward_op_opcheck(backend):
    """The Triton backward is an op of its own; it runs inside autograd's backward only (no double backward),
    so its inputs carry no grad."""
    saved = lstm_args(3, 2, "gc", False, torch.float32, backend.device)
    cotangents = lstm_args(3, 2, "gc", False, torch.float32, backend.device, seed=1)
    dh, dh_t = cotangents[2], cotangents[3]
    dc, dc_t = cotangents[2].clone(), cotangents[3].clone()
    torch.library.opcheck(torch.ops.fastdstn.lstm_cell_dual_backward_triton.default,
                          (*saved, dh, dh_t, dc, dc_t, [True, True, True, True]), test_utils=backend.opcheck_utils)


@pytest.mark.parametrize("backend", backends("triton"))
def test_lstm_cell_double_backward_is_refused(backend):
    """(The compiled op's refusal: test_dispatch.py, through gradgradcheck.)"""
    gates, gates_t, c, c_t = lstm_args(3, 2, "gc", True, torch.float32, backend.device)
    h, h_t, c2, c2_t = backend.lstm_cell_dual(gates, gates_t, c, c_t)
    with pytest.raises(RuntimeError, match="double backward through fastdstn::lstm_cell_dual_triton is not supported"):
        torch.autograd.grad(h.sum() + h_t.sum() + c2.sum() + c2_t.sum(), (gates, c), create_graph=True)
