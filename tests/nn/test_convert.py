"""convert(): what it matches, the general weights it keeps (tied ones tied), the fused paths it turns off, the
report it gives, and the checks of the first training step."""
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from fastdstn import Hyper, HyperSpace, SelfTuning, convert, feeding, make_optimizers
from fastdstn.nn import (ExplicitTransformerEncoderLayer, StnConv2d, StnDropout, StnEmbedding, StnLinear, StnLSTM,
                         StnMultiheadAttention)
from stn_test_models import randomize_hyper_proj

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



def test_linear_subclasses_convert_by_what_they_are():
    class SameForward(nn.Linear):
        pass

    class OwnForward(nn.Linear):
        def forward(self, x):
            return super().forward(x).relu()

    original = nn.Sequential(SameForward(4, 4), nn.modules.linear.NonDynamicallyQuantizableLinear(4, 4),
                             OwnForward(4, 4), nn.Conv1d(4, 4, 1))
    model = convert(original, 1)
    assert isinstance(model[0], StnLinear) and isinstance(model[1], StnLinear)
    assert type(model[2]) is OwnForward and type(model[3]) is nn.Conv1d
    report = model.stn_conversion
    assert not report.complete
    assert [(n, why.split(",")[0]) for n, _, why in report.unsupported] == [
        ("2", "overrides Linear.forward"), ("3", "no STN layer for Conv1d")]
    assert model[0].weight is not original[0].weight, "convert copies the model unless inplace=True"
    inplace = convert(original, 1, skip=lambda name, m: name == "1", inplace=True)
    assert inplace is original and type(original[1]) is nn.modules.linear.NonDynamicallyQuantizableLinear
    assert ("1", "NonDynamicallyQuantizableLinear", "skip() asked") in inplace.stn_conversion.kept


def test_report_lists_converted_kept_dropout_and_unread():
    original = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Dropout(0.1), nn.Dropout(0.2), nn.Linear(8, 2))
    space = HyperSpace([Hyper("d", 0.1, 0.0, 0.9), Hyper("wd", 1e-3, 0.0, 1.0, per_example=False)])
    model = convert(original, space, dropout={"3": "d"})
    report = model.stn_conversion
    assert report.complete and report.unread == ["wd"] and report.dropout == {"3": ("d", "dropout")}
    assert [n for n, *_ in report.converted] == ["0", "3", "4"]
    assert report.kept == [("1", "LayerNorm", "normalisation: general parameters only"),
                           ("2", "Dropout", "fixed-rate dropout p=0.1; map it with dropout= to tune it")]
    text = str(report)
    assert "3 modules converted, 2 kept as they are, 0 unsupported (complete)" in text and "3: dropout <- d" in text


def test_dropout_patterns_and_their_errors():
    original = nn.ModuleDict({"a": nn.Sequential(nn.Dropout(), nn.Linear(2, 2)), "b": nn.Sequential(nn.Dropout())})
    space = HyperSpace([Hyper("d", 0.1, 0.0, 0.9), Hyper("e", 0.1, 0.0, 0.9)])
    model = convert(original, space, dropout={"*.0": "d"})
    assert model["a"][0].hyper == model["b"][0].hyper == "d"
    with pytest.raises(KeyError, match=r"dropout site 'c\.\*' is not a module"):
        convert(original, space, dropout={"c.*": "d"})
    with pytest.raises(TypeError, match=r"dropout site 'a\.1' is a Linear, expected nn.Dropout, nn.Dropout2d or an "
                                        r"attention module"):
        convert(original, space, dropout={"a.*": "d"})
    with pytest.raises(ValueError, match=r"'a\.0' is mapped to both 'd' and 'e'"):
        convert(original, space, dropout={"*.0": "d", "a.0": "e"})
    with pytest.raises(ValueError, match=r"dropout sites \['a\.0'\] lie inside modules that skip\(\) keeps"):
        convert(original, space, dropout={"a.0": "d"}, skip=lambda name, m: name == "a")


def test_unsupported_configurations_say_what_to_do():
    with pytest.raises(ValueError, match=r"nn.LSTM with bidirectional, proj_size or dropout.*skip=.*"
                                         r"StnLSTM\(\.\.\., layer_dropout='<hyperparameter>'\)"):
        convert(nn.LSTM(3, 4, num_layers=2, dropout=0.3), 1)
    with pytest.raises(ValueError, match="add_bias_kv or add_zero_attn"):
        convert(nn.MultiheadAttention(4, 2, add_bias_kv=True), 1)
    with pytest.raises(ValueError, match="lazy module that has not been initialised"):
        convert(nn.Sequential(nn.LazyLinear(3)), 1)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("kdim", [None, 6])
def test_multihead_attention_matches_the_original(batch_first, kdim):
    original = nn.MultiheadAttention(8, 2, dropout=0.1, batch_first=batch_first, kdim=kdim, vdim=kdim).double().eval()
    model = convert(original, 1).eval()
    assert isinstance(model, StnMultiheadAttention) and isinstance(model.out_proj, StnLinear)
    B, L, S = 3, 5, 4
    q = torch.randn(B, L, 8, dtype=torch.float64)
    k, v = torch.randn(2, B, S, kdim or 8, dtype=torch.float64)
    if not batch_first:
        q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
    padding = torch.tensor([[False] * S, [False] * (S - 1) + [True], [True] + [False] * (S - 1)])
    additive = torch.randn(L, S, dtype=torch.float64)
    per_head = torch.randn(B * 2, L, S, dtype=torch.float64)
    for options in [{}, dict(key_padding_mask=padding), dict(attn_mask=additive), dict(attn_mask=per_head),
                    dict(attn_mask=additive > 1, key_padding_mask=padding), dict(need_weights=False),
                    dict(average_attn_weights=False), dict(attn_mask=additive, need_weights=False)]:
        expected = original(q, k, v, **options)
        actual = model(q, k, v, **options)
        torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12, msg=str(options))
    unbatched = [t[0] if batch_first else t[:, 0] for t in (q, k, v)]
    torch.testing.assert_close(model(*unbatched), original(*unbatched), rtol=1e-12, atol=1e-12)


def encoder_model(norm_first: bool):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, norm_first=norm_first)
    return nn.Sequential(nn.TransformerEncoder(layer, 2, enable_nested_tensor=not norm_first), nn.Linear(8, 3))


@pytest.mark.parametrize("norm_first", [False, True])
def test_fused_encoder_path_never_bypasses_converted_layers(norm_first):
    """Eval without gradients (predict) and with frozen weights (the hyper step) are where PyTorch's fused encoder
    path runs; the converted model computes what its explicit path (the fused path switched off) computes."""
    space = HyperSpace([Hyper("wd", 1e-2, 0.0, 1.0, per_example=False)])
    model = convert(encoder_model(norm_first), space)
    assert all(type(m) is ExplicitTransformerEncoderLayer for m in model[0].layers)
    assert model[0].use_nested_tensor is False
    randomize_hyper_proj(model)
    x, y = torch.randn(4, 5, 8), torch.randint(0, 3, (4, 5))
    padding = torch.zeros(4, 5, dtype=torch.bool)
    padding[1, 3:] = True

    def loss_fn(out, targets):
        return F.cross_entropy(out.flatten(0, 1), targets.flatten())

    def run():
        method = SelfTuning(model, space, "stn", loss_fn=loss_fn, weight_decay="wd")
        prediction = method.predict(x)
        model.eval()
        with torch.no_grad():
            padded = model[1](model[0](x, src_key_padding_mask=padding))
        torch.manual_seed(0)
        space.zero_grad()
        method.hyper_step(x, y, torch.optim.SGD(space.parameters(), lr=0.0))   # λ stays: both runs see it
        return prediction, padded, space.lam.grad.clone()

    actual = run()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        expected = run()
    finally:
        torch.backends.mha.set_fastpath_enabled(True)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


def test_hugging_face_gpt2_conv1d_tied_weights_and_dropout_p():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=20, n_positions=8, n_embd=8, n_layer=1, n_head=2)
    original = transformers.GPT2LMHeadModel(config).eval()
    space = HyperSpace([Hyper("attn", 0.1, 0.0, 0.9), Hyper("resid", 0.1, 0.0, 0.9)])
    model = convert(original, space, dropout={"transformer.h.0.attn": "attn", "transformer.h.0.attn.resid_dropout":
                                              "resid"})
    block = model.transformer.h[0]
    assert all(isinstance(m, StnLinear) for m in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc,
                                                    block.mlp.c_proj))
    assert model.lm_head.weight is model.transformer.wte.weight, "wte and lm_head keep one general weight"
    assert isinstance(model.transformer.wte, StnEmbedding) and isinstance(model.lm_head, StnLinear)
    assert model.stn_conversion.tied == [("transformer.wte", "lm_head")]
    assert model.config._attn_implementation == "fastdstn" and original.config._attn_implementation != "fastdstn"
    assert block.attn.resid_dropout.p == 0.0 and block.attn.resid_dropout.inplace is False
    ids = torch.randint(0, 20, (2, 8))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, original(input_ids=ids).logits)


def test_a_dropout_site_whose_p_is_read_instead_of_called_is_reported():
    """Hugging Face attention reads attn_dropout.p and drops inside its attention function: mapping that dropout
    module tunes nothing, which the first training step reports (the attention module is the site to map)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=20, n_positions=8, n_embd=8, n_layer=1, n_head=2)
    space = HyperSpace([Hyper("attn", 0.1, 0.0, 0.9), Hyper("resid", 0.1, 0.0, 0.9)])
    sites = {"transformer.h.0.attn.attn_dropout": "attn", "transformer.h.0.attn.resid_dropout": "resid"}
    model = convert(transformers.GPT2LMHeadModel(config), space, dropout=sites)
    ids = torch.randint(0, 20, (2, 8))
    method = SelfTuning(model, space, "delta", loss_fn=lambda out, y: F.cross_entropy(out.logits.flatten(0, 1),
                                                                                        y.flatten()))
    with pytest.raises(ValueError, match=r"tuned dropout sites \['transformer.h.0.attn.attn_dropout'\] were not "
                                         r"applied.*map the attention module instead"):
        method.train_step(ids, ids, make_optimizers(model, space, "delta"))


def test_a_hyperparameter_no_site_reads_is_an_error_after_the_first_step():
    space = HyperSpace([Hyper("d", 0.1, 0.0, 0.9), Hyper("typo", 0.1, 0.0, 0.9)])
    model = convert(nn.Sequential(nn.Linear(4, 8), nn.Dropout(), nn.Linear(8, 2)), space, dropout={"1": "d"})
    assert model.stn_conversion.unread == ["typo"]
    for mode in ("stn", "centered", "delta"):
        method = SelfTuning(model, space, mode, loss_fn=F.cross_entropy)
        with pytest.raises(ValueError, match=r"hyperparameters \['typo'\] were read by no layer"):
            method.train_step(torch.randn(4, 4), torch.randint(0, 2, (4,)), make_optimizers(model, space, mode))
    fixed = SelfTuning(model, space, "fixed", loss_fn=F.cross_entropy)       # plain training reads what it uses
    fixed.train_step(torch.randn(4, 4), torch.randint(0, 2, (4,)), make_optimizers(model, space, "fixed"))


def test_a_layer_whose_weights_its_parent_reads_directly_is_warned_about():
    class Bypass(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.head = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.head(F.linear(x, self.inner.weight, self.inner.bias))

    space = HyperSpace([Hyper("wd", 1e-3, 0.0, 1.0, per_example=False)])
    model = convert(Bypass(), space)
    method = SelfTuning(model, space, "delta", loss_fn=F.cross_entropy, weight_decay="wd")
    with pytest.warns(RuntimeWarning, match=r"STN layers \[.inner.\] never computed their best-response"):
        method.train_step(torch.randn(4, 4), torch.randint(0, 2, (4,)), make_optimizers(model, space, "delta"))
