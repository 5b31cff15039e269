"""Δ-STN on attention models with the default backend: torchvision's VisionTransformer, a causal GPT built
from nn.TransformerEncoderLayer and a classifier using nn.MultiheadAttention with a key_padding_mask. Their
linear layers become STN layers (fastdstn.convert); their attention runs PyTorch's SDPA, which the dual pass
routes to fastdstn.ops.attention_dual. The linearized prediction must equal the one PyTorch computes through
its forward-AD-capable math kernel, in float64."""
import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torchvision.models import VisionTransformer

from fastdstn import Hyper, HyperSpace, SelfTuning, convert, make_optimizers, ops
from fastdstn.hyper.feed import feeding
from fastdstn.nn import response_parameters
from stn_test_models import randomize_hyper_proj

VOCAB, BATCH = 13, 4


class CausalGPT(nn.Module):
    """Token and position embeddings, two causal nn.TransformerEncoderLayer blocks, a language-model head."""

    def __init__(self, attention_dropout, dim=16, heads=2, length=9):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.position = nn.Parameter(torch.randn(length, dim) * 0.1)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=attention_dropout, batch_first=True)
        self.blocks = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(dim, VOCAB)

    def forward(self, tokens):
        t = tokens.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(t, dtype=self.position.dtype)
        x = self.blocks(self.embed(tokens) + self.position[:t], mask=mask, is_causal=True)
        return self.head(self.drop(x))


class PaddedClassifier(nn.Module):
    """Self-attention over padded token sequences (token 0 is padding), mean-pooled over the real tokens."""

    def __init__(self, attention_dropout, dim=16, heads=2):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.attention = nn.MultiheadAttention(dim, heads, dropout=attention_dropout, batch_first=True)
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(dim, 3)

    def forward(self, tokens):
        padding = tokens == 0
        x = self.embed(tokens)
        x = x + self.attention(x, x, x, key_padding_mask=padding, need_weights=False)[0]
        real = (~padding).unsqueeze(-1).to(x.dtype)
        return self.head(self.drop((x * real).sum(1) / real.sum(1)))


def tokens(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, VOCAB, (BATCH, 9), generator=g)
    x[1, 6:] = 0
    x[3, 4:] = 0
    return x


def cases():
    """name -> (model(attention_dropout), inputs(seed), targets(seed), loss, dropout sites tuned by "drop")."""
    vit = lambda p: VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,  # noqa
                                      mlp_dim=64, num_classes=10, dropout=0.1, attention_dropout=p)
    images = lambda seed: torch.randn(BATCH, 3, 32, 32, generator=torch.Generator().manual_seed(seed),  # noqa
                                      dtype=torch.float64)
    gpt_targets = lambda seed: tokens(seed + 1)  # noqa: E731
    return {
        "vit": (vit, images, lambda seed: torch.arange(BATCH) % 10, F.cross_entropy, {"encoder.dropout": "drop"}),
        "gpt": (CausalGPT, tokens, gpt_targets,
                lambda out, y: F.cross_entropy(out.reshape(-1, VOCAB), y.reshape(-1)), {"drop": "drop"}),
        "padded-mha": (PaddedClassifier, tokens, lambda seed: torch.arange(BATCH) % 3, F.cross_entropy,
                       {"drop": "drop"}),
    }


def build(name, attention_dropout=0.0):
    make_model, make_inputs, make_targets, loss_fn, dropout = cases()[name]
    torch.manual_seed(0)
    space = HyperSpace([Hyper("drop", 0.2, 0.0, 0.9), Hyper("wd", 1e-3, 0.0, 0.1, per_example=False)])
    model = convert(make_model(attention_dropout).double(), space, dropout=dropout)
    randomize_hyper_proj(model)
    return space, model, make_inputs, make_targets, loss_fn


@pytest.fixture
def attention_calls(monkeypatch):
    seen = []
    original = ops.attention_dual

    def counting(*args, **kwargs):
        seen.append(1)
        return original(*args, **kwargs)
    monkeypatch.setattr(ops, "attention_dual", counting)
    return seen


@pytest.mark.parametrize("name", list(cases()))
def test_linearized_prediction_equals_the_math_kernels(name, attention_calls):
    space, model, make_inputs, _, loss_fn = build(name)
    method = SelfTuning(model, space, "delta", loss_fn=loss_fn, weight_decay="wd")
    x = make_inputs(1)
    eps = space.sample(BATCH).eps.detach()
    values = space.example_values(space.lam.detach() + eps)
    model.train()
    torch.manual_seed(5)
    routed = method._forward_dual(method._local, x, eps, values)
    assert attention_calls, "the model's attention ran attention_dual"
    torch.manual_seed(5)
    with fwAD.dual_level(), feeding(eps, dual=True, values=values), sdpa_kernel(SDPBackend.MATH):
        reference = method._local(x, linearize=True)
    torch.manual_seed(5)
    with feeding(None, values=values):
        primal = model(x)
    assert (routed - primal).abs().max() > 1e-3, "the tangent ẏ is not trivially zero"
    torch.testing.assert_close(routed, reference, rtol=0, atol=1e-10)


@pytest.mark.parametrize("linearized_hyper", [False, True])
@pytest.mark.parametrize("name", list(cases()))
def test_delta_stn_steps_run_with_the_default_backend(name, linearized_hyper):
    """With attention dropout on: the response sub-step's SDPA calls carry dropout_p = 0.1."""
    space, model, make_inputs, make_targets, loss_fn = build(name, attention_dropout=0.1)
    method = SelfTuning(model, space, "delta", loss_fn=loss_fn, weight_decay="wd", linearized_hyper=linearized_hyper)
    opts = make_optimizers(model, space, "delta", lr=0.05)
    x, y = make_inputs(2), make_targets(2)
    # A key bias adds q·b to every score of a query: softmax does not see it, so its gradient is zero (1e-18).
    response = [p for n, p in model.named_parameters()
                if any(p is r for r in response_parameters(model)) and "k_proj.response_bias" not in n]
    before = [p.detach().clone() for p in response]
    lam = space.lam.detach().clone()
    losses = method.train_step(x, y, opts)
    assert all(torch.isfinite(v) for v in losses.values())
    assert all(not torch.equal(b, p) for b, p in zip(before, response)), "the response sub-step moved W_r, b_r, V"
    out = method.hyper_step(make_inputs(3), make_targets(3), opts.hyper)
    assert torch.isfinite(out["val_loss"])
    assert not torch.equal(lam, space.lam.detach()), "the hyper step moved λ"
