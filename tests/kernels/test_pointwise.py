"""The pointwise Triton kernels (fastdstn.ops.dropout.triton, fastdstn.ops.lstm_cell.triton): dropout_dual (in-kernel Philox) and lstm_cell_dual."""
import pytest
import torch

from fastdstn.ops.dropout import triton as TD
from fastdstn.ops.lstm_cell import triton as TL
from fastdstn.ops import reference as R

from accuracy import LSTM_TERMS
from kernel_checks import DEVICE, OPCHECK_UTILS, check, grads, make


def scale_of(y, x):
    """The mask that was applied: y / x (x has no zeros in these tests)."""
    return (y / x).detach()


def test_dropout_same_mask_on_primal_and_tangent():
    x, xt = make((8, 300)), make((8, 300))
    rate = torch.linspace(0.0, 0.7, 8, device=DEVICE)
    y, yt = TD.dropout_dual(x, xt, rate, 1234)
    m, mt = scale_of(y, x), scale_of(yt, xt)
    torch.testing.assert_close(m, mt)
    expected = (1 / (1 - rate))[:, None].expand_as(m)
    kept = m != 0
    torch.testing.assert_close(m[kept], expected[kept])
    assert kept[0].all(), "rate 0 keeps everything"


def test_dropout_rates_per_example():
    x = torch.ones((4, 16384), device=DEVICE)
    rate = torch.tensor([0.0, 0.1, 0.5, 0.9], device=DEVICE)
    y, yt = TD.dropout_dual(x, None, rate, 7)
    assert yt is None
    dropped = (y == 0).float().mean(1)
    # Binomial standard error at n = 16384 is <= 0.004; 0.02 is 5 standard errors.
    assert (dropped - rate).abs().max() < 0.02, dropped


def test_dropout_deterministic_in_seed():
    x = make((6, 50))
    rate = torch.full((6,), 0.5, device=DEVICE)
    a, _ = TD.dropout_dual(x, None, rate, 5)
    b, _ = TD.dropout_dual(x, None, rate, 5)
    c, _ = TD.dropout_dual(x, None, rate, 6)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("shape,batch_dim,shared", [
    ((4, 6, 5, 7), 0, (2, 3)),   # channel dropout of images
    ((9, 4, 33), 1, (0,)),       # locked dropout of (T, B, D)
    ((3, 5, 2, 4, 6), 0, (1, 3)),  # five dims, two shared groups
])
def test_dropout_shared_dims(shape, batch_dim, shared):
    x, xt = make(shape), make(shape)
    rate = torch.rand(shape[batch_dim], device=DEVICE) * 0.6
    y, yt = TD.dropout_dual(x, xt, rate, 99, batch_dim, shared)
    m = scale_of(y, x)
    torch.testing.assert_close(m, scale_of(yt, xt))
    for d in shared:
        # y / x recovers the scale up to rounding: compare with a tolerance, and the zero pattern exactly.
        first = m.narrow(d, 0, 1).expand_as(m)
        torch.testing.assert_close(m, first, msg=f"mask varies along shared dim {d}")
        assert torch.equal(m == 0, first == 0)
    view = [1] * len(shape)
    view[batch_dim] = -1
    expected = (1 / (1 - rate)).reshape(view).expand_as(m)
    torch.testing.assert_close(m[m != 0], expected[m != 0])


def test_dropout_unmergeable_falls_back_to_reference():
    x = make((2, 3, 4, 5, 6, 7))
    rate = torch.full((2,), 0.3, device=DEVICE)
    y, _ = TD.dropout_dual(x, None, rate, 3, 0, (1, 3, 5))
    torch.testing.assert_close(y, R.dropout_dual(x, None, rate, 3, 0, (1, 3, 5))[0])


@pytest.mark.parametrize("with_xt", [True, False])
def test_dropout_backward_is_the_same_mask(with_xt):
    x, xt = make((5, 70)), (make((5, 70)) if with_xt else None)
    rate = torch.rand(5, device=DEVICE) * 0.8
    rate.requires_grad_(True)
    y, yt = TD.dropout_dual(x, xt, rate, 11)
    m = scale_of(y, x)
    cy, cyt = torch.randn_like(y), torch.randn_like(y)
    g = grads([y, yt], [cy, cyt], [x, xt, rate])
    torch.testing.assert_close(g[0], cy * m)
    if with_xt:
        torch.testing.assert_close(g[1], cyt * m)
    assert g[2] is None, "rates are detached (SPEC §2)"


def test_dropout_opcheck():
    x, xt = make((3, 10)), make((3, 10))
    rate = torch.full((3,), 0.4, device=DEVICE)
    torch.library.opcheck(torch.ops.fastdstn.dropout_dual_triton.default, (x, xt, rate, 1, 0, []),
                          test_utils=OPCHECK_UTILS)
    torch.library.opcheck(torch.ops.fastdstn.dropout_dual_triton.default, (x, None, rate, 1, 0, []),
                          test_utils=OPCHECK_UTILS)


@pytest.mark.parametrize("with_gt,with_ct", [(True, True), (True, False), (False, True), (False, False)])
@pytest.mark.parametrize("rows,hidden", [(3, 5), (16, 64), (7, 300)])
def test_lstm_cell_dual(rows, hidden, with_gt, with_ct):
    gates, c = make((rows, 4 * hidden)), make((rows, hidden))
    gates_t = make((rows, 4 * hidden)) if with_gt else None
    c_t = make((rows, hidden)) if with_ct else None
    check("lstm", TL.lstm_cell_dual, R.lstm_cell_dual, [gates, gates_t, c, c_t], LSTM_TERMS, pointwise=True)


def test_lstm_opcheck():
    gates, gates_t, c, c_t = make((3, 8)), make((3, 8)), make((3, 2)), make((3, 2))
    for args in ((gates, gates_t, c, c_t), (gates, None, c, None), (gates, gates_t, c, None)):
        torch.library.opcheck(torch.ops.fastdstn.lstm_cell_dual_triton.default, args, test_utils=OPCHECK_UTILS)
    # The backward op runs inside autograd's backward only (no double backward): its inputs carry no grad.
    dh, dh_t, dc, dc_t = (make((3, 2), requires_grad=False) for _ in range(4))
    saved = [t.detach() for t in (gates, gates_t, c, c_t)]
    torch.library.opcheck(torch.ops.fastdstn.lstm_cell_dual_backward_triton.default,
                          (*saved, dh, dh_t, dc, dc_t, [True, True, True, True]), test_utils=OPCHECK_UTILS)


@pytest.mark.parametrize("with_gt,with_ct", [(True, True), (False, True), (False, False)])
def test_lstm_gradcheck_float64(with_gt, with_ct):
    gates = make((3, 8), dtype=torch.float64)
    c = make((3, 2), dtype=torch.float64)
    gates_t = make((3, 8), dtype=torch.float64) if with_gt else None
    c_t = make((3, 2), dtype=torch.float64) if with_ct else None
    # The kernel computes in fp32 (its activations use exp in fp32), so the float64 check compares the
    # analytical backward with finite differences at fp32-level tolerances.
    assert torch.autograd.gradcheck(lambda *a: tuple(o for o in TL.lstm_cell_dual(*a) if o is not None),
                                    (gates, gates_t, c, c_t), eps=1e-3, atol=1e-3, rtol=1e-3)


def test_lstm_double_backward_is_refused():
    gates, gates_t, c, c_t = make((3, 8)), make((3, 8)), make((3, 2)), make((3, 2))
    h, h_t, c2, c2_t = TL.lstm_cell_dual(gates, gates_t, c, c_t)
    with pytest.raises(RuntimeError, match="double backward through fastdstn::lstm_cell_dual_triton is not supported"):
        torch.autograd.grad(h.sum() + h_t.sum() + c2.sum() + c2_t.sum(), (gates, c), create_graph=True)
