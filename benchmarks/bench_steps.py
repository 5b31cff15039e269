"""Training-step cost: Δ-STN (both sub-steps), centered STN and STN against a plain MLP SGD step.

SPEC §5: MLP 784-1200-1200-10, batch 128, dropout on the input and each hidden layer (H = 3).
Providers run interleaved in one process on the same inputs; we report medians (and p20/p80) of
per-step wall time, the ratio to the plain step, and the bytes saved for backward per step.

    python benchmarks/bench_steps.py [--backend auto|reference|cpp] [--repeats 30] [--threads 2]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F
from torch import nn

import fastdstn
from fastdstn import Hyper, HyperSpace, SelfTuning, make_optimizers
from fastdstn.nn import StnDropout, StnLinear

SIZES = (784, 1200, 1200, 10)
BATCH = 128
RATES = (0.2, 0.5, 0.5)


def plain_mlp() -> nn.Module:
    layers: List[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        layers += [nn.Dropout(RATES[i]), nn.Linear(n_in, n_out)] + ([nn.ReLU()] if i < len(SIZES) - 2 else [])
    return nn.Sequential(*layers)


def stn_mlp(space: HyperSpace) -> nn.Module:
    layers: List[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        layers += [StnDropout(f"drop{i}"), StnLinear(n_in, n_out, len(space))]
        layers += [nn.ReLU()] if i < len(SIZES) - 2 else []
    return nn.Sequential(*layers)


def saved_bytes(step: Callable[[], None]) -> int:
    """Bytes of the distinct tensors autograd saves for backward during one step."""
    seen: Dict[int, int] = {}

    def pack(t: torch.Tensor):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(seen.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x, y = torch.randn(BATCH, SIZES[0]), torch.randint(0, SIZES[-1], (BATCH,))

    plain = plain_mlp()
    plain_opt = torch.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9)

    def plain_step() -> None:
        loss = F.cross_entropy(plain(x), y)
        plain_opt.zero_grad(set_to_none=True)
        loss.backward()
        plain_opt.step()

    steps: Dict[str, Callable[[], None]] = {"plain": plain_step}
    for mode in ("delta", "centered", "stn"):
        space = HyperSpace([Hyper(f"drop{i}", r, 0.0, 0.95) for i, r in enumerate(RATES)])
        model = stn_mlp(space)
        method = SelfTuning(model, space, mode, loss_fn=F.cross_entropy)
        optimizers = make_optimizers(model, space, mode)
        steps[mode] = lambda method=method, optimizers=optimizers: method.train_step(x, y, optimizers)
        steps[f"{mode}:hyper"] = lambda method=method, optimizers=optimizers: method.hyper_step(x, y, optimizers.hyper)

    times: Dict[str, List[float]] = {name: [] for name in steps}
    with fastdstn.ops.use_backend(args.backend):
        memory = {name: saved_bytes(step) for name, step in steps.items()}
        for _ in range(args.warmup):
            for step in steps.values():
                step()
        for _ in range(args.repeats):          # interleaved: a drift of the machine hits every provider
            for name, step in steps.items():
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)

    base = statistics.median(times["plain"])
    print(f"# Training step, MLP {'-'.join(map(str, SIZES))}, batch {BATCH}, backend {args.backend}, "
          f"{args.threads} threads, {args.repeats} interleaved repeats")
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, fastdstn {fastdstn.__version__}")
    print("| step | p20 ms | median ms | p80 ms | × plain | saved for backward MB |")
    print("|---|---|---|---|---|---|")
    for name, samples in times.items():
        q = statistics.quantiles(samples, n=5)
        med = statistics.median(samples)
        print(f"| {name} | {q[0] * 1e3:.2f} | {med * 1e3:.2f} | {q[3] * 1e3:.2f} | {med / base:.2f} | "
              f"{memory[name] / 2**20:.2f} |")


if __name__ == "__main__":
    main()
