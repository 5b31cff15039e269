"""The GPU suite: one command for the lent GPU session, at the sizes users train at.

    python benchmarks/gpu_suite.py [--budget 10] [--out benchmarks/RESULTS_gpu_suite.md]   # ≤ 8 minutes on one H100
    python benchmarks/gpu_suite.py --smoke                                                 # toy shapes, CPU, seconds

Three tables, each provider timed interleaved with its floor on the same inputs (run_all.interleave; medians of
per-round ratios), CUDA synchronized around every call, and peak memory from one extra call per provider:
* ops: the dual linear (M tokens × K → N, H = 8 hyperparameters) and the dual convolution at ResNet-50 stage sizes,
  forward + the response sub-step's backward (∂ẋ, ∂W_r, ∂b_r, ∂V), per backend, against the GEMM floor: the
  five plain products of the same sizes that the op cannot avoid (x·W_gᵀ, x·W_rᵀ, ẋ·W_gᵀ forward; ∂ẏ·W_g and
  (s⊙∂ẏ)ᵀ·x backward), timed as one product × 5;
* attention: attention_dual forward + the gradients of (q̇, k̇, v̇), per backend, against SDPA's forward +
  backward (flash on a GPU), T = 1024 … 4096;
* steps: Δ-STN train_step of a converted model against a plain SGD step of the original: a GPT-2-small-shaped
  decoder (12 × 768, T = 1024, bf16 autocast) and a ResNet-50 (B = 128, 224 px).
The header names the device, torch, Triton and CUDA versions. A GPU number exists only where this ran on a GPU.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

import run_all
from fastdstn import Hyper, HyperSpace, SelfTuning, convert, make_optimizers, ops

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "zoo"))
from zoo import Logits  # noqa: E402
HYPERS = 8


@dataclass(frozen=True)
class Sizes:
    linear: List[tuple]          # (M, K, N)
    conv: List[tuple]            # (batch, channels, side) of a 3×3, stride-1 convolution channels → channels
    attention: List[tuple]       # (T, heads, head size) at batch 1
    gpt: dict                    # GPT2Config arguments and the batch
    resnet: dict                 # torchvision ResNet (Bottleneck blocks) arguments, the batch and the image side


FULL = Sizes(linear=[(8192, 4096, 4096), (8192, 1024, 4096)], conv=[(32, 64, 56), (32, 256, 14)],
             attention=[(1024, 16, 64), (2048, 16, 64), (4096, 16, 64)],
             gpt=dict(vocab_size=50257, n_layer=12, n_embd=768, n_head=12, n_positions=1024, batch=8),
             resnet=dict(layers=[3, 4, 6, 3], width_per_group=64, num_classes=1000, batch=128, side=224))  # ResNet-50
SMOKE = Sizes(linear=[(16, 8, 12)], conv=[(2, 4, 6)], attention=[(16, 2, 8)],
              gpt=dict(vocab_size=64, n_layer=1, n_embd=16, n_head=2, n_positions=8, batch=2),
              resnet=dict(layers=[1, 1, 1, 1], width_per_group=4, num_classes=10, batch=2, side=16))


def timed(device: torch.device, call: Callable[[], None]) -> Callable[[], Dict[str, float]]:
    """One call's seconds, the device synchronized before and after."""
    def run() -> Dict[str, float]:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return {"full": time.perf_counter() - start}
    return run


def peak_mb(device: torch.device, call: Callable[[], None]) -> Optional[float]:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    call()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2 ** 20


def backends(device: torch.device) -> List[str]:
    names = ["reference", *(n for n in ("cpp", "triton") if ops.available().get(n) == "available")]
    return [n for n in names if device.type == "cuda" or n != "triton"]


def _response_backward(outputs, inputs) -> None:
    torch.autograd.grad(sum(o.float().sum() for o in outputs), inputs)


def dense_providers(kind: str, shape: tuple, dtype: torch.dtype, device: torch.device):
    """{provider: call}: each backend's dual op + response backward, and the one-product floor (× 5 later)."""
    new = dict(device=device, dtype=dtype)
    if kind == "linear":
        m, k, n = shape
        x, w = torch.randn(m, k, **new), torch.randn(n, k, **new) / k ** 0.5
        geometry, floor = (), (lambda: torch.mm(x, w.t()))
        op = ops.stn_linear_dual
    else:
        b, c, side = shape
        x, w = torch.randn(b, c, side, side, **new), torch.randn(c, c, 3, 3, **new) / (9 * c) ** 0.5
        geometry, floor = (1, 1, 1, 1), (lambda: F.conv2d(x, w, padding=1))
        op, m, n = ops.stn_conv2d_dual, b, c
    xt, eps = torch.randn_like(x).requires_grad_(), torch.randn(m, HYPERS, **new)
    wr, br = (w * 0.1).requires_grad_(), torch.zeros(n, **new).requires_grad_()
    v = (torch.randn(2 * n, HYPERS, **new) * 0.1).requires_grad_()
    bg = torch.zeros(n, **new)

    def with_backend(name: str) -> Callable[[], None]:
        def call() -> None:
            with ops.use_backend(name):
                _response_backward(op(x, xt, eps, w, bg, wr, br, v, *geometry), (xt, wr, br, v))
        return call
    return {**{name: with_backend(name) for name in backends(device)}, "floor": floor}


def attention_providers(shape: tuple, dtype: torch.dtype, device: torch.device):
    length, heads, size = shape
    q, k, v = (torch.randn(1, heads, length, size, device=device, dtype=dtype) for _ in range(3))
    tangents = [torch.randn_like(q).requires_grad_() for _ in range(3)]
    primal = [t.clone().requires_grad_() for t in (q, k, v)]

    def with_backend(name: str) -> Callable[[], None]:
        def call() -> None:
            with ops.use_backend(name):
                _response_backward(ops.attention_dual(q, k, v, *tangents, is_causal=True)[1:], tangents)
        return call

    def sdpa() -> None:
        _response_backward([F.scaled_dot_product_attention(*primal, is_causal=True)], primal)
    return {**{name: with_backend(name) for name in backends(device)}, "floor": sdpa}


def gpt_case(sizes: Sizes, device: torch.device):
    from transformers import GPT2Config, GPT2LMHeadModel
    arguments = dict(sizes.gpt)
    batch, length = arguments.pop("batch"), arguments["n_positions"]
    model = Logits(GPT2LMHeadModel(GPT2Config(**arguments))).to(device)
    tokens = torch.randint(0, arguments["vocab_size"], (batch, length + 1), device=device)
    dropout = {"model.transformer.drop": "drop_embed", "model.transformer.h.*.attn": "drop_attn",
               "model.transformer.h.*.mlp.dropout": "drop_resid"}
    return model, tokens[:, :-1], tokens[:, 1:], dropout


def resnet_case(sizes: Sizes, device: torch.device):
    from torchvision.models.resnet import Bottleneck, ResNet
    arguments = dict(sizes.resnet)
    batch, side = arguments.pop("batch"), arguments.pop("side")
    model = ResNet(Bottleneck, **arguments).to(device)
    return (model, torch.randn(batch, 3, side, side, device=device),
            torch.randint(0, arguments["num_classes"], (batch,), device=device), {})


def step_providers(case, autocast: bool, device: torch.device):
    """plain: SGD on the original; delta: the converted copy's Δ-STN train_step (weight decay tuned too)."""
    model, inputs, targets, dropout = case

    def loss_fn(out, y):
        return F.cross_entropy(out.flatten(0, -2).float(), y.flatten())

    sgd = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    hypers = [Hyper(n, 0.1, 0.0, 0.9) for n in dict.fromkeys(dropout.values())]
    space = HyperSpace(hypers + [Hyper("wd", 1e-4, 0.0, 0.1, per_example=False)]).to(device)
    converted = convert(copy.deepcopy(model), space, dropout=dropout)
    method = SelfTuning(converted, space, "delta", loss_fn=loss_fn, weight_decay="wd")
    optimizers = make_optimizers(converted, space, "delta")
    amp = torch.autocast(device.type, torch.bfloat16, enabled=autocast)

    def plain() -> None:
        with amp:
            loss = loss_fn(model(inputs), targets)
        sgd.zero_grad(set_to_none=True)
        loss.backward()
        sgd.step()

    def delta() -> None:
        with amp:
            method.train_step(inputs, targets, optimizers)
    return {"delta": delta, "floor": plain}


def measure(providers: Dict[str, Callable[[], None]], device: torch.device, budget: float, floor_calls: int = 1):
    """[(provider, median ms, median ratio to the floor, peak MB)] with the floor's own row first."""
    samples, rounds = run_all.interleave({n: timed(device, c) for n, c in providers.items()}, budget, 3, 200)
    floor = [t * floor_calls for t in samples["floor"]["full"]]
    rows = []
    for name, call in providers.items():
        times = samples[name]["full"] if name != "floor" else floor
        rows.append((name, statistics.median(times) * 1e3, statistics.median(run_all.paired(times, floor)),
                     peak_mb(device, call), rounds))
    return rows


def main(argv: Optional[List[str]] = None) -> List[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="toy shapes on this machine's device (CPU in tests)")
    parser.add_argument("--budget", type=float, default=10.0, help="seconds of interleaved rounds per table row")
    parser.add_argument("--out", default=os.path.join(HERE, "RESULTS_gpu_suite.md"))
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not args.smoke:
        parser.error("--smoke: expected on a machine without a GPU (the full sizes need one), received no --smoke")
    sizes = SMOKE if args.smoke else FULL
    budget = 0.05 if args.smoke else args.budget
    dtypes = [torch.float32] if device.type == "cpu" else [torch.bfloat16, torch.float32]
    lines = ["| table | case | dtype | provider | ms | × floor | peak MB | rounds |", "|---|---|---|---|---|---|---|---|"]

    def emit(table: str, case: str, dtype, rows) -> None:
        for name, ms, ratio, mb, rounds in rows:
            lines.append(f"| {table} | {case} | {str(dtype).replace('torch.', '')} | {name} | {ms:.3f} | {ratio:.2f} | "
                         f"{'-' if mb is None else f'{mb:.0f}'} | {rounds} |")
            print(lines[-1], flush=True)

    for dtype in dtypes:
        for kind, shapes in (("linear", sizes.linear), ("conv", sizes.conv)):
            for shape in shapes:
                emit(f"ops {kind}", "×".join(map(str, shape)), dtype,
                     measure(dense_providers(kind, shape, dtype, device), device, budget, floor_calls=5))
        for shape in sizes.attention:
            emit("attention", "T={} heads={} d={}".format(*shape), dtype,
                 measure(attention_providers(shape, dtype, device), device, budget))
    autocast = device.type == "cuda"
    emit("steps", "gpt2", "bf16 autocast" if autocast else torch.float32,
         measure(step_providers(gpt_case(sizes, device), autocast, device), device, budget))
    emit("steps", "resnet50", "bf16 autocast" if autocast else torch.float32,
         measure(step_providers(resnet_case(sizes, device), autocast, device), device, budget))
    info = run_all.machine_info(device)
    versions = (f"torch {info['torch']}, CUDA {torch.version.cuda}, Triton "
                f"{getattr(sys.modules.get('triton'), '__version__', 'not loaded')}, fastdstn {info['fastdstn']}")
    header = ["# GPU suite", "", f"`python benchmarks/gpu_suite.py{' --smoke' if args.smoke else ''}`, "
              f"{info['timestamp']}, {info['device']}, {versions}.", "",
              "× floor: median over interleaved rounds of (provider / the same round's floor); ops' floor = one plain "
              "product of the op's size × 5, attention's = SDPA forward + backward, steps' = a plain SGD step.", ""]
    with open(args.out, "w") as f:
        f.write("\n".join(header + lines) + "\n")
    print(f"wrote {args.out}")
    return lines


if __name__ == "__main__":
    main()
