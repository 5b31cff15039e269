import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn

from fastdstn import Hyper, HyperSpace, SelfTuning, convert, feeding, make_optimizers
from fastdstn.nn import (StnConv2d, StnDropout, StnEmbedding, StnLinear, StnLockedDropout, StnLSTM,
                         general_parameters, response_parameters, weight_penalty)
from stn_test_models import MLP, randomize_hyper_proj


def test_linear_layer_formula_and_plain_path():
    layer = StnLinear(5, 3, 2).double()
    randomize_hyper_proj(layer)
    x, h = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    plain = nn.functional.linear(x, layer.weight, layer.bias)
    torch.testing.assert_close(layer(x), plain, rtol=0, atol=0)
    st = h @ layer.hyper_proj.t()
    expected = plain + st[:, :3] * (x @ layer.response_weight.t()) + st[:, 3:] * layer.response_bias
    with feeding(h):
        torch.testing.assert_close(layer(x), expected)
        torch.testing.assert_close(layer(x[:, None].expand(4, 7, 5))[:, 3], expected)   # (B, T, in) inputs


@pytest.mark.parametrize("padding, padding_mode", [(1, "zeros"), ("same", "zeros"), (2, "reflect"), ("valid", "zeros")])
def test_conv_layer_matches_its_formula(padding, padding_mode):
    layer = StnConv2d(3, 4, (3, 4), 2, padding=padding, padding_mode=padding_mode).double()
    randomize_hyper_proj(layer)
    x, h = torch.randn(2, 3, 9, 8, dtype=torch.float64), torch.randn(2, 2, dtype=torch.float64)
    general = layer._conv_forward(x, layer.weight, layer.bias)
    response = layer._conv_forward(x, layer.response_weight, None)
    st = h @ layer.hyper_proj.t()
    expected = general + st[:, :4, None, None] * response + (st[:, 4:] * layer.response_bias)[:, :, None, None]
    torch.testing.assert_close(layer(x), general, rtol=0, atol=0)
    with feeding(h):
        torch.testing.assert_close(layer(x), expected)


def test_layers_gradcheck_under_a_feed():
    torch.manual_seed(0)
    for layer, x in [(StnLinear(4, 3, 2), torch.randn(3, 4)), (StnConv2d(2, 3, 3, 2, stride=2, padding=1), torch.randn(3, 2, 5, 5)),
                     (StnLSTM(3, 2, 2, num_layers=2), torch.randn(4, 3, 3))]:
        layer = layer.double()
        randomize_hyper_proj(layer)
        params = list(layer.parameters())
        names = [n for n, _ in layer.named_parameters()]

        def f(x, h, *p):
            out = torch.func.functional_call(layer, dict(zip(names, p)), (x,))
            return out[0] if isinstance(out, tuple) else out

        def fed(x, h, *p):
            with feeding(h):
                return f(x, h, *p)

        h = torch.randn(x.shape[1] if isinstance(layer, StnLSTM) else x.shape[0], 2, dtype=torch.float64, requires_grad=True)
        inputs = (x.double().requires_grad_(), h, *[p.detach().clone().requires_grad_() for p in params])
        assert torch.autograd.gradcheck(fed, inputs), type(layer).__name__


def test_hyper_count_and_batch_mismatch_errors_name_the_layer():
    layer = StnLinear(4, 3, num_hypers=2)
    with feeding(torch.randn(5, 3)):
        with pytest.raises(ValueError, match=r"StnLinear\(in_features=4.*built for 2 hyperparameters.*3 columns"):
            layer(torch.randn(5, 4))
    with feeding(torch.randn(6, 2)):
        with pytest.raises(ValueError, match="h for 6 examples, but the input batch has 5"):
            layer(torch.randn(5, 4))
    with feeding(torch.randn(5, 2), values={"p": torch.rand(5)}):
        with pytest.raises(KeyError, match=r"StnDropout\('q'\).*reads hyperparameter 'q'.*carries p"):
            StnDropout("q")(torch.randn(5, 4))


def test_parameter_groups_partition_the_model():
    model = MLP(3)
    general, response = general_parameters(model), response_parameters(model)
    assert {id(p) for p in general}.isdisjoint({id(p) for p in response})
    assert len(general) + len(response) == len(list(model.parameters()))
    assert len(response) == 3 * 3     # W_r, b_r, V of three layers
    layer = model[1]
    assert {id(p) for p in layer.response_parameters()} == {id(layer.response_weight), id(layer.response_bias), id(layer.hyper_proj)}


def test_weight_penalty_closed_form_is_the_mean_of_per_example_norms():
    model = MLP(3).double()
    randomize_hyper_proj(model)
    h = torch.randn(7, 3, dtype=torch.float64)
    explicit = 0.0
    for layer in (m for m in model.modules() if isinstance(m, StnLinear)):
        s = h @ layer.hyper_proj[: layer.out_features].t()
        per_example = layer.weight[None] + s[:, :, None] * layer.response_weight[None]
        explicit = explicit + per_example.pow(2).sum((1, 2)).mean()
    torch.testing.assert_close(weight_penalty(model, h), explicit)
    torch.testing.assert_close(weight_penalty(model), sum(m.weight.pow(2).sum() for m in model.modules()
                                                          if isinstance(m, StnLinear)))


def test_unbatched_inputs_are_an_error_inside_a_feed_and_plain_outside():
    with feeding(torch.randn(1, 2)):
        with pytest.raises(ValueError, match=r"StnLinear\(in_features=5.*must be batched.*unbatched.* \(5,\)"):
            StnLinear(5, 3, 2)(torch.randn(5))
        with pytest.raises(ValueError, match=r"StnLinear.*examples along dim 1.*unbatched input of shape \(4, 5\)"):
            StnLinear(5, 3, 2, batch_dim=1)(torch.randn(4, 5))
        with pytest.raises(ValueError, match=r"StnConv2d.*\(B, C, H, W\).*unbatched input of shape \(2, 6, 6\)"):
            StnConv2d(2, 3, 3, 2)(torch.randn(2, 6, 6))
        with pytest.raises(ValueError, match=r"StnLSTM.*\(T, B, input_size\).*unbatched input of shape \(5, 6\)"):
            StnLSTM(6, 4, 2)(torch.randn(5, 6))
    original = nn.LSTM(6, 4, num_layers=2).double()
    lstm = convert(original, 2)
    x, state = torch.randn(5, 6, dtype=torch.float64), (torch.randn(2, 4, dtype=torch.float64),) * 2
    out, (h, c) = lstm(x, state)
    out_ref, (h_ref, c_ref) = original(x, state)
    assert out.shape == (5, 4) and h.shape == (2, 4)
    torch.testing.assert_close((out, h, c), (out_ref, h_ref, c_ref))
    layer = StnLinear(5, 3, 2)
    torch.testing.assert_close(layer(torch.ones(5)), F.linear(torch.ones(5), layer.weight, layer.bias))


@pytest.mark.parametrize("dual", [False, True])
def test_padding_row_gets_no_gradient_inside_a_feed(dual):
    layer = StnEmbedding(6, 3, 2, padding_idx=0).double()
    randomize_hyper_proj(layer)
    assert layer.weight[0].abs().sum() == 0 and layer.response_weight[0].abs().sum() == 0
    tokens = torch.tensor([[0, 1, 2], [3, 0, 5]])
    h = torch.randn(2, 2, dtype=torch.float64)
    with fwAD.dual_level(), feeding(h, dual=dual):
        primal, tangent = fwAD.unpack_dual(layer(tokens))
        (primal if tangent is None else primal + tangent).pow(2).sum().backward()
    for p in (layer.response_weight,) if dual else (layer.weight, layer.response_weight):
        assert p.grad[0].abs().sum() == 0 and p.grad[1].abs().sum() > 0


def test_a_fed_drop_probability_outside_0_1_is_an_error_naming_the_hyperparameter():
    x = torch.randn(2, 4)
    with feeding(None, values={"p": torch.tensor([0.2, 1.7])}):
        with pytest.raises(ValueError, match=r"StnDropout\('p'\): hyperparameter 'p'.*\[0\.2, 1\.7\]"):
            StnDropout("p")(x)
        lstm = StnLSTM(4, 3, 1, dropconnect="p").train()
        with pytest.raises(ValueError, match=r"StnLSTM\(dropconnect='p'\): hyperparameter 'p'"):
            lstm(torch.randn(3, 2, 4))
    with feeding(None, values={"p": torch.tensor([0.2, -0.1])}):
        with pytest.raises(ValueError, match=r"hyperparameter 'p' is used as a drop probability"):
            StnLockedDropout("p", batch_first=True)(torch.randn(2, 3, 4))
    with feeding(None, values={"p": torch.tensor([0.0, 1.0])}):      # a float32 sigmoid rounding up to 1
        assert torch.isfinite(StnDropout("p")(x)).all()


def test_positions_without_an_example_dimension_get_the_batch_mean_h():
    """B = T = 4: a 1-d position input is never read as one token per example."""
    layer = StnEmbedding(8, 3, 2).double()
    randomize_hyper_proj(layer)
    positions = torch.arange(4)
    h = torch.randn(4, 2, dtype=torch.float64)
    s = h.mean(0) @ layer.hyper_proj.t()
    expected = layer.weight[positions] + s * layer.response_weight[positions]
    with feeding(h):
        torch.testing.assert_close(layer(positions), expected)
        torch.testing.assert_close(layer(positions[None]), expected[None])     # HF's (1, T) position ids
    with feeding(torch.randn(5, 2, dtype=torch.float64)):
        assert layer(positions).shape == (4, 3)                               # B = 5 ≠ T: no error either
    with fwAD.dual_level(), feeding(h, dual=True):
        torch.testing.assert_close(fwAD.unpack_dual(layer(positions)).tangent, s * layer.response_weight[positions])


def _bias_models():
    """(model, inputs) per layer type that convert makes; each reads the hyperparameter "p"."""
    drop = StnDropout("p")
    yield "linear", nn.Sequential(StnLinear(6, 8, 1), drop, nn.Tanh(), StnLinear(8, 3, 1)), torch.randn(8, 6)
    yield "conv", nn.Sequential(StnConv2d(2, 4, 3, 1, padding=1), drop, nn.Tanh(), nn.Flatten(),
                                StnLinear(4 * 5 * 5, 3, 1)), torch.randn(8, 2, 5, 5)
    yield "embedding", nn.Sequential(StnEmbedding(10, 6, 1), drop, nn.Flatten(), StnLinear(6 * 4, 3, 1)), \
        torch.randint(0, 10, (8, 4))

    class Recurrent(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm, self.head = StnLSTM(6, 5, 1, batch_first=True, dropconnect="p"), StnLinear(5, 3, 1)

        def forward(self, x):
            return self.head(self.lstm(x)[0][:, -1])
    yield "lstm", Recurrent(), torch.randn(8, 4, 6)

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = convert(nn.MultiheadAttention(6, 2, batch_first=True), 1)
            self.attn.dropout_hyper = "p"
            self.head = StnLinear(6, 3, 1)

        def forward(self, x):
            return self.head(self.attn(x, x, x, need_weights=False)[0].mean(1))
    yield "attention", Attention(), torch.randn(8, 4, 6)


@pytest.mark.parametrize("kind", ["linear", "conv", "embedding", "lstm", "attention"])
def test_response_bias_and_bias_gates_train(kind):
    """b_r starts like b_g (not at 0), so after a few Δ-STN steps b_r and V's bias-gate rows [t] have moved."""
    torch.manual_seed(0)
    model, x = next((m, x) for k, m, x in _bias_models() if k == kind)
    space = HyperSpace([Hyper("p", 0.2, 0.0, 0.9)])
    # A key bias adds one constant to each query's scores, which softmax removes: its gradient is 0 in any model.
    layers = [m for name, m in model.named_modules() if hasattr(m, "hyper_proj") and not name.endswith("k_proj")]
    before = [(m.response_bias.detach().clone() if m.response_bias is not None else None, m.hyper_proj.detach().clone())
              for m in layers]
    assert all(b is None or b.abs().sum() > 0 for b, _ in before), "b_r starts away from 0"
    method = SelfTuning(model, space, "delta", loss_fn=F.cross_entropy)
    optimizers = make_optimizers(model, space, "delta", lr=0.1)
    y = torch.randint(0, 3, (8,))
    for _ in range(3):
        method.train_step(x, y, optimizers)
    for m, (bias, V) in zip(layers, before):
        if bias is None:                    # no bias (embedding, hidden-to-hidden): the scale rows move
            assert not torch.equal(m.hyper_proj, V), m
            continue
        out = bias.shape[0]
        assert not torch.equal(m.response_bias, bias), f"{m}: b_r did not move"
        assert m.hyper_proj[out:].abs().sum() > 0, f"{m}: V's bias rows did not move"
