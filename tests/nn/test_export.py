"""fastdstn.export: a tuned model back as plain torch modules whose state_dict loads strictly into the original
architecture and which predicts what SelfTuning.predict does; fastdstn.load_checkpoint."""
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import fastdstn
from fastdstn import Hyper, HyperSpace, SelfTuning, convert, make_optimizers
from fastdstn.nn import StnLayer
from fastdstn.train import checkpoint
from stn_test_models import LanguageModel, randomize_hyper_proj, small_space

BATCH = 4


def tuned(model, space, mode, inputs, targets, loss_fn=F.cross_entropy, steps=2, **options):
    """SelfTuning after `steps` training and hyper steps on one batch."""
    method = SelfTuning(model, space, mode, loss_fn=loss_fn, **options)
    optimizers = make_optimizers(model, space, mode, lr=0.05, hyper_lr=0.05)
    for _ in range(steps):
        method.train_step(inputs, targets, optimizers)
        method.hyper_step(inputs, targets, optimizers.hyper)
    return method


def assert_plain(module):
    leftovers = [type(m).__name__ for m in module.modules() if type(m).__module__.startswith("fastdstn")]
    assert not leftovers, f"fastdstn modules left in the export: {leftovers}"


def test_resnet18_after_delta_stn_steps_loads_strictly_into_torchvision_and_predicts_the_same():
    space = HyperSpace([Hyper("wd", 1e-3, 0.0, 0.1, per_example=False)])
    model = convert(torchvision.models.resnet18(num_classes=10), space)
    x, y = torch.randn(BATCH, 3, 32, 32), torch.arange(BATCH)
    method = tuned(model, space, "delta", x, y, weight_decay="wd")
    plain = fastdstn.export(method)
    assert_plain(plain)
    original = torchvision.models.resnet18(num_classes=10)
    original.load_state_dict(plain.state_dict())            # strict
    original.eval()
    with torch.no_grad():
        torch.testing.assert_close(original(x), method.predict(x), rtol=0, atol=0)
    assert model.training, "export leaves the tuned model as it was"
    assert isinstance(model.conv1, StnLayer)


def test_stn_mode_folds_the_best_response_at_lambda_and_dropout_gets_its_tuned_rate():
    space = HyperSpace([Hyper("drop", 0.3, 0.0, 0.9), Hyper("wd", 1e-3, 0.0, 0.1, per_example=False)])
    original = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3)).double()
    model = convert(original, space, dropout={"2": "drop"})
    randomize_hyper_proj(model)
    x, y = torch.randn(BATCH, 6, dtype=torch.float64), torch.arange(BATCH) % 3
    method = tuned(model, space, "stn", x, y, weight_decay="wd")
    plain = fastdstn.export(method)
    assert type(plain[2]) is nn.Dropout and plain[2].p == pytest.approx(space.value("drop"))
    assert space.value("drop") != pytest.approx(0.3), "the hyper steps moved the rate"
    original.load_state_dict(plain.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(original.eval()(x), method.predict(x))
        assert not torch.allclose(method.predict(x), model.eval()(x)), "STN's deployed net is not h = 0's"


def test_delta_stn_keeps_tied_weights_tied_and_restores_the_lstm():
    space = small_space()
    torch.manual_seed(1)
    model = convert(nn.ModuleDict({"embed": nn.Embedding(10, 4), "lstm": nn.LSTM(4, 4, num_layers=2),
                                   "head": nn.Linear(4, 10)}), space)
    model["head"].weight = model["embed"].weight
    plain = fastdstn.export(model, space)
    assert plain["head"].weight is plain["embed"].weight
    assert type(plain["lstm"]) is nn.LSTM and type(plain["embed"]) is nn.Embedding
    tokens = torch.randint(0, 10, (5, BATCH))
    with torch.no_grad():
        out, _ = plain["lstm"](plain["embed"](tokens))
        converted, _ = model["lstm"](model["embed"](tokens))
        torch.testing.assert_close(plain["head"](out), model["head"](converted))


def test_a_hand_built_language_model_exports_with_its_locked_dropout_as_dropout():
    space = small_space()
    model = LanguageModel(len(space))
    with pytest.warns(UserWarning, match="DropConnect"):
        plain = fastdstn.export(model, space)
    assert_plain(plain)
    assert plain.drop.p == pytest.approx(space.value("drop_in"))
    assert plain.lstm.dropout == pytest.approx(space.value("drop_hidden"))


class Attending(nn.Module):
    """nn.MultiheadAttention (separate key/value sizes when kdim is set) and an encoder of two layers."""

    def __init__(self, kdim=None):
        super().__init__()
        self.attention = nn.MultiheadAttention(8, 2, dropout=0.1, kdim=kdim, vdim=kdim, batch_first=True)
        self.key = nn.Linear(8, kdim or 8)
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        k = self.key(x)
        x = self.encoder(x + self.attention(x, k, k, need_weights=False)[0])
        return self.head(x.mean(1))


@pytest.mark.parametrize("kdim", [None, 6])
def test_multihead_attention_and_encoder_layers_export_to_their_torch_modules(kdim):
    space = HyperSpace([Hyper("attn", 0.2, 0.0, 0.9)])
    torch.manual_seed(0)
    model = convert(Attending(kdim).double(), space, dropout={"attention": "attn"})
    x, y = torch.randn(BATCH, 5, 8, dtype=torch.float64), torch.arange(BATCH) % 3
    method = tuned(model, space, "delta", x, y)
    plain = fastdstn.export(method)
    assert_plain(plain)
    assert plain.attention.dropout == pytest.approx(space.value("attn"))
    assert type(plain.encoder.layers[0]) is nn.TransformerEncoderLayer
    original = Attending(kdim).double()
    original.load_state_dict(plain.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(original.eval()(x), method.predict(x))


def test_vision_transformer_exports_into_torchvision():
    make = lambda: torchvision.models.VisionTransformer(image_size=16, patch_size=8, num_layers=1, num_heads=2,  # noqa
                                                       hidden_dim=16, mlp_dim=32, num_classes=3, dropout=0.1)
    space = HyperSpace([Hyper("drop", 0.2, 0.0, 0.9)])
    model = convert(make(), space, dropout={"encoder.dropout": "drop"})
    x, y = torch.randn(BATCH, 3, 16, 16), torch.arange(BATCH) % 3
    method = tuned(model, space, "delta", x, y)
    original = make()
    original.load_state_dict(fastdstn.export(method).state_dict())
    with torch.no_grad():
        torch.testing.assert_close(original.eval()(x), method.predict(x))


def test_hugging_face_gpt2_exports_with_its_attention_implementation_and_tuned_attention_dropout():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=20, n_positions=8, n_embd=8, n_layer=1, n_head=2)
    torch.manual_seed(0)
    before = transformers.GPT2LMHeadModel(config)
    implementation = before.config._attn_implementation
    space = HyperSpace([Hyper("attn", 0.1, 0.0, 0.9), Hyper("resid", 0.1, 0.0, 0.9)])
    model = convert(before, space, dropout={"transformer.h.0.attn": "attn",
                                            "transformer.h.0.attn.resid_dropout": "resid"})
    ids = torch.randint(0, 20, (BATCH, 8))
    lm_loss = lambda out, y: F.cross_entropy(out.logits.flatten(0, 1), y.flatten())  # noqa: E731
    method = tuned(model, space, "delta", ids, ids, loss_fn=lm_loss)
    plain = fastdstn.export(method)
    assert_plain(plain)
    assert plain.config._attn_implementation == implementation
    block = plain.transformer.h[0]
    assert block.attn.attn_dropout.p == pytest.approx(space.value("attn"))
    assert block.attn.resid_dropout.p == pytest.approx(space.value("resid"))
    assert plain.lm_head.weight is plain.transformer.wte.weight
    original = transformers.GPT2LMHeadModel(config)
    original.load_state_dict(plain.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(original.eval()(input_ids=ids).logits, method.predict(ids).logits)


def test_export_errors_name_the_argument():
    space = HyperSpace([Hyper("drop", 0.2, 0.0, 0.9)])
    model = convert(nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.1)), space, dropout={"1": "drop"})
    with pytest.raises(ValueError, match=r"space: the model has dropout tuned by 'drop'; pass its HyperSpace"):
        fastdstn.export(model)
    with pytest.raises(TypeError, match=r"tuned: expected a fastdstn.SelfTuning or an nn.Module, received dict"):
        fastdstn.export({})
    with pytest.raises(ValueError, match=r"h: expected unconstrained values of shape \(1,\), received \(2,\)"):
        fastdstn.export(model, space, h=torch.zeros(2))


def test_load_checkpoint_reads_a_checkpoint_file(tmp_path):
    space = HyperSpace([Hyper("drop", 0.2, 0.0, 0.9)])
    path = str(tmp_path / "best.ckpt")
    checkpoint.save({"space": space.state_dict(), "epoch": 3}, path)
    state = fastdstn.load_checkpoint(path)
    assert state["epoch"] == 3 and torch.equal(state["space"]["lam"], space.lam.detach())
    with pytest.raises(fastdstn.train.CheckpointError, match="not found"):
        fastdstn.load_checkpoint(str(tmp_path / "missing.ckpt"))
