"""Training-step cost of one model with one backend, printed as a markdown table (a quick look;
`run_all.py` is the full, all-backends version that writes results.csv and RESULTS.md).

    python benchmarks/bench_steps.py [--model mlp|cnn|lstm] [--backend auto|reference|cpp] [--repeats 30]
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict, List

import torch

import cases
import fastdstn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mlp", choices=list(cases.WORKLOADS))
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    workload = cases.WORKLOADS[args.model]()
    steps: Dict[str, Callable[[], None]] = {"plain": workload.plain}
    for name, mode, phase, linearized in cases.STEPS:
        train, hyper = workload.stn(mode, linearized_hyper=linearized)
        steps[name] = train if phase == "train" else hyper

    times: Dict[str, List[float]] = {name: [] for name in steps}
    with fastdstn.ops.use_backend(args.backend):
        memory = {name: cases.saved_bytes(step, step.resident) for name, step in steps.items()}
        for _ in range(args.warmup):
            for step in steps.values():
                step()
        for _ in range(args.repeats):          # interleaved: a drift of the machine hits every step alike
            for name, step in steps.items():
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)

    base = statistics.median(times["plain"])
    print(f"# {workload.label}, backend {args.backend}, {args.threads} threads, {args.repeats} interleaved repeats, "
          f"torch {torch.__version__}, fastdstn {fastdstn.__version__}")
    print("| step | p20 ms | median ms | p80 ms | × plain | saved for backward MB |")
    print("|---|---|---|---|---|---|")
    for name, samples in times.items():
        q = statistics.quantiles(samples, n=5)
        med = statistics.median(samples)
        print(f"| {name} | {q[0] * 1e3:.2f} | {med * 1e3:.2f} | {q[3] * 1e3:.2f} | {med / base:.2f} | "
              f"{memory[name] / 2**20:.2f} |")


if __name__ == "__main__":
    main()
