"""Benchmark of fastdstn.ops.attention_dual: the dual attention forward plus Δ-STN's tangent-path backward.

Every provider computes, on the same inputs, what the response sub-step needs of one attention call: the forward
(O, Ȯ) and the gradients of a loss on Ȯ w.r.t. (q̇, k̇, v̇), the primal q, k, v frozen. Compared with plain
attention training (forward O, gradients w.r.t. q, k, v), which is what a non-STN step pays.

CPU providers (float32):
  dual        fastdstn.ops.attention_dual, reference backend (blockwise, custom tangent-path backward)
  dual-cpp    the same on the cpp backend: the reference's algorithm with the compiled dropout keep mask (the
              same code as `dual` without --dropout); when the extension is built
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
    python benchmarks/bench_attention.py --dropout 0.1           # with per-example attention dropout
    python benchmarks/bench_attention.py --block-sweep           # the reference's block size, T = 4096
    python benchmarks/bench_attention.py --keep-mask             # one block's dropout mask: PyTorch vs compiled
    python benchmarks/bench_attention.py --routing-overhead      # Δ-STN steps without attention, routing on/off
    python benchmarks/bench_attention.py --gpu                   # GPU table (needs CUDA)
    python benchmarks/report.py                                  # then render the rows into RESULTS.md

Each run but --smoke appends its rows (suite attention) to benchmarks/results.csv and prints them as a table;
benchmarks/history/attention.md holds the tables earlier runs appended there.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
from typing import Callable, Dict, List

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from fastdstn import ops
from fastdstn.ops import cpp
from fastdstn.ops.attention import reference

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import cases  # noqa: E402
from results import RESULTS_CSV, Row, append_rows, machine_info, make_row, time_rows  # noqa: E402
from timing import interleave, peak_bytes, percentiles, timed  # noqa: E402


def operands(batch, heads, length, head_dim, dtype, device):
    g = torch.Generator(device=device).manual_seed(0)
    make = lambda: torch.randn(batch, heads, length, head_dim, generator=g, device=device, dtype=dtype)  # noqa
    return [make() for _ in range(7)]     # q, k, v, q̇, k̇, v̇ and the cotangent of the output


def dual_step(backend: str, q, k, v, qt, kt, vt, g, causal, dropout: float = 0.0) -> Callable[[], object]:
    """attention_dual's forward and tangent backward on `backend`, with per-example attention dropout at rate
    `dropout` for every example when it is above 0."""
    tangents = [t.clone().requires_grad_() for t in (qt, kt, vt)]
    rate = torch.full((q.shape[0],), dropout, device=q.device) if dropout > 0 else None

    def run():
        with ops.use_backend(backend):
            _, ot = ops.attention_dual(q, k, v, *tangents, is_causal=causal, dropout_rate=rate, seed=0)
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
        out = {"dual": dual_step("reference", q, k, v, qt, kt, vt, g, args.causal, args.dropout)}
        if cpp.AVAILABLE:
            out["dual-cpp"] = dual_step("cpp", q, k, v, qt, kt, vt, g, args.causal, args.dropout)
        out["sdpa"] = sdpa_step(q, k, v, g, args.causal)
    if length <= args.math_max_length:
        out["fwAD-math"] = forward_ad_math_step(q, k, v, qt, kt, vt, g, args.causal)
    return out


def shape_label(args, length: int) -> str:
    return (f"B{args.batch} h{args.heads} d{args.head_dim} T{length}" + (" causal" if args.causal else "")
            + (f" dropout{args.dropout:g}" if args.dropout > 0 else "") + (" bf16" if args.gpu else " fp32"))


def table(args, device: str, info) -> List[Row]:
    """Every provider at each length: time_ms, time_ratio to plain SDPA, peak_MB; printed as a table as it runs."""
    ours = "triton" if device == "cuda" else "dual"
    other = "sdpa-flash" if device == "cuda" else "sdpa"
    compiled = "dual-cpp" if device == "cpu" and cpp.AVAILABLE else None
    compiled_head = f" {compiled} ms | {ours} / {compiled} |" if compiled else ""
    print(f"| T | {ours} ms (p20–p80) |{compiled_head} fwAD-math ms | {other} ms | fwAD-math / {ours} | "
          f"{ours} / {other} | {ours} MB | fwAD-math MB | {other} MB |\n|---|---|---|---|---|---|---|---|---|"
          + ("---|---|" if compiled else ""), flush=True)
    rows: List[Row] = []
    for length in args.lengths:
        providers = providers_for(length, args, device)
        seconds = interleaved(providers, args.rounds, device)
        memory = {n: peak_bytes(fn, device) / 2 ** 20 for n, fn in providers.items()}
        shape = shape_label(args, length)
        rows += time_rows(info, "attention", "attention_dual", "fwd+bwd", shape, seconds, other)
        rows += [make_row(info, "attention", "attention_dual", n, "fwd+bwd", shape, "peak_MB", (mb, mb, mb), 1)
                 for n, mb in memory.items()]
        ms = {n: statistics.median(t) * 1e3 for n, t in seconds.items()}
        mine = percentiles([t * 1e3 for t in seconds[ours]])
        math = ms.get("fwAD-math")
        math_ms, math_ratio, math_mb = (f"{math:.2f}", f"{math / ms[ours]:.2f}x", f"{memory['fwAD-math']:.1f}"
                                        ) if math else ("–", "–", "–")
        compiled_cells = f" {ms[compiled]:.2f} | {ms[ours] / ms[compiled]:.2f}x |" if compiled else ""
        print(f"| {length} | {mine.p50:.2f} ({mine.p20:.2f}–{mine.p80:.2f}) |{compiled_cells} {math_ms} | "
              f"{ms[other]:.2f} | "
              f"{math_ratio} | {ms[ours] / ms[other]:.2f}x | {memory[ours]:.1f} | {math_mb} | {memory[other]:.1f} |",
              flush=True)
    return rows


def interleaved(providers: Dict[str, Callable], rounds: int, device: str) -> Dict[str, List[float]]:
    """Seconds per round of each provider, interleaved round by round."""
    samples, _ = interleave({n: timed(fn, device) for n, fn in providers.items()}, 0.0, rounds, rounds)
    return {n: by_mode["full"] for n, by_mode in samples.items()}


def block_sweep(args, info) -> List[Row]:
    """The reference's time and memory at one length for several query rows per block (reference.BLOCK_ROWS)."""
    length = args.lengths[-1]
    q, k, v, qt, kt, vt, g = operands(args.batch, args.heads, length, args.head_dim, torch.float32, "cpu")
    step = dual_step("reference", q, k, v, qt, kt, vt, g, args.causal)
    chosen = reference.BLOCK_ROWS
    print(f"| BLOCK_ROWS | dual ms at T={length} (p20–p80) | peak MB |\n|---|---|---|", flush=True)
    rows: List[Row] = []
    try:
        for block_rows in (32, 64, 128, 256, 512):
            reference.BLOCK_ROWS = block_rows
            seconds = interleaved({"dual": step}, args.rounds, "cpu")
            mb = peak_bytes(step, "cpu") / 2 ** 20
            mode = f"BLOCK_ROWS={block_rows}"
            rows += time_rows(info, "attention", "block_sweep", mode, shape_label(args, length), seconds, None)
            rows.append(make_row(info, "attention", "block_sweep", "dual", mode, shape_label(args, length), "peak_MB",
                                 (mb, mb, mb), 1))
            p20, median, p80 = percentiles([t * 1e3 for t in seconds["dual"]])
            print(f"| {block_rows} | {median:.2f} ({p20:.2f}–{p80:.2f}) | {mb:.1f} |", flush=True)
    finally:
        reference.BLOCK_ROWS = chosen
    return rows


# (heads, query rows, keys) of one block's keep mask: a ViT's (16 examples × 4 heads, 65 tokens) and a long
# sequence's (2 heads, the reference's 128-row block, 4096 keys).
KEEP_MASK_SHAPES = [(64, 65, 65), (2, 128, 4096)]


def keep_mask_table(args, info) -> List[Row]:
    """One block's attention-dropout keep mask alone (rate 0.1 per head, float32): the reference's PyTorch Philox
    (reference.philox_keep_mask) against the compiled fastdstn::attention_keep_mask that the cpp backend uses."""
    if not cpp.AVAILABLE:
        raise SystemExit(f"--keep-mask: the compiled extension is not available ({cpp.UNAVAILABLE_REASON})")
    from fastdstn.ops.attention import cpp as compiled

    print("| heads × rows × keys | reference ms (p20–p80) | cpp ms (p20–p80) | reference / cpp |\n|---|---|---|---|",
          flush=True)
    rows: List[Row] = []
    for heads, block_rows, keys in [(4, 8, 16)] if args.smoke else KEEP_MASK_SHAPES:
        rate = torch.full((heads,), 0.1)
        providers = {name: (lambda f=f: f(1234, rate, 0, block_rows, keys, torch.float32))
                     for name, f in (("reference", reference.philox_keep_mask), ("cpp", compiled.keep_mask))}
        seconds = interleaved(providers, args.rounds, "cpu")
        shape = f"{heads}x{block_rows}x{keys} fp32"
        rows += time_rows(info, "attention", "keep_mask", "fwd", shape, seconds, "reference")
        ref, ours = (percentiles([t * 1e3 for t in seconds[n]]) for n in ("reference", "cpp"))
        print(f"| {heads} × {block_rows} × {keys} | {ref.p50:.3f} ({ref.p20:.3f}–{ref.p80:.3f}) | "
              f"{ours.p50:.3f} ({ours.p20:.3f}–{ours.p80:.3f}) | {ref.p50 / ours.p50:.1f}x |", flush=True)
    return rows


def routing_overhead(args, info) -> List[Row]:
    """What entering dual_routes() costs a Δ-STN step of a model without attention (benchmarks/cases.py's
    workloads; the small MLP alone with --smoke): the same step with routing on and off, interleaved."""
    from fastdstn.method import steps

    routed = steps.dual_routes
    print("| model | step | routing on ms (p20–p80) | off ms | on / off |\n|---|---|---|---|---|", flush=True)
    rows: List[Row] = []
    workloads = {"mlp": cases.WORKLOADS["mlp"]} if args.smoke else cases.WORKLOADS
    for workload in workloads.values():
        work = workload(small=args.smoke)
        for step_name, linearized in (("delta:train", False), ("delta:hyper_lin", True)):
            train, hyper = work.stn("delta", linearized_hyper=linearized)
            step = hyper if linearized else train

            def switched(on):
                def run():
                    steps.dual_routes = routed if on else contextlib.nullcontext
                    try:
                        step()
                    finally:
                        steps.dual_routes = routed
                return run
            seconds = interleaved({"on": switched(True), "off": switched(False)}, args.rounds, "cpu")
            rows += time_rows(info, "attention", "routing", step_name, work.label, seconds, "off")
            on, off = (percentiles([t * 1e3 for t in seconds[n]]) for n in ("on", "off"))
            print(f"| {work.label} | {step_name} | {on.p50:.2f} ({on.p20:.2f}–{on.p80:.2f}) | {off.p50:.2f} | "
                  f"{on.p50 / off.p50:.3f} |", flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="the GPU table (Triton vs SDPA flash, bf16)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny shapes, one round: checks that it runs, writes nothing")
    parser.add_argument("--block-sweep", action="store_true", help="time the reference's block size")
    parser.add_argument("--keep-mask", action="store_true",
                        help="one block's dropout keep mask: the reference's PyTorch Philox vs the compiled op")
    parser.add_argument("--routing-overhead", action="store_true",
                        help="Δ-STN steps of models without attention with dual_routes() on and off")
    parser.add_argument("--csv", default=RESULTS_CSV, help="the results table to append the rows to")
    parser.add_argument("--lengths", type=int, nargs="+", help="sequence lengths T (queries = keys)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, help="default: 2 on CPU, 16 on a GPU")
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--dropout", type=float, default=0.0,
                        help="per-example attention-dropout rate of the dual providers (default 0: none; the "
                             "SDPA and fwAD-math providers run without dropout)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--math-max-length", type=int, default=4096,
                        help="longest T for the fwAD-math provider (O(T²) memory per head)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads on CPU (default: torch's)")
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
    info = machine_info(torch.device(device))
    if args.block_sweep:
        rows = block_sweep(args, info)
    elif args.routing_overhead:
        rows = routing_overhead(args, info)
    elif args.keep_mask:
        rows = keep_mask_table(args, info)
    else:
        rows = table(args, device, info)
    if not args.smoke:
        append_rows(rows, args.csv)

if __name__ == "__main__":
    main()
