"""Benchmark of the compiled STN ops (fastdstn.ops.cpp) against the reference backend and the GEMM floor.

Each measurement is a dual op's forward plus Δ-STN's response-sub-step backward (x, W_g, b_g frozen;
gradients for ẋ, W_r, b_r, V), on the same inputs for every provider, in one process, with the
providers interleaved round by round; reported: median, p20, p80 in milliseconds.

Providers:
  cpp        fastdstn.ops.cpp (fused C++ ops)
  reference  fastdstn.ops.reference (plain PyTorch, autograd)
  mm-floor   (linear only) the bare torch.mm calls of the same shapes: x·W_gᵀ, x·W_rᵀ, ẋ·W_gᵀ forward and
             ∂ẏ·W_g, ∂ẏᵀ·x backward: the GEMM floor that a fused op can approach but not beat.

    python benchmarks/bench_ops_cpp.py                 # print the table
    python benchmarks/bench_ops_cpp.py --append        # also append it to benchmarks/history/ops_cpp.md
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys

import torch

from fastdstn.ops import cpp
from fastdstn.ops import reference as ref
from fastdstn.ops.dispatch import implementation
from fastdstn.train.allocator import keep_freed_memory

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import cases  # noqa: E402
import timing  # noqa: E402


def _response_step(op, a, leaves, *geometry):
    """One forward of op on the inputs `a` and the gradients of its tangent w.r.t. the response leaves."""
    args = (a["x"], a["xt"], a["eps"], a["Wg"], a["bg"], a["Wr"], a["br"], a["V"], *geometry)

    def run():
        _, yt = op(*args)
        return torch.autograd.grad(yt, leaves, a["gy"])
    return run


def linear_case(B, n_in, n_out):
    a = cases.linear_inputs(B, n_in, n_out)
    leaves = [a[k] for k in ("xt", "Wr", "br", "V")]
    floor_forward, floor_backward = cases.linear_dual_case((B, n_in, n_out), [])["floor"]
    return {"cpp": _response_step(implementation("cpp", "stn_linear_dual"), a, leaves),
            "reference": _response_step(ref.stn_linear_dual, a, leaves),
            "mm-floor": lambda: floor_backward(floor_forward())}


def conv_case(B, c_in, c_out, hw, k, pad, has_xt):
    a = cases.conv_inputs(B, c_in, c_out, hw, k, has_xt)
    leaves = [a[n] for n in ("xt", "Wr", "br", "V") if a[n] is not None]
    geometry = ((1, 1), (pad, pad), (1, 1), 1)
    return {"cpp": _response_step(implementation("cpp", "stn_conv2d_dual"), a, leaves, *geometry),
            "reference": _response_step(ref.stn_conv2d_dual, a, leaves, *geometry)}


def rounds_for(ms_estimate: float, budget_s: float) -> int:
    return int(max(15, min(200, budget_s * 1e3 / max(ms_estimate, 1e-3))))


def _timed_rows(providers, budget_s):
    """Every provider's Summary in ms, the number of rounds sized from one call of the reference."""
    estimate = timing.measure({"reference": providers["reference"]}, 1)["reference"].p50
    return timing.measure(providers, rounds_for(estimate, budget_s), warmup=3)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--append", action="store_true", help="append the table to benchmarks/history/ops_cpp.md")
    parser.add_argument("--budget", type=float, default=4.0, help="seconds of timing per size and provider")
    parser.add_argument("--note", default="", help="a line to put under the table's heading")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's default)")
    parser.add_argument("--only", default="", help="run only rows whose op or size contains this text")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc at its defaults (the CLI keeps freed memory for reuse)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    malloc = "glibc defaults" if args.default_malloc or not keep_freed_memory() else "freed memory kept"
    if not cpp.AVAILABLE:
        raise SystemExit(f"fastdstn.ops.cpp is unavailable: {cpp.UNAVAILABLE_REASON}")
    torch.manual_seed(0)
    lines = ["| op | size | cpp ms (p20–p80) | reference ms | mm-floor ms | cpp / floor | reference / cpp |",
             "|---|---|---|---|---|---|---|"]

    def row(op, size, res):
        c, r = res["cpp"], res["reference"]
        f = res.get("mm-floor")
        floor_txt = f"{f.p50:.3f}" if f else "–"
        ratio_txt = f"{c.p50 / f.p50:.2f}x" if f else "–"
        line = (f"| {op} | {size} | {c.p50:.3f} ({c.p20:.3f}–{c.p80:.3f}) | {r.p50:.3f} | {floor_txt} | "
                f"{ratio_txt} | {r.p50 / c.p50:.2f}x |")
        print(line, flush=True)
        lines.append(line)

    print("\n".join(lines), flush=True)
    for B, n_in, n_out in cases.LINEAR_SHAPES + cases.MLP_LAYER_SHAPES:
        if args.only and args.only not in f"linear ({B}, {n_in}, {n_out})":
            continue
        row("stn_linear_dual fwd+bwd", f"({B}, {n_in}, {n_out})",
            _timed_rows(linear_case(B, n_in, n_out), args.budget))
    for name, (B, c_in, c_out, hw, k, pad, has_xt) in zip(cases.CONV_NAMES, cases.CONV_SHAPES):
        if args.only and args.only not in f"conv {name}":
            continue
        size = f"{name}: B={B} {c_in}→{c_out} k{k} {hw}×{hw}" + ("" if has_xt else ", ẋ=0")
        row("stn_conv2d_dual fwd+bwd", size,
            _timed_rows(conv_case(B, c_in, c_out, hw, k, pad, has_xt), args.budget))

    if args.append:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        head = (f"\n## {stamp} — torch {torch.__version__}, {torch.get_num_threads()} threads, "
                f"{platform.processor() or platform.machine()}, CPU loops: {cpp.CPU_ISA}, "
                f"small-batch GEMM kernel: {'on' if cpp.SMALL_GEMM else 'off'}, malloc: {malloc}\n\n")
        if args.note:
            head += args.note + "\n\n"
        with open(os.path.join(HERE, "history", "ops_cpp.md"), "a") as f:
            f.write(head + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
