"""Training-step cost of one model with one backend, printed as a markdown table (a quick look;
`run_all.py` is the full, all-backends version that writes results.csv).

    python benchmarks/bench_steps.py [--model mlp|cnn|lstm] [--backend auto|reference|cpp] [--repeats 30]
"""
from __future__ import annotations

import argparse
import statistics
from typing import Callable, Dict

import torch

import cases
import fastdstn
from timing import interleave, paired, percentiles, saved_bytes, timed


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

    with fastdstn.ops.use_backend(args.backend):
        memory = {name: saved_bytes(step, step.resident) for name, step in steps.items()}
        samples, rounds = interleave({name: timed(step) for name, step in steps.items()}, 0.0, args.repeats,
                                     args.repeats, warmup=args.warmup)

    times = {name: by_mode["full"] for name, by_mode in samples.items()}
    print(f"# {workload.label}, backend {args.backend}, {args.threads} threads, {rounds} interleaved repeats, "
          f"torch {torch.__version__}, fastdstn {fastdstn.__version__}")
    print("| step | p20 ms | median ms | p80 ms | × plain | saved for backward MB |")
    print("|---|---|---|---|---|---|")
    for name, seconds in times.items():
        p20, p50, p80 = percentiles(seconds)
        ratio = statistics.median(paired(seconds, times["plain"]))
        print(f"| {name} | {p20 * 1e3:.2f} | {p50 * 1e3:.2f} | {p80 * 1e3:.2f} | {ratio:.2f} | "
              f"{memory[name] / 2**20:.2f} |")


if __name__ == "__main__":
    main()
