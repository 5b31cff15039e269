"""The public ops (fastdstn.ops) on the reference backend: gradients, dropout semantics, argument checks."""
import pytest
import torch

from fastdstn import ops


def dense_args(B=4, n_in=5, n_out=3, H=2, bias=True, conv=False, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=dtype, requires_grad=True)  # noqa: E731
    x = rnd(B, n_in, 6, 6) if conv else rnd(B, n_in)
    wshape = (n_out, n_in, 3, 3) if conv else (n_out, n_in)
    return dict(x=x, xt=rnd(*x.shape), h=rnd(B, H), Wg=rnd(*wshape), bg=rnd(n_out) if bias else None,
                Wr=rnd(*wshape), br=rnd(n_out) if bias else None, V=rnd(2 * n_out if bias else n_out, H))


@pytest.fixture(autouse=True)
def reference_backend():
    with ops.use_backend("reference"):
        yield


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("with_tangent", [True, False])
def test_linear_ops_gradcheck(bias, with_tangent):
    a = dense_args(bias=bias)
    xt = a["xt"] if with_tangent else None
    assert torch.autograd.gradcheck(lambda *t: ops.stn_linear(*t), (a["x"], a["h"], a["Wg"], a["bg"], a["Wr"], a["br"], a["V"]))
    assert torch.autograd.gradcheck(lambda *t: ops.stn_linear_dual(*t),
                                    (a["x"], xt, a["h"], a["Wg"], a["bg"], a["Wr"], a["br"], a["V"]))


@pytest.mark.parametrize("bias", [True, False])
def test_conv_ops_gradcheck(bias):
    a = dense_args(B=2, n_in=2, n_out=3, bias=bias, conv=True)
    geometry = dict(stride=(2, 1), padding=(1, 0), dilation=1, groups=1)
    assert torch.autograd.gradcheck(lambda *t: ops.stn_conv2d(*t, **geometry),
                                    (a["x"], a["h"], a["Wg"], a["bg"], a["Wr"], a["br"], a["V"]))
    assert torch.autograd.gradcheck(lambda *t: ops.stn_conv2d_dual(*t, **geometry),
                                    (a["x"], a["xt"], a["h"], a["Wg"], a["bg"], a["Wr"], a["br"], a["V"]))


def test_embedding_and_lstm_cell_gradcheck():
    g = torch.Generator().manual_seed(0)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)  # noqa: E731
    tokens = torch.tensor([0, 3, 3, 1])
    assert torch.autograd.gradcheck(lambda *t: ops.stn_embedding(tokens, *t), (rnd(4, 2), rnd(5, 3), rnd(5, 3), rnd(3, 2)))
    assert torch.autograd.gradcheck(lambda *t: ops.stn_embedding_dual(tokens, *t), (rnd(4, 2), rnd(5, 3), rnd(5, 3), rnd(3, 2)))
    assert torch.autograd.gradcheck(lambda *t: ops.lstm_cell_dual(*t), (rnd(3, 8), rnd(3, 8), rnd(3, 2), rnd(3, 2)))
    assert torch.autograd.gradcheck(lambda *t: ops.lstm_cell_dual(t[0], None, t[1], None)[::2], (rnd(3, 8), rnd(3, 2)))


def test_lstm_cell_tangent_is_the_jvp():
    gates, gates_t, c, c_t = (torch.randn(3, 8, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64),
                              torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64))
    h, h_t, c_new, c_new_t = ops.lstm_cell_dual(gates, gates_t, c, c_t)
    cell = lambda g, cc: ops.lstm_cell_dual(g, None, cc, None)[::2]  # noqa: E731
    _, (jh, jc) = torch.func.jvp(cell, (gates, c), (gates_t, c_t))
    torch.testing.assert_close(h_t, jh, rtol=0, atol=1e-12)
    torch.testing.assert_close(c_new_t, jc, rtol=0, atol=1e-12)


def test_dropout_rate_per_example_and_same_mask_on_tangent():
    rate = torch.tensor([0.0, 0.1, 0.5, 0.9])
    x = torch.ones(4, 20000)
    y, yt = ops.dropout_dual(x, 2 * x, rate, seed=7)
    dropped = (y == 0).float().mean(1)
    torch.testing.assert_close(dropped, rate, atol=0.015, rtol=0)
    torch.testing.assert_close(yt, 2 * y)
    kept = y[y != 0].reshape(-1)
    assert torch.allclose(y[2][y[2] != 0], torch.full_like(y[2][y[2] != 0], 2.0))   # 1/(1 − 0.5)
    assert kept.numel() > 0
    torch.testing.assert_close(y.mean(1), torch.ones(4), atol=0.05, rtol=0)          # unbiased


def test_dropout_shared_dims_share_one_draw():
    x = torch.ones(3, 4, 5, 6)
    y, _ = ops.dropout_dual(x, None, torch.full((3,), 0.5), seed=3, shared_dims=(2, 3))
    per_channel = y.flatten(2)
    assert (per_channel == per_channel[..., :1]).all(), "channel dropout keeps or drops whole channels"
    seq = torch.ones(7, 3, 4)
    z, _ = ops.dropout_dual(seq, None, torch.full((3,), 0.5), seed=3, batch_dim=1, shared_dims=(0,))
    assert (z == z[:1]).all(), "locked dropout uses one mask for all time steps"


def test_dropout_seed_determines_mask_and_backward_reuses_it():
    x = torch.randn(4, 50, requires_grad=True)
    rate = torch.full((4,), 0.3)
    y1, _ = ops.dropout_dual(x, None, rate, seed=11)
    y2, _ = ops.dropout_dual(x, None, rate, seed=11)
    torch.testing.assert_close(y1, y2)
    y1.sum().backward()
    torch.testing.assert_close(x.grad, (y1 / x).detach())


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


def test_bad_dropout_and_conv_arguments_are_named():
    with pytest.raises(ValueError, match=r"rate: expected finite"):
        ops.dropout_dual(torch.ones(2, 3), None, torch.tensor([0.1, float("nan")]), seed=0)
    with pytest.raises(ValueError, match=r"rate: expected drop probabilities in \[0, 1\)"):
        ops.dropout_dual(torch.ones(2, 3), None, torch.tensor([0.1, 1.0]), seed=0)
    with pytest.raises(ValueError, match=r"rate: expected shape \(2,\)"):
        ops.dropout_dual(torch.ones(2, 3), None, torch.tensor([0.1]), seed=0)
    a = {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in dense_args(conv=True).items()}
    with pytest.raises(ValueError, match=r"x: expected 10 input channels"):
        ops.stn_conv2d(a["x"], a["h"], a["Wg"], a["bg"], a["Wr"], a["br"], a["V"], groups=2)
    with pytest.raises(ValueError, match="use_backend"):
        with ops.use_backend("cuda-magic"):
            pass


def test_missing_backend_falls_back_to_reference_with_one_warning(monkeypatch):
    from fastdstn.ops import dispatch
    monkeypatch.setitem(dispatch._loaded, "triton", None)
    monkeypatch.setitem(dispatch._load_errors, "triton", "not built for this test")
    monkeypatch.setattr(dispatch, "_warned", set())
    a = {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in dense_args().items()}
    expected = ops.reference.stn_linear(a["x"], a["h"], a["Wg"], a["bg"], a["Wr"], a["br"], a["V"])
    with ops.use_backend("triton"):
        with pytest.warns(RuntimeWarning, match="not built for this test"):
            y = ops.stn_linear(a["x"], a["h"], a["Wg"], a["bg"], a["Wr"], a["br"], a["V"])
        torch.testing.assert_close(y, expected)
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ops.stn_linear(a["x"], a["h"], a["Wg"], a["bg"], a["Wr"], a["br"], a["V"])


def test_device_mismatch_is_named():
    a = {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in dense_args(dtype=torch.float32).items()}
    with pytest.raises(ValueError, match=r"V: expected device cpu \(the device of x\), received .*device meta"):
        ops.stn_linear(a["x"], a["h"], a["Wg"], a["bg"], a["Wr"], a["br"], a["V"].to("meta"))
