"""What the CPU build and the allocator setting do to the compiled ops, each case in a fresh process.

    python benchmarks/bench_cpu_env.py isa          # the CPU loops' three builds (FASTDSTN_CPU_ISA), direct op calls
    python benchmarks/bench_cpu_env.py malloc       # a SimpleCNN conv with glibc's defaults vs freed memory kept
    python benchmarks/bench_cpu_env.py stacking     # one convolution over stacked [W_g; W_r] vs two convolutions

Times are the minimum (isa) or median (malloc, stacking) of repeated calls at 1 thread (isa) or torch's default
threads, in milliseconds or microseconds as labelled. Each setting runs in its own process because both the
instruction set and the allocator are fixed once per process. These produced the numbers quoted in
csrc/epilogue_cpu.cpp, csrc/stn_dense.cpp, fastdstn/train/allocator.py and benchmarks/RESULTS_ops_cpp.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def _best_us(fn, n):
    for _ in range(10):
        fn()
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e6


def _median_ms(fn, n):
    for _ in range(5):
        fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def isa_case() -> dict:
    """Direct op calls (no autograd) with the CPU loops of this process's instruction set."""
    import torch

    from fastdstn.ops import cpp

    torch.set_num_threads(1)
    ops = torch.ops.fastdstn
    out = {"isa": cpp.CPU_ISA}
    for B, n in ((32, 256), (128, 1024)):
        x, xt, eps = torch.randn(B, n), torch.randn(B, n), torch.randn(B, 3)
        Wg, Wr = torch.randn(n, n) / 16, torch.randn(n, n) / 16
        bg, br, V = torch.randn(n), torch.randn(n), torch.randn(2 * n, 3)
        g = torch.randn(B, n)
        with torch.no_grad():
            u = ops.stn_linear_dual(x, xt, eps, Wg, bg, Wr, br, V)[3]
            # ∂b_r and ∂V only: the backward epilogue and its reductions, no weight GEMM
            mask = [False, False, False, False, False, False, True, True]
            out[f"linear response epilogue + sums ({B}, {n}) µs"] = _best_us(
                lambda: ops.stn_linear_dual_backward(None, g, x, xt, eps, Wg, Wr, br, V, u, True, mask), 400)
    x = torch.randn(128, 1200)
    rate = torch.full((128,), 0.3)
    with torch.no_grad():
        out["dropout_dual 128 x 1200, primal + tangent µs"] = _best_us(
            lambda: ops.dropout_dual(x, x, rate, 7, 0, []), 400)
    return out


def malloc_case() -> dict:
    import torch
    import torch.nn.functional as F

    from fastdstn.train.allocator import keep_freed_memory

    kept = os.environ.get("FASTDSTN_KEEP_FREED_MEMORY", "1") != "0" and keep_freed_memory()
    x, W = torch.randn(128, 1, 28, 28), torch.randn(16, 1, 5, 5)
    with torch.no_grad():
        ms = _median_ms(lambda: F.conv2d(x, W, None, padding=2), 60)
    return {"freed memory kept": kept, "conv 1->16 k5 28x28 B128 ms": ms}


def stacking_case() -> dict:
    import torch
    import torch.nn.functional as F

    from fastdstn.train.allocator import keep_freed_memory

    keep_freed_memory()
    out = {}
    for B, c_in, c_out, hw, k, pad in ((128, 1, 16, 28, 5, 2), (128, 16, 32, 14, 5, 2), (64, 64, 64, 32, 3, 1)):
        x, Wg, Wr, bg = torch.randn(B, c_in, hw, hw), torch.randn(c_out, c_in, k, k), torch.randn(c_out, c_in, k, k), \
            torch.randn(c_out)
        stacked = torch.cat([Wg, Wr])
        n = 15 if c_in == 64 else 40
        with torch.no_grad():
            out[f"B{B} {c_in}->{c_out} {hw}x{hw}: one stacked conv ms"] = _median_ms(
                lambda: F.conv2d(x, stacked, None, padding=pad), n)
            out[f"B{B} {c_in}->{c_out} {hw}x{hw}: two convs ms"] = _median_ms(
                lambda: (F.conv2d(x, Wg, bg, padding=pad), F.conv2d(x, Wr, None, padding=pad)), n)
    return out


CASES = {"isa": isa_case, "malloc": malloc_case, "stacking": stacking_case}


def _in_subprocess(part: str, env: dict) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", part], env=dict(os.environ, **env), check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=list(CASES))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(CASES[args.part]()))
        return
    settings = {"isa": [{"FASTDSTN_CPU_ISA": v} for v in ("baseline", "avx2", "widest")],
                "malloc": [{"FASTDSTN_KEEP_FREED_MEMORY": v} for v in ("0", "1")],
                "stacking": [{}]}[args.part]
    for env in settings:
        result = _in_subprocess(args.part, env)
        print(", ".join(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}" for k, v in result.items()),
              flush=True)


if __name__ == "__main__":
    main()
