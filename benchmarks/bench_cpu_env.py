"""What the CPU build and the allocator setting do to the compiled ops, each case in a fresh process.

    python benchmarks/bench_cpu_env.py isa          # the CPU loops' three builds (FASTDSTN_CPU_ISA), direct op calls
    python benchmarks/bench_cpu_env.py malloc       # a SimpleCNN conv with glibc's defaults vs freed memory kept
    python benchmarks/bench_cpu_env.py stacking     # one convolution over stacked [W_g; W_r] vs two convolutions
    python benchmarks/bench_cpu_env.py batching     # one convolution of [x; ẋ] over W_g vs two, ResNet-18's layers
    python benchmarks/bench_cpu_env.py gemm         # the linear ops' small-batch GEMM kernel vs torch.mm, by size
    python benchmarks/bench_cpu_env.py pooling      # max pooling of (N, C, H, W): ATen, via channels-last, fastdstn
    python benchmarks/bench_cpu_env.py inductor     # Inductor's CPU code for a ReLU and for its bool mask vs eager
    python benchmarks/bench_cpu_env.py inductor-step  # SimpleCNN's general sub-step compiled vs eager, slowest kernels

Times are the minimum (isa, gemm) or median (malloc, stacking, batching, pooling, inductor, inductor-step) of
repeated calls at 1 thread (isa; gemm also at 2; batching and the inductor parts at 2, as the step-cost table) or
torch's default threads, in milliseconds or microseconds as labelled. Each setting runs in its own process because the instruction set, the
allocator and the GEMM kernel's mode are fixed once per process (gemm times the same op calls with
FASTDSTN_SMALL_GEMM=0, i.e. ATen, and =any, so that the kernel also takes the sizes its limits give to ATen). These
produced the numbers quoted in csrc/common/isa.h, csrc/dense/small_gemm_cpu.cpp, csrc/dense/dense_ops.cpp,
fastdstn/train/allocator.py, fastdstn/nn/pooling.py, benchmarks/history/ops_cpp.md and the README's torch.compile
figures.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

import cases
from timing import repeat


def _best_us(fn, n):
    """The fastest of n calls (after 10 warm-up calls), in µs."""
    return min(repeat(fn, n, warmup=10)) * 1e6


def _median_ms(fn, n):
    """The median of n calls (after 5 warm-up calls), in ms."""
    return statistics.median(repeat(fn, n, warmup=5)) * 1e3


def isa_case() -> dict:
    """Direct op calls (no autograd) with the CPU loops of this process's instruction set."""
    import torch

    from fastdstn.ops import cpp

    torch.set_num_threads(1)
    ops = torch.ops.fastdstn
    out = {"isa": cpp.CPU_ISA}
    for B, n, _ in cases.LINEAR_SHAPES[:2]:          # the two square layers
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
    x = torch.randn(cases.MLP_BATCH, cases.MLP_SIZES[1])      # the MLP's hidden activations
    rate = torch.full((cases.MLP_BATCH,), 0.3)
    with torch.no_grad():
        out[f"dropout_dual {x.shape[0]} x {x.shape[1]}, primal + tangent µs"] = _best_us(
            lambda: ops.dropout_dual(x, x, rate, 7, 0, []), 400)
        head_rate = torch.full((64,), 0.1)     # ViT of bench_step_cost.py: 16 examples × 4 heads, 65 tokens
        out["attention_keep_mask 64 x 65 x 65 µs"] = _best_us(
            lambda: ops.attention_keep_mask(123, head_rate, 0, 65, 65, torch.float32), 400)
    return out


def malloc_case() -> dict:
    import torch
    import torch.nn.functional as F

    from fastdstn.train.allocator import keep_freed_memory

    kept = os.environ.get("FASTDSTN_KEEP_FREED_MEMORY", "1") != "0" and keep_freed_memory()
    B, c_in, c_out, hw, k, pad, _ = cases.CONV_SHAPES[0]          # SimpleCNN's first convolution
    x, W = torch.randn(B, c_in, hw, hw), torch.randn(c_out, c_in, k, k)
    with torch.no_grad():
        ms = _median_ms(lambda: F.conv2d(x, W, None, padding=pad), 60)
    return {"freed memory kept": kept, f"conv {c_in}->{c_out} k{k} {hw}x{hw} B{B} ms": ms}


def stacking_case() -> dict:
    import torch
    import torch.nn.functional as F

    from fastdstn.train.allocator import keep_freed_memory

    keep_freed_memory()
    out = {}
    for B, c_in, c_out, hw, k, pad, _ in cases.CONV_SHAPES:
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


# ResNet-18's 3×3 convolutions in the step-cost table (B16, 64 px): (C_in, C_out, input size, stride), one per stage
# and the first, stride-2 layer of the last two.
RESNET_CONVS = [(64, 64, 16, 1), (128, 128, 8, 1), (256, 256, 4, 1), (512, 512, 2, 1), (64, 128, 16, 2),
                (256, 512, 4, 2)]


def batching_case() -> dict:
    """The dual forward's two convolutions over W_g, conv(x, W_g) and conv(ẋ, W_g), against one convolution of
    [x; ẋ] stacked along the batch (the concatenation included), 2 threads: csrc/dense/dense_ops.cpp batches the
    layers with at least 4x as many weights as input elements."""
    import torch
    import torch.nn.functional as F

    from fastdstn.train.allocator import keep_freed_memory

    keep_freed_memory()
    torch.set_num_threads(2)
    out = {}
    for c_in, c_out, hw, stride in RESNET_CONVS:
        x, xt, W = torch.randn(16, c_in, hw, hw), torch.randn(16, c_in, hw, hw), torch.randn(c_out, c_in, 3, 3)
        label = f"{c_in}->{c_out} {hw}x{hw} stride {stride} (weights / input {W.numel() / x.numel():.2g})"
        out[f"{label}: two convs ms"] = _median_ms(
            lambda: (F.conv2d(x, W, None, stride, 1), F.conv2d(xt, W, None, stride, 1)), 40)
        out[f"{label}: batched ms"] = _median_ms(lambda: F.conv2d(torch.cat([x, xt]), W, None, stride, 1), 40)
    return out


# Max pools of the step-cost models: SimpleCNN's two (2×2, B128) and ResNet-18's stem (3×3 stride 2 pad 1, B16 64 px).
POOLS = [("SimpleCNN pool1", (128, 16, 28, 28), (2, 2, 0)), ("SimpleCNN pool2", (128, 32, 14, 14), (2, 2, 0)),
         ("ResNet-18 stem", (16, 64, 32, 32), (3, 2, 1))]


def pooling_case() -> dict:
    """Max pooling with indices of a contiguous (N, C, H, W) tensor, 1 thread: ATen's kernel, the same values
    through a channels-last copy and back, and fastdstn's compiled op (fastdstn.nn.pooling)."""
    import torch

    from fastdstn.ops import cpp
    from fastdstn.train.allocator import keep_freed_memory

    keep_freed_memory()
    torch.set_num_threads(1)
    pool = torch.ops.aten.max_pool2d_with_indices
    out = {}
    for name, shape, (k, stride, pad) in POOLS:
        x = torch.randn(shape)

        def channels_last():
            y, indices = pool(x.contiguous(memory_format=torch.channels_last), [k, k], [stride, stride], [pad, pad])
            return y.contiguous(), indices.contiguous()
        out[f"{name} {shape}: contiguous ms"] = _median_ms(lambda: pool(x, [k, k], [stride, stride], [pad, pad]), 30)
        out[f"{name} {shape}: channels-last copy ms"] = _median_ms(channels_last, 30)
        if cpp.AVAILABLE:
            op = torch.ops.fastdstn.max_pool2d_dual.default
            out[f"{name} {shape}: fastdstn ms"] = _median_ms(
                lambda: op(x, None, [k, k], [stride, stride], [pad, pad], [1, 1], False), 30)
    return out


def inductor_case() -> dict:
    """What Inductor's generated CPU code costs against eager ATen for the two tensors a compiled training step makes of
    a ReLU, on SimpleCNN's first activation (128, 16, 28, 28) at 2 threads: the ReLU itself (float) and the mask
    x <= 0 (bool), which the compiled backward saves in place of the ReLU's output. The mask also runs compiled with
    scalar code (torch._inductor.config.cpp.simdlen = 1), which shows whether the vector code is what is slow."""
    import torch
    import torch._dynamo
    import torch._inductor.config as inductor_config

    torch.set_num_threads(2)
    x = torch.randn(128, 16, 28, 28)
    relu, mask = (lambda t: torch.relu(t)), (lambda t: t <= 0)
    out = {"ReLU, eager ms": _median_ms(lambda: relu(x), 50), "mask, eager ms": _median_ms(lambda: mask(x), 50)}
    out["ReLU, compiled ms"] = _median_ms(lambda compiled=torch.compile(relu): compiled(x), 50)
    out["mask, compiled ms"] = _median_ms(lambda compiled=torch.compile(mask): compiled(x), 50)
    torch._dynamo.reset()
    with inductor_config.patch({"cpp.simdlen": 1}):
        out["mask, compiled scalar ms"] = _median_ms(lambda compiled=torch.compile(mask): compiled(x), 50)
    return out


def inductor_step_case(quick: bool = False) -> dict:
    """Δ-STN's general sub-step of the SimpleCNN workload (benchmarks/cases.py, B128; quick: B4, the smoke test) on
    an eager model and on one through `model.compile()`, 2 threads, then the compiled sub-step's four slowest
    Inductor kernels per sub-step (torch.profiler, with Inductor's kernel profiling on)."""
    import torch
    import torch._inductor.config as inductor_config
    from torch.profiler import ProfilerActivity, profile

    from fastdstn.train.allocator import keep_freed_memory

    keep_freed_memory()
    torch.set_num_threads(2)
    inductor_config.cpp.enable_kernel_profile = True
    steps = {}
    for name in ("eager", "compiled"):
        train, _ = cases.cnn_workload(small=quick).stn("delta")
        method, optimizers, (x, y) = train.method, train.optimizers, train.batch
        if name == "compiled":
            method.model.compile()
        steps[name] = lambda m=method, o=optimizers.general, x=x, y=y: m.general_step(x, y, o)
    calls = 3 if quick else 30
    out = {f"general sub-step {name} ms": _median_ms(step, calls) for name, step in steps.items()}
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            steps["compiled"]()
    kernels = [(e.key, e.self_cpu_time_total / 1e3 / calls) for e in prof.key_averages() if e.key.startswith("graph_")]
    for key, ms in sorted(kernels, key=lambda kernel: -kernel[1])[:4]:
        out[f"compiled kernel {key} ms"] = ms
    return out


def gemm_case(quick: bool = False) -> dict:
    """The linear ops' three kinds of product through their test ops, each one C++ call from Python: the
    forward's x·W_gᵀ, x·W_rᵀ, ẋ·W_gᵀ (fastdstn::_linear_products); ∂ẋ = g·W_g and ∂W_r = aᵀ·x
    (fastdstn::_dense_mm). Minimum µs of repeated calls; whether the kernel or ATen ran is this process's
    FASTDSTN_SMALL_GEMM."""
    import torch

    from fastdstn.ops import cpp  # noqa: F401  (loads fastdstn._C: the test ops)
    from fastdstn.train.allocator import keep_freed_memory

    keep_freed_memory()
    ops = torch.ops.fastdstn
    out = {}
    for threads in (1,) if quick else (1, 2):
        torch.set_num_threads(threads)
        for B in (32,) if quick else cases.GEMM_BATCHES:
            for n_in, n_out in cases.GEMM_SIZES[:1] if quick else cases.GEMM_SIZES:
                x, xt, g = torch.randn(B, n_in), torch.randn(B, n_in), torch.randn(B, n_out)
                Wg, Wr = torch.randn(n_out, n_in), torch.randn(n_out, n_in)
                products = {"forward": lambda: ops._linear_products(x, xt, Wg, Wr),
                            "g·W": lambda: ops._dense_mm(g, Wg), "aᵀ·x": lambda: ops._dense_mm(g.t(), x)}
                n = max(15, min(600, int(6e8 / (B * n_in * n_out))))
                for name, call in products.items():
                    out[f"{threads}t B={B} {n_in}->{n_out} {name}"] = _best_us(call, n)
    return out


def gemm_comparison(aten: dict, kernel: dict) -> dict:
    """ATen's time / the kernel's for every product both processes timed."""
    return {f"{key}: ATen / kernel": f"{aten[key] / kernel[key]:.3f} ({aten[key]:.1f} / {kernel[key]:.1f} µs)"
            for key in aten}


CASES = {"isa": isa_case, "malloc": malloc_case, "stacking": stacking_case, "batching": batching_case,
         "gemm": gemm_case, "pooling": pooling_case, "inductor": inductor_case, "inductor-step": inductor_step_case}


def _in_subprocess(part: str, env: dict, quick: bool) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", part] + (["--quick"] if quick else []),
                          env=dict(os.environ, **env), check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=list(CASES))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true",
                        help="gemm: one size at 1 thread; inductor-step: batch 4, 3 calls (the smoke tests)")
    args = parser.parse_args()
    if args.child:
        quick = args.quick and args.part in ("gemm", "inductor-step")
        print(json.dumps(CASES[args.part](quick=True) if quick else CASES[args.part]()))
        return
    settings = {"isa": [{"FASTDSTN_CPU_ISA": v} for v in ("baseline", "avx2", "widest")],
                "malloc": [{"FASTDSTN_KEEP_FREED_MEMORY": v} for v in ("0", "1")],
                "stacking": [{}], "batching": [{}], "pooling": [{}], "inductor": [{}],
                "inductor-step": [{}]}.get(args.part)
    if args.part == "gemm":  # ATen (kernel off) and the kernel (FASTDSTN_SMALL_GEMM=any: every size) in turn
        aten, kernel = (_in_subprocess("gemm", {"FASTDSTN_SMALL_GEMM": mode}, args.quick) for mode in ("0", "any"))
        print("\n".join(f"{k}: {v}" for k, v in gemm_comparison(aten, kernel).items()), flush=True)
        return
    for env in settings:
        result = _in_subprocess(args.part, env, args.quick)
        print(", ".join(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}" for k, v in result.items()),
              flush=True)


if __name__ == "__main__":
    main()
