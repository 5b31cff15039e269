"""Δ-STN's training step against a plain SGD step of the same model, on the models of the step-cost targets, and
where the difference goes.

    python benchmarks/bench_step_cost.py [--models mlp cnn resnet18 vit] [--threads 2] [--budget 30]
                                         [--out benchmarks/STEP_COST.md] [--smoke] [--compile MODEL ...]

Models: the SPEC's MLP and SimpleCNN (benchmarks/cases.py WORKLOADS, built from fastdstn.nn), torchvision's ResNet-18
and a small ViT through `convert` with a tuned weight decay (cases.ARCHITECTURES). Per model, interleaved in one
process on one batch (timing.interleave, the median of per-round ratios): the plain step, Δ-STN's train_step (both
sub-steps), and each sub-step alone. Then torch.profiler splits one Δ-STN step's and one plain step's CPU time by op:
`GEMM/conv` is the self time of the matrix products and convolutions (what no implementation can skip), in units of
the plain step's whole time; the rest of the Δ-STN step is what the method adds around them. --compile MODEL ...
adds those models' steps with networks compiled by `model.compile()` (Inductor), each against its eager twin.
--smoke runs the same code at toy sizes and writes nothing unless --out is given.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from typing import Dict, List

import torch
from torch.profiler import ProfilerActivity, profile

import cases
from fastdstn.method import guard
from fastdstn.nn.groups import _RowSums, _SquaredNorm
from fastdstn.train.allocator import keep_freed_memory
from results import machine_info
from timing import interleave, paired, timed

HERE = os.path.dirname(os.path.abspath(__file__))
# Issue 18's targets (Δ-STN train_step / plain SGD step, CPU, 2 threads).
TARGETS = {"mlp": 2.2, "cnn": 2.2, "resnet18": 2.6, "vit": 2.6}
MODELS = {**cases.WORKLOADS, **cases.ARCHITECTURES}
# Self time of these ops is the GEMM/conv work (oneDNN and MKL under ATen's names).
GEMM_CONV = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm", "aten::mkldnn_convolution",
             "aten::convolution_backward", "aten::_convolution", "aten::mkldnn_linear",
             "aten::_mkldnn_convolution_backward"}
NORMS = {"aten::native_batch_norm", "aten::native_batch_norm_backward", "aten::native_layer_norm",
         "aten::native_layer_norm_backward"}
# Scopes whose CPU time (their ops included) the split reports apart: the tuned weight penalty's autograd Functions
# forward and backward, the optimizers' steps and zero_grads, and the finiteness guard.
PENALTY = {f.__name__ + suffix for f in (_SquaredNorm, _RowSums) for suffix in ("", "Backward")}
SCOPES = {"penalty": lambda key: key in PENALTY, "guard": lambda key: key == guard.PROFILER_SCOPE,
          "optimizers": lambda key: key.startswith(("Optimizer.step#", "Optimizer.zero_grad#"))}
PROFILED_STEPS = 3


def breakdown(step, steps: int = PROFILED_STEPS) -> Dict[str, float]:
    """Seconds per step of the GEMM/conv ops and the normalizations (CPU self time), of each of SCOPES (CPU time
    with their ops; none of them runs a GEMM or a normalization), and the total."""
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    split = dict.fromkeys(["gemm", "norm", *SCOPES, "total"], 0.0)
    for event in prof.key_averages():
        seconds = event.self_cpu_time_total / 1e6 / steps
        split["total"] += seconds
        if event.key in GEMM_CONV:
            split["gemm"] += seconds
        elif event.key in NORMS:
            split["norm"] += seconds
        for scope, matches in SCOPES.items():
            if matches(event.key):
                split[scope] += event.cpu_time_total / 1e6 / steps
    return split


def measure(name: str, small: bool, budget: float, min_rounds: int, compiled: bool) -> Dict[str, object]:
    workload = MODELS[name](small=small)
    train, _ = workload.stn("delta")
    general, response = sub_steps(workload)
    providers = {"plain": timed(workload.plain), "delta": timed(train), "general": timed(general),
                 "response": timed(response)}
    if workload.plain_pooled is not None:
        providers["plain_pooled"] = timed(workload.plain_pooled)
    if compiled:
        providers.update(compiled_providers(name, small))
    samples, rounds = interleave(providers, budget, min_rounds, max_rounds=1000)
    plain = samples["plain"]["full"]
    ratio = {n: statistics.median(paired(samples[n]["full"], plain)) for n in providers if n != "plain"}
    if "plain_pooled" in samples:   # Δ-STN against a plain step that pools as the STN model does
        ratio["delta_pooled"] = statistics.median(paired(samples["delta"]["full"], samples["plain_pooled"]["full"]))
    if compiled:    # the compiled Δ-STN step against the eager one (the compiled plain step is already against plain)
        ratio["delta_compiled"] = statistics.median(paired(samples["delta_compiled"]["full"],
                                                           samples["delta"]["full"]))
    split_plain, split_delta = breakdown(workload.plain), breakdown(train)
    scale = split_plain["total"]
    parts = {part: split_delta[part] / scale for part in ("gemm", "norm", *SCOPES)}
    return {"name": name, "label": workload.label, "plain_ms": statistics.median(plain) * 1e3, "ratio": ratio,
            "rounds": rounds, **parts, "other": split_delta["total"] / scale - sum(parts.values()),
            "plain_gemm": split_plain["gemm"] / scale}


def compiled_providers(name: str, small: bool) -> Dict[str, object]:
    """The plain step and Δ-STN's train_step of fresh copies whose networks went through `model.compile()` (Inductor),
    compiled by three calls each before the timing starts."""
    workload = MODELS[name](small=small)
    train, _ = workload.stn("delta")
    workload.plain.model.compile()
    train.method.model.compile()
    for _ in range(3):
        workload.plain()
        train()
    return {"plain_compiled": timed(workload.plain), "delta_compiled": timed(train)}


def sub_steps(workload: cases.Workload):
    """Δ-STN's general and response sub-steps of a fresh model, each alone (the response one at a fixed draw)."""
    train, _ = workload.stn("delta")
    method, optimizers, (x, y) = train.method, train.optimizers, train.batch
    with torch.no_grad():
        eps = method.space.sample(method._examples(x)).eps
    return (lambda: method.general_step(x, y, optimizers.general),
            lambda: method.response_step(x, y, eps, optimizers.response))


def compile_table(rows: List[Dict[str, object]]) -> List[str]:
    lines = ["| model | plain compiled / eager | Δ-STN compiled / eager |", "|---|---|---|"]
    return lines + [f"| {r['label']} | {r['ratio']['plain_compiled']:.3f} | {r['ratio']['delta_compiled']:.3f} |"
                    for r in rows]


def table(rows: List[Dict[str, object]]) -> List[str]:
    lines = ["| model | plain ms | Δ-STN × | target | met | Δ-STN × plain pooled as STN | general × | response × | "
             "GEMM/conv floor × | norms × | weight penalty × | optimizers × | guard × | other × | "
             "plain's GEMM/conv share | rounds |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio, target = r["ratio"], TARGETS[r["name"]]
        pooled = f"{ratio['delta_pooled']:.2f}" if "delta_pooled" in ratio else "—"
        lines.append(f"| {r['label']} | {r['plain_ms']:.1f} | {ratio['delta']:.2f} | {target:.1f} | "
                     f"{'yes' if ratio['delta'] <= target else 'no'} | {pooled} | {ratio['general']:.2f} | "
                     f"{ratio['response']:.2f} | {r['gemm']:.2f} | {r['norm']:.2f} | {r['penalty']:.2f} | "
                     f"{r['optimizers']:.2f} | {r['guard']:.2f} | {r['other']:.2f} | "
                     f"{r['plain_gemm']:.0%} | {r['rounds']} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, default=30.0, help="seconds of interleaved rounds per model")
    parser.add_argument("--min-rounds", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="toy sizes, two rounds, nothing written without --out")
    parser.add_argument("--compile", nargs="*", default=[], choices=list(TARGETS), metavar="MODEL",
                        help="models whose plain and Δ-STN steps are also timed compiled with model.compile()")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc at its defaults (the default run keeps freed memory, as fastdstn train)")
    parser.add_argument("--out", default=None, help="markdown file (default benchmarks/STEP_COST.md, none with --smoke)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    malloc = "default" if args.default_malloc or not keep_freed_memory() else "kept"
    budget, min_rounds = (0.0, 2) if args.smoke else (args.budget, args.min_rounds)
    info = machine_info(torch.device("cpu"))
    load = os.getloadavg()[0]
    rows = []
    for name in args.models:
        rows.append(measure(name, args.smoke, budget, min_rounds, name in args.compile))
        print(table(rows[-1:])[-1], flush=True)
        if name in args.compile:
            print(compile_table(rows[-1:])[-1], flush=True)
    out = args.out or (None if args.smoke else os.path.join(HERE, "STEP_COST.md"))
    if out is None:
        return
    command = " ".join(["python benchmarks/bench_step_cost.py", *sys.argv[1:]])
    header = [
        "# Δ-STN step cost on the target models (CPU)",
        "",
        f"`{command}`, {info['timestamp']}, {info['cpu']}, {args.threads} threads, torch {info['torch']}, fastdstn "
        f"{info['fastdstn']}, ops backend auto, malloc {malloc}; load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at "
        "the end.",
        "",
        "× columns: the median over interleaved rounds of (step time / the same round's plain SGD step). `general` and "
        "`response` are Δ-STN's two sub-steps alone; `Δ-STN` is train_step, both. The last columns split one profiled "
        "Δ-STN step's CPU time, in units of the plain step's: GEMM/conv (matrix products and convolutions, the "
        "floor), the normalizations' kernels, the tuned weight penalty's passes over the weights forward and "
        "backward (not the addition of its gradient to the layers'), the two optimizers' steps and zero_grads, the "
        "finiteness guard, and everything else. The STN models max-pool through fastdstn's op "
        "(fastdstn.nn.MaxPool2d, which convert puts in place of nn.MaxPool2d) in every sub-step, the plain networks "
        "through ATen's kernel; `Δ-STN × plain pooled as STN` divides by a plain step that also pools through "
        "fastdstn's op, which isolates the cost of the method from the faster pooling.",
        "",
    ]
    compile_lines = ["", "torch.compile (Inductor, `model.compile()` on the plain network and on the converted one; each "
                     "ratio against the same model's eager step):", "",
                     *compile_table([r for r in rows if r["name"] in args.compile])] if args.compile else []
    with open(out, "w") as f:
        f.write("\n".join(header + table(rows) + compile_lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
