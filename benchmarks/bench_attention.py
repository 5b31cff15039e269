"""Benchmark of fastdstn.ops.attention_dual: the dual attention forward plus Δ-STN's tangent-path backward.

Every provider computes, on the same inputs, what the response sub-step needs of one attention call: the forward
(O, Ȯ) and the gradients of a loss on Ȯ w.r.t. (q̇, k̇, v̇), the primal q, k, v frozen. Compared with plain
attention training (forward O, gradients w.r.t. q, k, v), which is what a non-STN step pays.

CPU providers (float32):
  dual        fastdstn.ops.attention_dual, reference backend (blockwise, custom tangent-path backward)
  fwAD-math   forward-mode AD through PyTorch's SDPA math kernel (the only SDPA kernel with a forward-AD rule)
  sdpa        plain SDPA forward + backward w.r.t. q, k, v (PyTorch's default CPU kernel), for scale
GPU providers (--gpu; bf16, T ≥ 1024):
  triton      fastdstn.ops.attention_dual, Triton backend
  sdpa-flash  SDPA forward + backward with the flash kernel, for scale
  fwAD-math   as on CPU (skipped where it runs out of memory)

Time: median (p20–p80) of interleaved rounds, in ms. Memory: the peak of the bytes allocated during one
forward + backward above what existed before it (inputs excluded; outputs and gradients included), from
torch.profiler's allocation events on CPU and torch.cuda.max_memory_allocated on a GPU.

    python benchmarks/bench_attention.py --smoke                 # seconds: every provider once, tiny shapes
    python benchmarks/bench_attention.py                         # CPU table, T = 128 ... 4096
    python benchmarks/bench_attention.py --write                 # also append it to history/attention.md
    python benchmarks/bench_attention.py --block-sweep           # the reference's block size, T = 4096
    python benchmarks/bench_attention.py --routing-overhead      # Δ-STN steps without attention, routing on/off
    python benchmarks/bench_attention.py --gpu --write           # GPU table (needs CUDA)
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import sys
from typing import Callable, Dict, List

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from fastdstn import ops
from fastdstn.ops.attention import reference

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import cases  # noqa: E402
from timing import measure, peak_bytes  # noqa: E402


def operands(batch, heads, length, head_dim, dtype, device):
    g = torch.Generator(device=device).manual_seed(0)
    make = lambda: torch.randn(batch, heads, length, head_dim, generator=g, device=device, dtype=dtype)  # noqa
    return [make() for _ in range(7)]     # q, k, v, q̇, k̇, v̇ and the cotangent of the output


def dual_step(backend: str, q, k, v, qt, kt, vt, g, causal) -> Callable[[], object]:
    tangents = [t.clone().requires_grad_() for t in (qt, kt, vt)]

    def run():
        with ops.use_backend(backend):
            _, ot = ops.attention_dual(q, k, v, *tangents, is_causal=causal)
        return torch.autograd.grad(ot, tangents, g)
    return run


def forward_ad_math_step(q, k, v, qt, kt, vt, g, causal) -> Callable[[], object]:
    tangents = [t.clone().requires_grad_() for t in (qt, kt, vt)]

    def run():
        with fwAD.dual_level(), sdpa_kernel(SDPBackend.MATH):
            out = F.scaled_dot_product_attention(*(fwAD.make_dual(p, t) for p, t in zip((q, k, v), tangents)),
                                                 is_causal=causal)
            ot = fwAD.unpack_dual(out).tangent
        return torch.autograd.grad(ot, tangents, g)
    return run


def sdpa_step(q, k, v, g, causal, backend=None) -> Callable[[], object]:
    primals = [t.clone().requires_grad_() for t in (q, k, v)]

    def run():
        with sdpa_kernel(backend) if backend is not None else contextlib.nullcontext():
            o = F.scaled_dot_product_attention(*primals, is_causal=causal)
        return torch.autograd.grad(o, primals, g)
    return run


def providers_for(length: int, args, device: str) -> Dict[str, Callable]:
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    q, k, v, qt, kt, vt, g = operands(args.batch, args.heads, length, args.head_dim, dtype, device)
    if device == "cuda":
        out = {"triton": dual_step("triton", q, k, v, qt, kt, vt, g, args.causal),
               "sdpa-flash": sdpa_step(q, k, v, g, args.causal, SDPBackend.FLASH_ATTENTION)}
    else:
        out = {"dual": dual_step("reference", q, k, v, qt, kt, vt, g, args.causal),
               "sdpa": sdpa_step(q, k, v, g, args.causal)}
    if length <= args.math_max_length:
        out["fwAD-math"] = forward_ad_math_step(q, k, v, qt, kt, vt, g, args.causal)
    return out


def table(args, device: str) -> List[str]:
    ours = "triton" if device == "cuda" else "dual"
    other = "sdpa-flash" if device == "cuda" else "sdpa"
    lines = [f"| T | {ours} ms (p20–p80) | fwAD-math ms | {other} ms | fwAD-math / {ours} | {ours} / {other} | "
             f"{ours} MB | fwAD-math MB | {other} MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for length in args.lengths:
        providers = providers_for(length, args, device)
        timed = measure(providers, args.rounds, device)
        memory = {n: peak_bytes(fn, device) / 2 ** 20 for n, fn in providers.items()}
        mine, theirs = timed[ours].p50, timed[other].p50
        math = timed.get("fwAD-math")
        math_ms, math_ratio, math_mb = (f"{math.p50:.2f}", f"{math.p50 / mine:.2f}x", f"{memory['fwAD-math']:.1f}"
                                        ) if math else ("–", "–", "–")
        row = (f"| {length} | {mine:.2f} ({timed[ours].p20:.2f}–{timed[ours].p80:.2f}) | {math_ms} | {theirs:.2f} | "
               f"{math_ratio} | {mine / theirs:.2f}x | {memory[ours]:.1f} | {math_mb} | {memory[other]:.1f} |")
        print(row, flush=True)
        lines.append(row)
    return lines


def block_sweep(args) -> List[str]:
    """The reference's time and memory at one length for several query rows per block (reference.BLOCK_ROWS)."""
    length = args.lengths[-1]
    q, k, v, qt, kt, vt, g = operands(args.batch, args.heads, length, args.head_dim, torch.float32, "cpu")
    step = dual_step("reference", q, k, v, qt, kt, vt, g, args.causal)
    chosen = reference.BLOCK_ROWS
    lines = [f"| BLOCK_ROWS | dual ms at T={length} (p20–p80) | peak MB |", "|---|---|---|"]
    print("\n".join(lines), flush=True)
    try:
        for rows in (32, 64, 128, 256, 512):
            reference.BLOCK_ROWS = rows
            p20, median, p80 = measure({"dual": step}, args.rounds, "cpu")["dual"]
            row = f"| {rows} | {median:.2f} ({p20:.2f}–{p80:.2f}) | {peak_bytes(step, 'cpu') / 2 ** 20:.1f} |"
            print(row, flush=True)
            lines.append(row)
    finally:
        reference.BLOCK_ROWS = chosen
    return lines


def routing_overhead(args) -> List[str]:
    """What entering dual_attention() costs a Δ-STN step of a model without attention (benchmarks/cases.py's
    workloads; the small MLP alone with --smoke): the same step with routing on and off, interleaved."""
    from fastdstn.method import steps

    routed = steps.dual_attention
    lines = ["| model | step | routing on ms (p20–p80) | off ms | on / off |", "|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    workloads = {"mlp": cases.WORKLOADS["mlp"]} if args.smoke else cases.WORKLOADS
    for workload in workloads.values():
        work = workload(small=args.smoke)
        for step_name, linearized in (("delta:train", False), ("delta:hyper_lin", True)):
            train, hyper = work.stn("delta", linearized_hyper=linearized)
            step = hyper if linearized else train

            def switched(on):
                def run():
                    steps.dual_attention = routed if on else contextlib.nullcontext
                    try:
                        step()
                    finally:
                        steps.dual_attention = routed
                return run
            timed = measure({"on": switched(True), "off": switched(False)}, args.rounds, "cpu")
            on, off = timed["on"], timed["off"]
            row = f"| {work.label} | {step_name} | {on.p50:.2f} ({on.p20:.2f}–{on.p80:.2f}) | {off.p50:.2f} | " \
                  f"{on.p50 / off.p50:.3f} |"
            print(row, flush=True)
            lines.append(row)
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="the GPU table (Triton vs SDPA flash, bf16)")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, one round: checks that it runs")
    parser.add_argument("--block-sweep", action="store_true", help="time the reference's block size")
    parser.add_argument("--routing-overhead", action="store_true",
                        help="Δ-STN steps of models without attention with dual_attention() on and off")
    parser.add_argument("--write", action="store_true", help="append the table to benchmarks/history/attention.md")
    parser.add_argument("--lengths", type=int, nargs="+", help="sequence lengths T (queries = keys)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, help="default: 2 on CPU, 16 on a GPU")
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--math-max-length", type=int, default=4096,
                        help="longest T for the fwAD-math provider (O(T²) memory per head)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads on CPU (default: torch's)")
    parser.add_argument("--note", default="", help="a line under the table's heading")
    args = parser.parse_args(argv)
    device = "cuda" if args.gpu else "cpu"
    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu: no CUDA device is visible")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.heads = args.heads or (16 if args.gpu else 2)
    if args.smoke:
        args.lengths, args.rounds, args.heads, args.head_dim = [64], 1, 2, 16
    args.lengths = args.lengths or (cases.ATTENTION_GPU_LENGTHS if args.gpu else cases.ATTENTION_CPU_LENGTHS)
    if args.block_sweep:
        lines = block_sweep(args)
    elif args.routing_overhead:
        lines = routing_overhead(args)
    else:
        lines = table(args, device)
    if args.write and not args.smoke:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        where = (torch.cuda.get_device_name() if args.gpu
                 else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
        head = (f"\n## {stamp}: {'GPU' if args.gpu else 'CPU'}, {where}, torch {torch.__version__}\n\n"
                f"`python benchmarks/bench_attention.py {' '.join(argv if argv is not None else sys.argv[1:])}`; "
                f"batch {args.batch}, {args.heads} heads, head size {args.head_dim}"
                f"{', causal' if args.causal else ''}, {args.rounds} rounds.\n\n")
        if args.note:
            head += args.note + "\n\n"
        with open(os.path.join(HERE, "history", "attention.md"), "a") as f:
            f.write(head + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
