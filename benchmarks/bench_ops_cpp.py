"""Benchmark of the compiled STN ops (fastdstn.ops.cpp) against the reference backend and the GEMM floor.

Each measurement is a dual op's forward plus Δ-STN's response-sub-step backward (x, W_g, b_g frozen;
gradients for ẋ, W_r, b_r, V), on the same inputs for every provider, in one process, with the
providers interleaved round by round; reported: median, p20, p80 in milliseconds.

Providers:
  cpp        fastdstn.ops.cpp (fused C++ ops)
  reference  fastdstn.ops.reference (plain PyTorch, autograd)
  mm-floor   (linear only) the bare torch.mm calls of the same shapes: x·W_gᵀ, x·W_rᵀ, ẋ·W_gᵀ forward and
             ∂ẏ·W_g, ∂ẏᵀ·x backward: the GEMM floor that a fused op can approach but not beat.

Channel dropout rows: dropout_dual on SimpleCNN's feature maps with H and W shared (one draw per example and
channel), forward and backward w.r.t. x and ẋ; `mul-floor` is the bare multiplies by a broadcast mask.

Max pooling rows: max_pool2d_dual on SimpleCNN's two pools and ResNet-18's stem (64 px), forward and the backward
w.r.t. ẋ, as the dual pass runs them (the primal frozen); `fwAD` is PyTorch's forward-mode rule of F.max_pool2d on a
dual tensor and its backward, what the dual pass ran before fastdstn routed max pooling.

The last row is the tuned weight penalty of the response sub-step (`weight_penalty(model, ε, general=False)`
and its gradient w.r.t. every W_r and V, W_g frozen) over torchvision's ResNet-18 converted to STN layers, 11.2 M
weights each in W_g and W_r: the compiled passes fastdstn::penalty_row_sums and penalty_row_combination against
the reference's ATen expressions, both under fastdstn.ops.use_backend.

    python benchmarks/bench_ops_cpp.py                 # append the rows (suite ops_cpp) to benchmarks/results.csv
    python benchmarks/report.py                        # then render them into RESULTS.md

(benchmarks/history/ops_cpp.md holds the tables this script appended there before it wrote results.csv.)
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F

from fastdstn.nn import response_parameters, weight_penalty
from fastdstn.ops import cpp, use_backend
from fastdstn.ops import reference as ref
from fastdstn.ops.dispatch import implementation
from fastdstn.train.allocator import keep_freed_memory

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import cases  # noqa: E402
import timing  # noqa: E402
from results import RESULTS_CSV, append_rows, machine_info, time_rows  # noqa: E402


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


def channel_dropout_case(B, C, hw):
    x, xt, gy, gyt = (torch.randn(B, C, hw, hw, requires_grad=n < 2) for n in range(4))
    rate = torch.full((B,), 0.25)
    mask = torch.rand(B, C, 1, 1)

    def under(op):
        def run():
            y, yt = op(x, xt, rate, 7, 0, (2, 3))
            return torch.autograd.grad((y, yt), (x, xt), (gy, gyt))
        return run

    def floor():
        return gy * mask, gyt * mask, x.detach() * mask, xt.detach() * mask
    return {"cpp": under(implementation("cpp", "dropout_dual")), "reference": under(ref.dropout_dual),
            "mul-floor": floor}


def max_pool_case(B, C, hw, kernel, stride, padding):
    x, xt = torch.randn(B, C, hw, hw), torch.randn(B, C, hw, hw, requires_grad=True)
    geometry = ([kernel] * 2, [stride] * 2, [padding] * 2, [1, 1], False)
    gyt = torch.randn(ref.max_pool2d_dual(x, xt.detach(), *geometry)[0].shape)

    def under(backend):
        forward, backward = implementation(backend, "max_pool2d_dual"), implementation(backend,
                                                                                       "max_pool2d_dual_backward")

        def run():
            _, yt, indices = forward(x, xt.detach(), *geometry)
            return yt, backward(gyt, indices, (hw, hw))
        return run

    def forward_ad():
        with fwAD.dual_level():
            yt = fwAD.unpack_dual(F.max_pool2d(fwAD.make_dual(x, xt), kernel, stride, padding)).tangent
        return torch.autograd.grad(yt, xt, gyt)
    return {"cpp": under("cpp"), "reference": under("reference"), "fwAD": forward_ad}


def penalty_case():
    model = cases.resnet18_workload().stn("delta")[0].method.model
    for p in model.parameters():
        p.requires_grad_(False)
    leaves = [p.requires_grad_(True) for p in response_parameters(model)]
    eps = 0.1 * torch.randn(16, model.fc.hyper_proj.shape[1])

    def under(backend):
        def run():
            with use_backend(backend):
                return torch.autograd.grad(weight_penalty(model, eps, general=False), leaves, allow_unused=True)
        return run
    return {"cpp": under("cpp"), "reference": under("reference")}


def rounds_for(ms_estimate: float, budget_s: float) -> int:
    return int(max(15, min(200, budget_s * 1e3 / max(ms_estimate, 1e-3))))


def _seconds(providers, budget_s):
    """Every provider's seconds per round, interleaved, the number of rounds sized from one call of the
    reference."""
    estimate = timing.measure({"reference": providers["reference"]}, 1)["reference"].p50
    rounds = rounds_for(estimate, budget_s)
    samples, _ = timing.interleave({n: timing.timed(fn) for n, fn in providers.items()}, 0.0, rounds, rounds,
                                   warmup=3)
    return {n: by_mode["full"] for n, by_mode in samples.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=4.0, help="seconds of timing per size and provider")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's default)")
    parser.add_argument("--only", default="", help="run only rows whose op or size contains this text")
    parser.add_argument("--csv", default=RESULTS_CSV, help="the results table to append the rows to")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc at its defaults (the CLI keeps freed memory for reuse)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info(torch.device("cpu"))
    info["malloc"] = "default" if args.default_malloc or not keep_freed_memory() else "kept"
    if not cpp.AVAILABLE:
        raise SystemExit(f"fastdstn.ops.cpp is unavailable: {cpp.UNAVAILABLE_REASON}")
    info["cpu_isa"] = cpp.CPU_ISA or "none"
    info["small_gemm"] = "on" if cpp.SMALL_GEMM else "off"
    torch.manual_seed(0)
    rows = []
    work = [("stn_linear_dual", f"({B}, {n_in}, {n_out})", f"linear ({B}, {n_in}, {n_out})",
             lambda B=B, n_in=n_in, n_out=n_out: linear_case(B, n_in, n_out))
            for B, n_in, n_out in cases.LINEAR_SHAPES + cases.MLP_LAYER_SHAPES]
    work += [("stn_conv2d_dual", f"{name}: B={B} {c_in}→{c_out} k{k} {hw}×{hw}" + ("" if has_xt else ", ẋ=0"),
              f"conv {name}", lambda shape=shape: conv_case(*shape))
             for name, shape in zip(cases.CONV_NAMES, cases.CONV_SHAPES)
             for B, c_in, c_out, hw, k, pad, has_xt in [shape]]
    work += [("dropout_dual", f"channels: ({B}, {C}, {hw}, {hw}), H and W shared", f"dropout ({B}, {C}, {hw})",
              lambda B=B, C=C, hw=hw: channel_dropout_case(B, C, hw)) for B, C, hw in ((128, 16, 14), (128, 32, 7))]
    work += [("max_pool2d_dual", f"{name}: ({B}, {C}, {hw}, {hw}) k{k} s{st} p{p}", f"pooling {name}",
              lambda shape=(B, C, hw, k, st, p): max_pool_case(*shape))
             for name, (B, C, hw, k, st, p) in (("SimpleCNN pool 1", (128, 16, 28, 2, 2, 0)),
                                                ("SimpleCNN pool 2", (128, 32, 14, 2, 2, 0)),
                                                ("ResNet-18 stem", (16, 64, 32, 3, 2, 1)))]
    work.append(("weight_penalty", "ResNet-18: 2 × 11.2 M weights", "penalty resnet18", penalty_case))
    for op, size, label, build in work:
        if args.only and args.only not in label:
            continue
        providers = build()
        seconds = _seconds(providers, args.budget)
        denominator = "mm-floor" if "mm-floor" in providers else "cpp"
        rows += time_rows(info, "ops_cpp", op, "fwd+bwd", size, seconds, denominator)
        print(f"{op} {size}: " + ", ".join(f"{n} {statistics.median(t) * 1e3:.3f} ms" for n, t in seconds.items()),
              flush=True)
    append_rows(rows, args.csv)


if __name__ == "__main__":
    main()
