import pytest
import torch
import torchvision
from torch import nn

from fastdstn import Hyper, HyperSpace, convert, feeding
from fastdstn.nn import (StnConv2d, StnDropout, StnEmbedding, StnLinear, StnLSTM, general_parameters,
                         response_parameters, weight_penalty)
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


def test_convert_resnet18_reproduces_the_original_exactly():
    torch.manual_seed(0)
    original = torchvision.models.resnet18(num_classes=10).eval()
    space = HyperSpace([Hyper("p", 0.1, 0, 1)])
    model = convert(original, space).eval()
    assert sum(isinstance(m, StnConv2d) for m in model.modules()) == 20
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = original(x)
        torch.testing.assert_close(model(x), expected, rtol=0, atol=0)
        with feeding(torch.randn(2, 1)):      # V = 0 at conversion: any h gives the general network
            torch.testing.assert_close(model(x), expected, rtol=1e-6, atol=1e-6)


def test_convert_maps_dropout_sites_and_lstm_embedding():
    original = nn.ModuleDict({"embed": nn.Embedding(10, 4), "lstm": nn.LSTM(4, 5, num_layers=2),
                              "drop": nn.Dropout(0.5), "head": nn.Linear(5, 3)}).double()
    space = HyperSpace([Hyper("out_drop", 0.2, 0.0, 0.9)])
    converted = convert(original, space, dropout={"drop": "out_drop"})
    assert isinstance(converted["drop"], StnDropout) and converted["drop"].hyper == "out_drop"
    assert isinstance(converted["lstm"], StnLSTM) and isinstance(converted["embed"], StnEmbedding)
    tokens = torch.randint(0, 10, (6, 2))
    x = original["embed"](tokens)
    torch.testing.assert_close(converted["embed"](tokens), x, rtol=0, atol=0)
    out_ref, (h_ref, c_ref) = original["lstm"](x)
    out, (h, c) = converted["lstm"](x)
    torch.testing.assert_close(out, out_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c, c_ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(KeyError, match="dropout site 'nope'"):
        convert(original, space, dropout={"nope": "out_drop"})
    with pytest.raises(TypeError, match="dropout site 'head' is a Linear"):
        convert(original, space, dropout={"head": "out_drop"})
    with pytest.raises(KeyError, match="unknown hyperparameters \\['typo'\\]"):
        convert(original, space, dropout={"drop": "typo"})


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
