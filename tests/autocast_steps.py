"""Δ-STN steps under torch.autocast for the tests (tests/method/test_autocast_steps.py on CPU,
tests/ops/machine/test_autocast_gpu.py on CUDA): two small models converted with fastdstn.convert, a train step
(both sub-steps) and a hyper step run in float32 and under autocast, and the comparison of the two.

The bound is tests/accuracy.py's rule in its typical-case form (as for the LSTM cell): a network is no sum of
products, so each result's magnitude is its scale (|float32 loss| for a loss; for the model's updates the
step's, max|float32 update| over every parameter, since a bias before BatchNorm has an update of exactly 0 in
exact arithmetic made of terms that are not; for the hyper step the gradients of λ and ρ, max|float32 gradient|,
rather than their updates, which the hyper optimizer (Adam, RMSprop) normalizes to about lr·sign(gradient) in a
first step) and n
counts the half-precision roundings along the longest chain: the three STN layers of a model each round their
two GEMM operands and their output in the forward, the dual forward's tangent again, and the backward's two
GEMMs per layer their operands and outputs (3 · (3 + 3 + 2 · 3) = 36), plus 12 for the layers outside the STN
ops that autocast also runs in half precision (the loss, the norms, the activations): 48.
"""
import warnings

import torch
import torch.nn.functional as F
from torch import nn

import fastdstn
from fastdstn import Hyper, HyperSpace, SelfTuning, make_optimizers
from fastdstn.nn import StnConv2d, StnLinear, StnLSTM

from accuracy import assert_within_bound, roundings

HALF_ROUNDINGS = 48


class ConvNet(nn.Module):
    """Conv → BatchNorm → ReLU → dropout → linear → LayerNorm → GELU → dropout → linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1, stride=2)
        self.bn = nn.BatchNorm2d(4)
        self.drop1 = nn.Dropout(0.2)
        self.fc1 = nn.Linear(4 * 4 * 4, 16)
        self.ln = nn.LayerNorm(16)
        self.drop2 = nn.Dropout(0.2)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
        x = self.drop1(torch.relu(self.bn(self.conv(x))))
        return self.fc2(self.drop2(F.gelu(self.ln(self.fc1(x.flatten(1))))))


class Recurrent(nn.Module):
    """Embedding → LSTM → linear → dropout → linear over batch-first tokens: the LSTM cell is float32 under
    autocast, the dropout after a linear layer takes bf16 (so that on CPU it runs the reference's masks)."""

    def __init__(self, vocab: int = 11, dim: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, dim, batch_first=True)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(0.2)
        self.out = nn.Linear(dim, vocab)

    def forward(self, tokens):
        output, _ = self.lstm(self.embed(tokens))
        return self.out(self.drop(self.proj(output)))


def _sequence_loss(logits, targets):
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


MODELS = {
    "convnet": (ConvNet, {"drop1": "drop", "drop2": "drop"}, lambda g: torch.randn(4, 2, 8, 8, generator=g),
                lambda g: torch.randint(0, 3, (4,), generator=g), F.cross_entropy),
    "recurrent": (Recurrent, {"drop": "drop"}, lambda g: torch.randint(0, 11, (4, 5), generator=g),
                  lambda g: torch.randint(0, 11, (4, 5), generator=g), _sequence_loss),
}


def converted(kind: str):
    """(space, converted model with V moved off 0, inputs, targets, loss) in float32, the same on every call."""
    build, dropout, inputs, targets, loss = MODELS[kind]
    torch.manual_seed(0)
    space = HyperSpace([Hyper("drop", 0.2, 0.0, 0.9), Hyper("wd", 1e-3, 0.0, 0.1, per_example=False)])
    model = fastdstn.convert(build(), space, dropout=dropout)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("hyper_proj", "response_bias")):
                p.normal_(0, 0.5)
    g = torch.Generator().manual_seed(1)
    return space, model, inputs(g), targets(g), loss


def run_steps(kind: str, backend: str, autocast_dtype, device_type: str = "cpu"):
    """A Δ-STN train step and a hyper step (the same random draws on every call) under autocast_dtype (None:
    float32): (losses, the model's parameters after the steps, the hyper step's gradients of λ and ρ, the dtypes
    each kind of STN layer put out), as float32 CPU tensors."""
    space, model, x, y, loss = converted(kind)
    space, model, x, y = space.to(device_type), model.to(device_type), x.to(device_type), y.to(device_type)
    method = SelfTuning(model, space, "delta", loss_fn=loss, weight_decay="wd")
    opts = make_optimizers(model, space, "delta", lr=0.1)
    seen = {}

    def record(module, _inputs, output):
        out = output[0] if isinstance(output, tuple) else output
        seen.setdefault(type(module).__name__, set()).add(out.dtype)
    for m in model.modules():
        if isinstance(m, (StnLinear, StnConv2d, StnLSTM)):
            m.register_forward_hook(record)
    torch.manual_seed(2)
    with fastdstn.ops.use_backend(backend), warnings.catch_warnings(), \
            torch.autocast(device_type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        warnings.simplefilter("ignore", RuntimeWarning)  # "cpp" asked for, half precision on CPU: the reference
        losses = method.train_step(x, y, opts)
        losses.update(method.hyper_step(x, y, opts.hyper))
    hyper_grads = [p.grad.float().cpu() for p in space.parameters()]
    return {k: v.detach().float().cpu() for k, v in losses.items()}, parameters(model), hyper_grads, seen


def parameters(model):
    return [p.detach().float().cpu() for p in model.parameters()]


def assert_close_to_float32(kind, backend, dtype, device_type="cpu", float32_backend=None):
    """The half-precision run on `backend` against the float32 run on `float32_backend` (default: the same),
    within the module docstring's bound; the STN layers put out `dtype` (the LSTM float32)."""
    exact_losses, exact_after, exact_hyper_grads, _ = run_steps(kind, float32_backend or backend, None, device_type)
    losses, after, hyper_grads, seen = run_steps(kind, backend, dtype, device_type)
    for name, kinds in seen.items():
        assert kinds == ({torch.float32} if name == "StnLSTM" else {dtype}), (name, kinds)
    before = parameters(converted(kind)[1])
    rounding = roundings(HALF_ROUNDINGS, dtype)
    for name in exact_losses:
        assert_within_bound(name, losses[name], exact_losses[name], exact_losses[name].abs().item(), 1,
                            rounding=rounding)
    updates = [a - b for a, b in zip(after, before)]
    exact_updates = [a - b for a, b in zip(exact_after, before)]
    step_scale = max(u.abs().max().item() for u in exact_updates)
    assert_within_bound("updates", updates, exact_updates, step_scale, 1, rounding=rounding)
    hyper_scale = max(g.abs().max().item() for g in exact_hyper_grads)
    assert_within_bound("hyper gradients", hyper_grads, exact_hyper_grads, hyper_scale, 1, rounding=rounding)
    assert any(not torch.equal(a, e) for a, e in zip(after, exact_after)), "autocast changed nothing"
