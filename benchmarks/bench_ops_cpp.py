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
    python benchmarks/bench_ops_cpp.py --append        # also append it to benchmarks/RESULTS_ops_cpp.md
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

import torch

from fastdstn.ops import cpp
from fastdstn.ops import reference as ref
from fastdstn.ops.dispatch import implementation
from fastdstn.train.allocator import keep_freed_memory

HERE = os.path.dirname(os.path.abspath(__file__))

LINEAR_SIZES = [(32, 256, 256), (128, 1024, 1024), (512, 784, 1200), (128, 784, 1200), (128, 1200, 10)]
# (name, B, C_in, C_out, HW, k, padding, has_xt): SimpleCNN's two convolutions (the first sees the network
# input, whose tangent is zero) and a VGG layer.
CONV_SIZES = [("SimpleCNN conv1", 128, 1, 16, 28, 5, 2, False), ("SimpleCNN conv2", 128, 16, 32, 14, 5, 2, True),
              ("VGG 64-64 @32", 64, 64, 64, 32, 3, 1, True)]


def _leaf(*shape, grad=False, scale=1.0):
    return (torch.randn(*shape) * scale).requires_grad_(grad)


def linear_case(B, n_in, n_out, H=3):
    x, xt, eps = _leaf(B, n_in), _leaf(B, n_in, grad=True), _leaf(B, H)
    Wg, bg = _leaf(n_out, n_in, scale=n_in ** -0.5), _leaf(n_out)
    Wr, br, V = _leaf(n_out, n_in, grad=True, scale=n_in ** -0.5), _leaf(n_out, grad=True), _leaf(2 * n_out, H, grad=True)
    g = torch.randn(B, n_out)
    args = (x, xt, eps, Wg, bg, Wr, br, V)
    leaves = [xt, Wr, br, V]

    def step(op):
        def run():
            _, yt = op(*args)
            return torch.autograd.grad(yt, leaves, g)
        return run

    xd, xtd, Wgd, Wrd = x.detach(), xt.detach(), Wg.detach(), Wr.detach()

    def floor():
        torch.mm(xd, Wgd.t()), torch.mm(xd, Wrd.t()), torch.mm(xtd, Wgd.t())
        torch.mm(g, Wgd), torch.mm(g.t(), xd)

    return {"cpp": step(implementation("cpp", "stn_linear_dual")), "reference": step(ref.stn_linear_dual),
            "mm-floor": floor}


def conv_case(B, c_in, c_out, hw, k, pad, has_xt, H=6):
    x, eps = _leaf(B, c_in, hw, hw), _leaf(B, H)
    xt = _leaf(B, c_in, hw, hw, grad=True) if has_xt else None
    fan = c_in * k * k
    Wg, bg = _leaf(c_out, c_in, k, k, scale=fan ** -0.5), _leaf(c_out)
    Wr = _leaf(c_out, c_in, k, k, grad=True, scale=fan ** -0.5)
    br, V = _leaf(c_out, grad=True), _leaf(2 * c_out, H, grad=True)
    g = torch.randn(B, c_out, hw, hw)
    args = (x, xt, eps, Wg, bg, Wr, br, V, (1, 1), (pad, pad), (1, 1), 1)
    leaves = [t for t in (xt, Wr, br, V) if t is not None]

    def step(op):
        def run():
            _, yt = op(*args)
            return torch.autograd.grad(yt, leaves, g)
        return run

    return {"cpp": step(implementation("cpp", "stn_conv2d_dual")), "reference": step(ref.stn_conv2d_dual)}


def measure(providers, rounds, warmup=3):
    """Interleaved timing: every round runs each provider once, in a rotating order."""
    names = list(providers)
    for _ in range(warmup):
        for n in names:
            providers[n]()
    times = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            t0 = time.perf_counter()
            providers[n]()
            times[n].append(time.perf_counter() - t0)
    out = {}
    for n, ts in times.items():
        q = statistics.quantiles(ts, n=10)
        out[n] = (statistics.median(ts) * 1e3, q[1] * 1e3, q[7] * 1e3)
    return out


def rounds_for(ms_estimate: float, budget_s: float) -> int:
    return int(max(15, min(200, budget_s * 1e3 / max(ms_estimate, 1e-3))))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--append", action="store_true", help="append the table to benchmarks/RESULTS_ops_cpp.md")
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
        floor_txt = f"{f[0]:.3f}" if f else "–"
        ratio_txt = f"{c[0] / f[0]:.2f}x" if f else "–"
        line = (f"| {op} | {size} | {c[0]:.3f} ({c[1]:.3f}–{c[2]:.3f}) | {r[0]:.3f} | {floor_txt} | {ratio_txt} | "
                f"{r[0] / c[0]:.2f}x |")
        print(line, flush=True)
        lines.append(line)

    print("\n".join(lines), flush=True)
    for B, n_in, n_out in LINEAR_SIZES:
        if args.only and args.only not in f"linear ({B}, {n_in}, {n_out})":
            continue
        providers = linear_case(B, n_in, n_out)
        t0 = time.perf_counter()
        providers["reference"]()
        est = (time.perf_counter() - t0) * 1e3
        row("stn_linear_dual fwd+bwd", f"({B}, {n_in}, {n_out})",
            measure(providers, rounds_for(est, args.budget)))
    for name, B, c_in, c_out, hw, k, pad, has_xt in CONV_SIZES:
        if args.only and args.only not in f"conv {name}":
            continue
        providers = conv_case(B, c_in, c_out, hw, k, pad, has_xt)
        t0 = time.perf_counter()
        providers["reference"]()
        est = (time.perf_counter() - t0) * 1e3
        row("stn_conv2d_dual fwd+bwd", f"{name}: B={B} {c_in}→{c_out} k{k} {hw}×{hw}" + ("" if has_xt else ", ẋ=0"),
            measure(providers, rounds_for(est, args.budget)))

    if args.append:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        head = (f"\n## {stamp} — torch {torch.__version__}, {torch.get_num_threads()} threads, "
                f"{platform.processor() or platform.machine()}, CPU loops: {cpp.CPU_ISA}, "
                f"small-batch GEMM kernel: {'on' if cpp.SMALL_GEMM else 'off'}, malloc: {malloc}\n\n")
        if args.note:
            head += args.note + "\n\n"
        with open(os.path.join(HERE, "RESULTS_ops_cpp.md"), "a") as f:
            f.write(head + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
