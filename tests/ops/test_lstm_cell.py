"""lstm_cell_dual on every backend: the reference (gradients, the tangent is the JVP), the compiled op
(opcheck, gradcheck, float32 accuracy; on CUDA where a GPU is there) and the Triton kernels."""
import pytest
import torch

import fastdstn.ops as ops
from fastdstn.ops import reference as ref

from accuracy import LSTM_TERMS
from op_cases import (CPP_OPCHECK_UTILS, TRITON_OPCHECK_UTILS, assert_accurate, check, compiled, copied, cuda_only,
                      fixed_cotangents, flat, lstm_args, make, needs_cpp, needs_triton, outputs_and_grads,
                      triton_module)

TLSTM = triton_module("lstm_cell.triton")


@pytest.mark.usefixtures("reference_backend")
def test_lstm_cell_gradcheck():
    g = torch.Generator().manual_seed(0)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)  # noqa: E731
    assert torch.autograd.gradcheck(lambda *t: ops.lstm_cell_dual(*t), (rnd(3, 8), rnd(3, 8), rnd(3, 2), rnd(3, 2)))
    assert torch.autograd.gradcheck(lambda *t: ops.lstm_cell_dual(t[0], None, t[1], None)[::2], (rnd(3, 8), rnd(3, 2)))


@pytest.mark.usefixtures("reference_backend")
def test_lstm_cell_tangent_is_the_jvp():
    gates, gates_t, c, c_t = (torch.randn(3, 8, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64),
                              torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64))
    h, h_t, c_new, c_new_t = ops.lstm_cell_dual(gates, gates_t, c, c_t)
    cell = lambda g, cc: ops.lstm_cell_dual(g, None, cc, None)[::2]  # noqa: E731
    _, (jh, jc) = torch.func.jvp(cell, (gates, c), (gates_t, c_t))
    torch.testing.assert_close(h_t, jh, rtol=0, atol=1e-12)
    torch.testing.assert_close(c_new_t, jc, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------------- the compiled op
@needs_cpp
@pytest.mark.parametrize("tangents,grad", [("gc", True), ("g", True), ("c", False), ("", True)])
def test_cpp_opcheck_lstm(tangents, grad):
    args = lstm_args(3, 5, tangents, grad)
    torch.library.opcheck(torch.ops.fastdstn.lstm_cell_dual.default, args, test_utils=CPP_OPCHECK_UTILS)


@needs_cpp
@pytest.mark.parametrize("tangents", ["gc", "g", "c", ""])
def test_cpp_gradcheck_lstm(tangents):
    args = lstm_args(3, 4, tangents, True, torch.float64)
    assert torch.autograd.gradcheck(lambda *a: flat(compiled.lstm_cell_dual(*a)), args)


@needs_cpp
@pytest.mark.parametrize("tangents", ["gc", "g", ""])
def test_cpp_float32_lstm_vs_reference(tangents):
    args = lstm_args(7, 33, tangents, True)
    assert_accurate(compiled.lstm_cell_dual, ref.lstm_cell_dual, args, LSTM_TERMS, pointwise=True)


@needs_cpp
@cuda_only
@pytest.mark.parametrize("tangents", ["gc", "g", ""])
def test_cuda_lstm_cell_matches_the_reference(tangents):
    args = copied(lstm_args(7, 33, tangents, True), torch.float64, "cuda")
    cot = fixed_cotangents(ref.lstm_cell_dual(*args))
    want = outputs_and_grads(ref.lstm_cell_dual, args, cot)
    for g, w in zip(outputs_and_grads(compiled.lstm_cell_dual, args, cot), want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------------------------------------------ Triton
@needs_triton
@pytest.mark.parametrize("with_gt,with_ct", [(True, True), (True, False), (False, True), (False, False)])
@pytest.mark.parametrize("rows,hidden", [(3, 5), (16, 64), (7, 300)])
def test_triton_lstm_cell_dual(rows, hidden, with_gt, with_ct):
    gates, c = make((rows, 4 * hidden)), make((rows, hidden))
    gates_t = make((rows, 4 * hidden)) if with_gt else None
    c_t = make((rows, hidden)) if with_ct else None
    check("lstm", TLSTM.lstm_cell_dual, ref.lstm_cell_dual, [gates, gates_t, c, c_t], LSTM_TERMS, pointwise=True)


@needs_triton
def test_triton_lstm_opcheck():
    gates, gates_t, c, c_t = make((3, 8)), make((3, 8)), make((3, 2)), make((3, 2))
    for args in ((gates, gates_t, c, c_t), (gates, None, c, None), (gates, gates_t, c, None)):
        torch.library.opcheck(torch.ops.fastdstn.lstm_cell_dual_triton.default, args, test_utils=TRITON_OPCHECK_UTILS)
    # The backward op runs inside autograd's backward only (no double backward): its inputs carry no grad.
    dh, dh_t, dc, dc_t = (make((3, 2), requires_grad=False) for _ in range(4))
    saved = [t.detach() for t in (gates, gates_t, c, c_t)]
    torch.library.opcheck(torch.ops.fastdstn.lstm_cell_dual_backward_triton.default,
                          (*saved, dh, dh_t, dc, dc_t, [True, True, True, True]), test_utils=TRITON_OPCHECK_UTILS)


@needs_triton
@pytest.mark.parametrize("with_gt,with_ct", [(True, True), (False, True), (False, False)])
def test_triton_lstm_gradcheck_float64(with_gt, with_ct):
    gates = make((3, 8), dtype=torch.float64)
    c = make((3, 2), dtype=torch.float64)
    gates_t = make((3, 8), dtype=torch.float64) if with_gt else None
    c_t = make((3, 2), dtype=torch.float64) if with_ct else None
    # The kernel computes in fp32 (its activations use exp in fp32), so the float64 check compares the
    # analytical backward with finite differences at fp32-level tolerances.
    assert torch.autograd.gradcheck(lambda *a: tuple(o for o in TLSTM.lstm_cell_dual(*a) if o is not None),
                                    (gates, gates_t, c, c_t), eps=1e-3, atol=1e-3, rtol=1e-3)


@needs_triton
def test_triton_lstm_double_backward_is_refused():
    gates, gates_t, c, c_t = make((3, 8)), make((3, 8)), make((3, 2)), make((3, 2))
    h, h_t, c2, c2_t = TLSTM.lstm_cell_dual(gates, gates_t, c, c_t)
    with pytest.raises(RuntimeError, match="double backward through fastdstn::lstm_cell_dual_triton is not supported"):
        torch.autograd.grad(h.sum() + h_t.sum() + c2.sum() + c2_t.sum(), (gates, c), create_graph=True)
