"""What the benchmarks measure, in one place: every shape any benchmark script uses, op inputs, and the
training-step workloads.

`run_all.py` times these; `test_bench_ops.py` / `test_bench_steps.py` run the same callables through
pytest-benchmark (and, under --benchmark-disable, once each as a smoke test), so the script and the
suite can never drift apart.

Op cases. Each provider of an op case is a pair (forward, backward): forward() runs the forward with
autograd recording (as in training) and returns what backward needs; backward(state) runs Δ-STN's
response-sub-step backward (x, W_g, b_g frozen; gradients of ẋ, W_r, b_r, V only). The "floor"
provider is the bare torch.mm / F.conv2d (and convolution_backward) calls of the same shapes: the
GEMM/conv work no implementation can skip, so provider/floor is the overhead a backend adds.

Step cases. Each model gives a plain PyTorch network (nn.Linear/nn.Conv2d/nn.LSTM, the same
widths) with its SGD step, and the STN model for SelfTuning's training and hyper steps.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from fastdstn import Hyper, HyperSpace, SelfTuning, convert, make_optimizers, ops
from fastdstn.models import LSTMLanguageModel, SimpleCNN, mlp, simple_cnn
from fastdstn.models.base import dropout as dropout_hyper
from fastdstn.nn import MaxPool2d
from fastdstn.nn.pooling import max_pool2d
from fastdstn.ops import dispatch as backends

Tensor = torch.Tensor
Provider = Tuple[Callable[[], object], Callable[[object], None]]

# ----------------------------------------------------------------------------------------------- ops
# Every shape a benchmark uses is defined here.
# (B, in, out): a small layer, a 1024-wide hidden layer at batch 128, the MLP's first layer at batch 512.
LINEAR_SHAPES: List[Tuple[int, int, int]] = [(32, 256, 256), (128, 1024, 1024), (512, 784, 1200)]
# The MNIST MLP's first and last layers at its training batch 128 (bench_ops_cpp.py times them too).
MLP_LAYER_SHAPES: List[Tuple[int, int, int]] = [(128, 784, 1200), (128, 1200, 10)]
# (B, C_in, C_out, size, kernel, padding, has_xt): SimpleCNN's two convolutions (the first one sees the
# network input, whose tangent is zero, so it gets no ẋ) and a VGG-sized layer; CONV_NAMES names them.
CONV_SHAPES: List[Tuple[int, int, int, int, int, int, bool]] = [
    (128, 1, 16, 28, 5, 2, False), (128, 16, 32, 14, 5, 2, True), (64, 64, 64, 32, 3, 1, True)]
CONV_NAMES: List[str] = ["SimpleCNN conv1", "SimpleCNN conv2", "VGG 3x3"]
# Tiny shapes of the same kinds (a conv without and one with ẋ) for smoke runs, which check plumbing only.
SMOKE_LINEAR_SHAPES = [(8, 16, 16)]
SMOKE_CONV_SHAPES = [(2, 1, 4, 8, 5, 2, False), (2, 3, 4, 8, 3, 1, True)]
HYPERS = 6
# Sequence lengths T of bench_attention.py (queries = keys): the CPU table, and the GPU table (bf16).
ATTENTION_CPU_LENGTHS = [128, 256, 512, 1024, 2048, 4096]
ATTENTION_GPU_LENGTHS = [1024, 2048, 4096, 8192]
# Dropout and LSTM-cell shapes of roofline.py: (label, shape, batch_dim, shared dims) and (B, hidden).
DROPOUT_SHAPES = [("MLP hidden (512, 1200), elementwise", (512, 1200), 0, ()),
                  ("SimpleCNN (128, 16, 28, 28), channel", (128, 16, 28, 28), 0, (2, 3))]
LSTM_CELL_SHAPE = (64, 650)
# bench_cpu_env.py's sweep of the small-batch GEMM kernel: batch sizes × (in, out).
GEMM_BATCHES = [8, 32, 64, 128, 256]
GEMM_SIZES = [(256, 256), (784, 1200), (1024, 1024), (1200, 10)]


def linear_label(shape) -> str:
    B, n_in, n_out = shape
    return f"B{B} {n_in}->{n_out}"


def conv_label(shape) -> str:
    B, c_in, c_out, size, k, pad, has_xt = shape
    return f"B{B} {c_in}->{c_out} k{k} {size}x{size}" + ("" if has_xt else " no-xt")


def cpu_backends() -> List[str]:
    """The backends that run CPU tensors in this build (Triton is CUDA-only)."""
    names = ["reference"]
    module = backends.load("cpp")
    if module is not None and backends.supports(module, "cpu"):
        names.append("cpp")
    return names


def device_backends(device: torch.device) -> List[str]:
    if device.type != "cuda":
        return cpu_backends()
    names = [n for n in ("reference", "cpp", "triton")
             if backends.load(n) is not None and backends.supports(backends.load(n), "cuda")]
    return names or ["reference"]


def _randn(g: torch.Generator, device, *shape, grad=False, scale=1.0) -> Tensor:
    return (torch.randn(*shape, generator=g) * scale).to(device).requires_grad_(grad)


def linear_inputs(B: int, n_in: int, n_out: int, device="cpu") -> Dict[str, Tensor]:
    """Inputs of the Δ-STN response sub-step: x, ε, W_g, b_g frozen; ẋ, W_r, b_r, V with gradients."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s, **k: _randn(g, device, *s, **k)  # noqa: E731
    return dict(x=r(B, n_in), xt=r(B, n_in, grad=True), eps=r(B, HYPERS), Wg=r(n_out, n_in, scale=n_in ** -0.5),
                bg=r(n_out), Wr=r(n_out, n_in, grad=True, scale=n_in ** -0.5), br=r(n_out, grad=True),
                V=r(2 * n_out, HYPERS, grad=True), gy=r(B, n_out))


def conv_inputs(B: int, c_in: int, c_out: int, size: int, kernel: int, has_xt: bool = True,
                device="cpu") -> Dict[str, Optional[Tensor]]:
    g = torch.Generator().manual_seed(0)
    r = lambda *s, **k: _randn(g, device, *s, **k)  # noqa: E731
    w, fan = (c_out, c_in, kernel, kernel), c_in * kernel * kernel
    return dict(x=r(B, c_in, size, size), xt=r(B, c_in, size, size, grad=True) if has_xt else None,
                eps=r(B, HYPERS), Wg=r(*w, scale=fan ** -0.5), bg=r(c_out), Wr=r(*w, grad=True, scale=fan ** -0.5),
                br=r(c_out, grad=True), V=r(2 * c_out, HYPERS, grad=True), gy=r(B, c_out, size, size))


def _dual_provider(op: Callable, a: Dict[str, Optional[Tensor]], backend: str, **geometry) -> Provider:
    """forward: the public op under `backend`; backward: autograd.grad of ẏ w.r.t. the response leaves."""
    leaves = [a[k] for k in ("xt", "Wr", "br", "V") if a[k] is not None]

    def forward():
        with ops.use_backend(backend):
            _, yt = op(a["x"], a["xt"], a["eps"], a["Wg"], a["bg"], a["Wr"], a["br"], a["V"], **geometry)
        return yt

    def backward(yt):
        torch.autograd.grad(yt, leaves, a["gy"])

    return forward, backward


def linear_dual_case(shape, backends_: List[str], device="cpu") -> Dict[str, Provider]:
    a = linear_inputs(*shape, device=device)
    x, xt, Wg, Wr, gy = (a[k].detach() for k in ("x", "xt", "Wg", "Wr", "gy"))

    def floor_forward():        # y = x·W_gᵀ, u = x·W_rᵀ, ẋ·W_gᵀ: docs/METHOD.md §5's three forward GEMMs
        torch.mm(x, Wg.t()), torch.mm(x, Wr.t()), torch.mm(xt, Wg.t())

    def floor_backward(_):      # ∂ẋ = ∂ẏ·W_g and ∂W_r = (s⊙∂ẏ)ᵀ·x: the two backward GEMMs
        torch.mm(gy, Wg), torch.mm(gy.t(), x)

    cases = {"floor": (floor_forward, floor_backward)}
    cases.update({b: _dual_provider(ops.stn_linear_dual, a, b) for b in backends_})
    return cases


def conv_dual_case(shape, backends_: List[str], device="cpu") -> Dict[str, Provider]:
    B, c_in, c_out, size, k, pad, has_xt = shape
    a = conv_inputs(B, c_in, c_out, size, k, has_xt, device=device)
    x, Wg, Wr, gy = (a[n].detach() for n in ("x", "Wg", "Wr", "gy"))
    xt = a["xt"].detach() if has_xt else None
    geometry = dict(stride=1, padding=pad)

    def floor_forward():        # conv(x, W_g), conv(x, W_r) and, when the input has a tangent, conv(ẋ, W_g)
        F.conv2d(x, Wg, None, 1, pad), F.conv2d(x, Wr, None, 1, pad)
        if xt is not None:
            F.conv2d(xt, Wg, None, 1, pad)

    def floor_backward(_):      # one aten convolution_backward: ∂W_r always, ∂ẋ only when ẋ exists
        torch.ops.aten.convolution_backward(gy, x, Wg, None, [1, 1], [pad, pad], [1, 1], False, [0, 0], 1,
                                            [has_xt, True, False])

    cases = {"floor": (floor_forward, floor_backward)}
    cases.update({b: _dual_provider(ops.stn_conv2d_dual, a, b, **geometry) for b in backends_})
    return cases


# ---------------------------------------------------------------------------------------------- steps
@dataclass
class Workload:
    """One model's steps. plain(): an SGD step of the plain network; stn(mode, linearized_hyper=False) ->
    (train, hyper) steps of a fresh STN model (linearized_hyper: Δ-STN's optional linearized hyper step); train
    also carries its SelfTuning, Optimizers and (x, y) as .method, .optimizers and .batch, and plain its network
    as .model. plain_pooled(), for a model that max-pools: the plain step with its pooling through
    fastdstn.nn.pooling, as the STN model pools (None for the others)."""

    name: str
    label: str
    plain: Callable[[], None]
    stn: Callable[..., Tuple[Callable[[], None], Callable[[], None]]]
    plain_pooled: Optional[Callable[[], None]] = None


def _resident(model: nn.Module, *tensors) -> List[Tensor]:
    """Tensors that live for the whole run (weights, buffers, λ/ρ, the batch): saved_bytes leaves them out."""
    return list(model.parameters()) + list(model.buffers()) + [t for t in tensors if isinstance(t, Tensor)]


def _sgd_step(model: nn.Module, loss_fn: Callable[[], Tensor], *batch: Tensor) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    step.resident = _resident(model, *batch)
    step.model = model
    return step


def _stn_steps(build: Callable[[], Tuple[nn.Module, list]], x: Tensor, y: Tensor, loss_fn, batch_dim=0,
               device="cpu", weight_decay: Optional[str] = None):
    def make(mode: str, linearized_hyper: bool = False):
        model, hypers = build()
        model = model.to(device)
        space = HyperSpace(hypers).to(device)
        method = SelfTuning(model, space, mode, loss_fn=loss_fn, batch_dim=batch_dim,
                            linearized_hyper=linearized_hyper, weight_decay=weight_decay)
        opts = make_optimizers(model, space, mode)

        def train():
            method.train_step(x, y, opts)

        def hyper():
            method.hyper_step(x, y, opts.hyper)
        train.resident = hyper.resident = _resident(model, x, y, *space.parameters())
        train.method, train.optimizers, train.batch = method, opts, (x, y)
        return train, hyper
    return make


MLP_SIZES, MLP_BATCH, MLP_RATES = (784, 1200, 1200, 10), 128, (0.2, 0.5, 0.5)


def mlp_workload(device="cpu", small: bool = False) -> Workload:
    """small: a 32-16-16-10 net at batch 8, for the smoke test (same code path, milliseconds)."""
    sizes, batch = ((32, 16, 16, 10), 8) if small else (MLP_SIZES, MLP_BATCH)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, sizes[0], generator=g).to(device)
    y = torch.randint(0, sizes[-1], (batch,), generator=g).to(device)
    layers: List[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.Dropout(MLP_RATES[i]), nn.Linear(n_in, n_out)] + ([nn.ReLU()] if i < 2 else [])
    plain = nn.Sequential(*layers).to(device)

    def build():
        built = mlp(sizes[0], sizes[1:-1], sizes[-1])
        return built.model, [Hyper(h.name, r, h.low, h.high) for h, r in zip(built.hypers, MLP_RATES)]
    return Workload("mlp", f"MLP {'-'.join(map(str, sizes))} B{batch}",
                    _sgd_step(plain, lambda: F.cross_entropy(plain(x), y), x, y),
                    _stn_steps(build, x, y, F.cross_entropy, device=device))


class PlainCNN(nn.Module):
    """SimpleCNN's layers as plain PyTorch modules (dropout rates as the STN model's defaults)."""

    def __init__(self, pool: Callable[..., Tensor] = F.max_pool2d) -> None:
        super().__init__()
        self.pool = pool
        self.drop_in, self.drop1, self.drop2, self.drop_fc = (nn.Dropout(0.05), nn.Dropout2d(0.05),
                                                              nn.Dropout2d(0.05), nn.Dropout(0.05))
        self.conv1, self.conv2 = nn.Conv2d(1, 16, 5, padding=2), nn.Conv2d(16, 32, 5, padding=2)
        self.fc1, self.fc2 = nn.Linear(1568, 1568), nn.Linear(1568, 10)

    def forward(self, x):
        x = self.drop1(self.pool(F.relu(self.conv1(self.drop_in(x))), 2))
        x = self.drop2(self.pool(F.relu(self.conv2(x)), 2))
        return self.fc2(self.drop_fc(F.relu(self.fc1(x.flatten(1)))))


def cnn_workload(device="cpu", small: bool = False) -> Workload:
    """Fashion-MNIST-sized SimpleCNN (H = 4: its 4 dropouts). No augmentation runs here
    (benchmarks/bench_augment.py times augmentation on its own), so the step ratios isolate the STN machinery, and
    the cutout hyperparameters are left out of the space (SelfTuning refuses hyperparameters that nothing reads).
    small: batch 4 (smoke test)."""
    batch = 4 if small else 128
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, 28, 28, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    plain = PlainCNN().to(device)
    pooled = copy.deepcopy(plain)
    pooled.pool = max_pool2d

    def build():
        hypers = [h for h in simple_cnn().hypers if not h.name.startswith("cutout")]
        return SimpleCNN(len(hypers)), hypers
    return Workload("cnn", f"SimpleCNN 28x28 B{batch}", _sgd_step(plain, lambda: F.cross_entropy(plain(x), y), x, y),
                    _stn_steps(build, x, y, F.cross_entropy, device=device),
                    _sgd_step(pooled, lambda: F.cross_entropy(pooled(x), y), x, y))


LM_VOCAB, LM_SIZE, LM_LAYERS, LM_BPTT, LM_BATCH = 10000, 200, 2, 35, 20


class PlainLM(nn.Module):
    """The LSTM LM with nn.LSTM (ATen's fused CPU LSTM), tied embeddings, plain dropout."""

    def __init__(self, vocab: int, size: int, layers: int) -> None:
        super().__init__()
        self.encoder = nn.Embedding(vocab, size)
        self.lstm = nn.LSTM(size, size, layers, dropout=0.1)
        self.decoder = nn.Linear(size, vocab)
        self.decoder.weight = self.encoder.weight
        self.drop = nn.Dropout(0.1)

    def forward(self, tokens):
        out, _ = self.lstm(self.drop(self.encoder(tokens)))
        return self.decoder(self.drop(out))


def lm_loss(out: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


def lstm_workload(device="cpu", small: bool = False) -> Workload:
    """A small PTB-vocabulary LM: 2 × 200 LSTM, bptt 35, batch 20 (time-major tokens). The STN model carries
    its hidden state between steps (as in training); the plain one starts each window at zero: the
    difference is one state copy, noise next to the step. small: vocab 50, 2 × 8, bptt 3, batch 2."""
    vocab, size, layers, bptt, batch = (50, 8, 2, 3, 2) if small else (LM_VOCAB, LM_SIZE, LM_LAYERS, LM_BPTT,
                                                                        LM_BATCH)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, vocab, (bptt, batch), generator=g).to(device)
    y = torch.randint(0, vocab, (bptt, batch), generator=g).to(device)
    plain = PlainLM(vocab, size, layers).to(device)

    def build():
        hypers = [dropout_hyper("dropout_in", 0.1), dropout_hyper("dropout_h", 0.1),
                  dropout_hyper("dropout_out", 0.1), Hyper("dropconnect", 0.1, 0.0, 0.95, per_example=False)]
        return LSTMLanguageModel(vocab, size, layers, len(hypers)), hypers
    return Workload("lstm", f"LSTM LM {layers}x{size} V{vocab} bptt{bptt} B{batch}",
                    _sgd_step(plain, lambda: lm_loss(plain(x), y), x, y),
                    _stn_steps(build, x, y, lm_loss, batch_dim=1, device=device))


WORKLOADS: Dict[str, Callable[..., Workload]] = {"mlp": mlp_workload, "cnn": cnn_workload, "lstm": lstm_workload}


def _converted_workload(name: str, label: str, plain: nn.Module, x: Tensor, y: Tensor, dropout: Dict[str, str],
                        device) -> Workload:
    """A model users bring: its plain SGD step, and Δ-STN on `convert(copy of it)` with the dropout sites mapped to
    per-example rates (starting at 0.1) and a tuned per-batch weight decay "wd"."""
    plain = plain.to(device)
    x, y = x.to(device), y.to(device)
    sites = list(dict.fromkeys(dropout.values()))
    hypers = [Hyper(n, 0.1, 0.0, 0.9) for n in sites] + [Hyper("wd", 1e-3, 0.0, 0.1, per_example=False)]

    def build():
        return convert(copy.deepcopy(plain), HyperSpace(hypers), dropout=dropout), hypers
    pooled = _pooled_copy(plain)
    return Workload(name, label, _sgd_step(plain, lambda: F.cross_entropy(plain(x), y), x, y),
                    _stn_steps(build, x, y, F.cross_entropy, device=device, weight_decay="wd"),
                    pooled and _sgd_step(pooled, lambda: F.cross_entropy(pooled(x), y), x, y))


def _pooled_copy(plain: nn.Module) -> Optional[nn.Module]:
    """A copy of `plain` with its nn.MaxPool2d modules as fastdstn.nn.MaxPool2d (what convert puts there), or None
    when it has none."""
    pooled = copy.deepcopy(plain)
    pools = [(name, m) for name, m in pooled.named_modules() if type(m) is nn.MaxPool2d]
    for name, m in pools:
        parent, _, attribute = name.rpartition(".")
        setattr(pooled.get_submodule(parent), attribute, MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation,
                                                                   m.return_indices, m.ceil_mode))
    return pooled if pools else None


def resnet18_workload(device="cpu", small: bool = False) -> Workload:
    """torchvision's ResNet-18 (full width, 11 M weights) on 64×64 images at batch 16; small: batch 2, 32×32."""
    import torchvision
    batch, size = (2, 32) if small else (16, 64)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, 3, size, size, generator=g), torch.randint(0, 10, (batch,), generator=g)
    torch.manual_seed(0)
    return _converted_workload("resnet18", f"ResNet-18 {size}x{size} B{batch}",
                               torchvision.models.resnet18(num_classes=10), x, y, {}, device)


def vit_workload(device="cpu", small: bool = False) -> Workload:
    """torchvision's VisionTransformer on 32×32 images at batch 16: patch 4 (65 tokens), 4 layers, width 128, 4 heads,
    MLP 512, with its dropouts (embedding, attention weights, residual) tuned; small: 2 layers, width 16, batch 2."""
    from torchvision.models import VisionTransformer
    batch, layers, width, heads = (2, 2, 16, 2) if small else (16, 4, 128, 4)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g)
    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=4, num_layers=layers, num_heads=heads, hidden_dim=width,
                              mlp_dim=4 * width, num_classes=10, dropout=0.1, attention_dropout=0.1)
    dropout = {"encoder.dropout": "drop_embed", "encoder.layers.*.self_attention": "drop_attn",
               "encoder.layers.*.dropout": "drop_resid", "encoder.layers.*.mlp.[24]": "drop_resid"}
    return _converted_workload("vit", f"ViT {layers}x{width} 32x32/4 B{batch}", model, x, y, dropout, device)


# The models of the step-cost targets beside the SPEC's MLP and SimpleCNN (benchmarks/bench_step_cost.py).
ARCHITECTURES: Dict[str, Callable[..., Workload]] = {"resnet18": resnet18_workload, "vit": vit_workload}
MODES = ("stn", "centered", "delta")
# Every timed step: (name, mode, phase, linearized_hyper). "delta:hyper_lin" is the optional linearized hyper
# step of docs/METHOD.md §4, timed so that its cost is on record next to the default one.
STEPS = [(f"{m}:{p}", m, p, False) for m in MODES for p in ("train", "hyper")]
STEPS.append(("delta:hyper_lin", "delta", "hyper", True))
