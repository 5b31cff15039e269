"""Run the benchmark suites and write their rows to benchmarks/results.csv. Renders nothing: `report.py` turns
the CSV into RESULTS.md and the plots.

    python benchmarks/run_all.py                  # full run, ~5-8 min on 2 busy CPU threads
    python benchmarks/run_all.py --quick          # a fast pass (what compare.py runs by default)
    python benchmarks/report.py                   # then: RESULTS.md and the plots from the CSV

Suites:
  ops    stn_linear_dual / stn_conv2d_dual with every backend that runs on the device, against the
         "floor" (the bare torch.mm / F.conv2d / convolution_backward calls of the same shapes);
         modes fwd (forward with autograd recording), bwd (Δ-STN response-sub-step backward: grads of
         ẋ, W_r, b_r, V only) and full (fwd + bwd of the same call).
  steps  a plain SGD step against the STN / centered / Δ-STN training step and hyper step, with every
         backend, for the MLP, SimpleCNN and a small LSTM LM; saved-for-backward bytes per step
         (and torch.cuda.max_memory_allocated on CUDA).

Shapes and workloads come from cases.py, the timer from timing.py (providers interleaved round by round:
the ratios provider / floor and step / plain are what survive a shared machine).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import cases  # noqa: E402
import fastdstn  # noqa: E402
from fastdstn.ops import cpp  # noqa: E402
from fastdstn.train.allocator import keep_freed_memory  # noqa: E402
from results import RESULTS_CSV, Row, machine_info, make_row, time_rows, write_csv  # noqa: E402
from timing import clock, interleave, paired, percentiles, saved_bytes, timed  # noqa: E402


def run_ops(info, device, backends_, budget_s, min_rounds, max_rounds, log, linear_shapes=cases.LINEAR_SHAPES,
            conv_shapes=cases.CONV_SHAPES) -> List[Row]:
    now = clock(device)
    rows: List[Row] = []
    work = [("stn_linear_dual", cases.linear_label(s), lambda s=s: cases.linear_dual_case(s, backends_, device))
            for s in linear_shapes]
    work += [("stn_conv2d_dual", cases.conv_label(s), lambda s=s: cases.conv_dual_case(s, backends_, device))
             for s in conv_shapes]
    for op, shape, build in work:
        def phases(forward, backward):
            def run():
                t0 = now()
                state = forward()
                t1 = now()
                backward(state)
                t2 = now()
                return {"fwd": t1 - t0, "bwd": t2 - t1, "full": t2 - t0}
            return run

        providers = {name: phases(*pair) for name, pair in build().items()}
        samples, rounds = interleave(providers, budget_s, min_rounds, max_rounds, warmup=1)
        for mode in ("fwd", "bwd", "full"):
            rows += time_rows(info, "ops", op, mode, shape, {n: by_mode[mode] for n, by_mode in samples.items()},
                              "floor")
        log(f"  {op:16s} {shape:28s} rounds {rounds:3d}  " + "  ".join(
            f"{n} {statistics.median(paired(samples[n]['full'], samples['floor']['full'])):.2f}x"
            for n in samples if n != "floor"))
    return rows


# -------------------------------------------------------------------------------------------- steps
def run_steps(info, device, backends_, models, budget_s, min_rounds, max_rounds, log, small=False) -> List[Row]:
    rows: List[Row] = []
    for model in models:
        workload = cases.WORKLOADS[model](device=device, small=small)
        steps: Dict[Tuple[str, str], Callable[[], None]] = {("plain", "torch"): workload.plain}
        resident = {("plain", "torch"): workload.plain.resident}
        for backend in backends_:
            for name, mode, phase, linearized in cases.STEPS:
                train, hyper = workload.stn(mode, linearized_hyper=linearized)
                fn = train if phase == "train" else hyper

                def step(fn=fn, backend=backend):
                    with fastdstn.ops.use_backend(backend):
                        fn()
                steps[(name, backend)] = step
                resident[(name, backend)] = fn.resident

        # Saved-for-backward bytes (one untimed call each; also a warm-up) and the CUDA peak.
        for (name, provider), fn in steps.items():
            saved = saved_bytes(fn, resident[(name, provider)]) / 2 ** 20
            rows.append(make_row(info, "steps", name, provider, "full", workload.label, "saved_MB",
                                 (saved, saved, saved), 1))
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats(device)
                fn()
                torch.cuda.synchronize()
                peak = torch.cuda.max_memory_allocated(device) / 2 ** 20
                rows.append(make_row(info, "steps", name, provider, "full", workload.label, "cuda_max_MB",
                                     (peak, peak, peak), 1))

        names = {f"{n}@{p}": (n, p) for n, p in steps}
        samples, rounds = interleave({label: timed(steps[names[label]], device) for label in names}, budget_s,
                                     min_rounds, max_rounds, warmup=0)
        for label, by_mode in samples.items():
            name, provider = names[label]
            ms = [s * 1e3 for s in by_mode["full"]]
            rows.append(make_row(info, "steps", name, provider, "full", workload.label, "time_ms", percentiles(ms),
                                 rounds))
            if name != "plain":
                rows.append(make_row(info, "steps", name, provider, "full", workload.label, "time_ratio",
                                     percentiles(paired(by_mode["full"], samples["plain@torch"]["full"])), rounds))
        plain = samples["plain@torch"]["full"]
        log(f"  {workload.label}: rounds {rounds}, plain {statistics.median(plain) * 1e3:.1f} ms; " + ", ".join(
            f"{label} {statistics.median(paired(s['full'], plain)):.2f}x" for label, s in samples.items()
            if label != "plain@torch"))
    return rows



def run(args) -> List[Row]:
    """Measure the requested suites and return the rows (no files written)."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    backends_ = cases.device_backends(device)
    info = machine_info(device)
    info["malloc"] = "kept" if not args.default_malloc and keep_freed_memory() else "default"
    info["cpu_isa"] = cpp.CPU_ISA or "none"
    info["small_gemm"] = "on" if cpp.SMALL_GEMM else "off"
    log = (lambda msg: print(msg, flush=True)) if not args.silent else (lambda msg: None)
    log(f"# {info['cpu']}, {info['threads']} threads, torch {info['torch']}, backends {', '.join(backends_)}"
        f"{' (quick)' if args.quick else ''}")
    # --smoke: one round of tiny shapes and the small workloads, to test this script's plumbing.
    scale = 0.0 if args.smoke else 0.15 if args.quick else 1.0
    min_rounds = 1 if args.smoke else 3 if args.quick else None
    rows: List[Row] = []
    start = time.perf_counter()
    if "ops" in args.suites:
        # ~10 s per shape in a full run (6 shapes, 3 providers each), at least 8 rounds.
        shapes = dict(linear_shapes=cases.SMOKE_LINEAR_SHAPES,
                      conv_shapes=cases.SMOKE_CONV_SHAPES) if args.smoke else {}
        rows += run_ops(info, device, backends_, 10.0 * scale, 1 if args.smoke else 5 if args.quick else 8, 200, log,
                        **shapes)
        log(f"# ops done in {time.perf_counter() - start:.0f} s")
    if "steps" in args.suites:
        # ~45 s per model in a full run; a round of 15 steps takes 4 s (MLP) to 16 s (LSTM) on the busy
        # machine, so the big models get fewer rounds, but never fewer than min_rounds.
        rows += run_steps(info, device, backends_, args.models, 45.0 * scale, min_rounds or 5, 60, log,
                          small=args.smoke)
        log(f"# steps done in {time.perf_counter() - start:.0f} s")
    return rows


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="~15%% of the time budget, fewer minimum rounds")
    p.add_argument("--smoke", action="store_true", help="tiny shapes, one round: checks the script, measures nothing")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda (CUDA adds the triton backend and peak memory)")
    p.add_argument("--suites", default="ops,steps", type=lambda s: s.split(","))
    p.add_argument("--models", default="mlp,cnn,lstm", type=lambda s: s.split(","))
    p.add_argument("--csv", default=RESULTS_CSV)
    p.add_argument("--append", action="store_true", help="keep the CSV's older rows (reports use the newest)")
    p.add_argument("--silent", action="store_true")
    p.add_argument("--default-malloc", action="store_true",
                   help="leave glibc's malloc at its defaults (the CLI keeps freed memory for reuse)")
    return p


def main(argv: Optional[List[str]] = None) -> None:
    args = parser().parse_args(argv)
    rows = run(args)
    write_csv(args.csv, rows, append=args.append)
    print(f"wrote {args.csv}; `python benchmarks/report.py --csv {args.csv}` renders it")


if __name__ == "__main__":
    main()
