"""The Triton backend's shared launch configuration: interpreter detection, pinned vs autotuned configs.

The family folders hold the kernels (dense/triton.py, dense/triton_conv.py, dropout/triton.py,
lstm_cell/triton.py, attention/triton.py), registered as `fastdstn::<op>_triton`; this module is also what the
backend registry (dispatch.py) loads to learn whether the backend runs here: importing it fails with a message
when Triton is missing.

Under the Triton interpreter (TRITON_INTERPRET=1, how CI runs the kernels on CPU) and whenever
FASTDSTN_TRITON_PIN=1, every GEMM kernel runs ONE pinned config: the interpreter cannot autotune over
more than one config ("0 active drivers"), and tests want the same config on every run (as xformers does).
On a GPU the GEMM kernels autotune over `GEMM_CONFIGS` (Ampere/Hopper-class).
"""
from __future__ import annotations

import os
from typing import List

import torch

try:
    import triton
except ImportError as error:  # pragma: no cover - triton ships with every CUDA build of torch
    raise ImportError(f"triton is not importable ({error}); install a CUDA build of torch, which brings it") from error

# Compiled Triton runs CUDA tensors; tests run the kernels on CPU tensors under the interpreter.
DEVICE_TYPES = ("cuda",)
# Elements per program of the pointwise kernels (dropout, LSTM cell).
POINTWISE_BLOCK = 1024


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def pinned() -> bool:
    """One fixed config instead of autotuning (interpreter, or FASTDSTN_TRITON_PIN=1)."""
    return interpreting() or os.environ.get("FASTDSTN_TRITON_PIN", "0") not in ("", "0")


# Launch configs per GEMM kernel family: (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages).
# Chosen from `python -m fastdstn.ops.compile_check --all-configs` (sm_80 and sm_90 cubins built here
# without a GPU, bf16 and fp32 storage). None of them spills registers in bf16 on either architecture.
# Dropped for spilling: three-accumulator 128x64 / 64x128 tiles at 4 warps (200-490 bytes of stack; kept at
# 8 warps), the conv gather at 128x64 (80-290 bytes), the two-accumulator 128x64 at 4 warps on sm_80.
# Some fp32-storage configs spill 8-40 bytes on sm_80 or need more shared memory than a GPU has; the
# autotuner skips the latter at run time. No config was timed: no GPU was lent while they were chosen.
CONFIGS = {
    # three accumulators: x·W_gᵀ, x·W_rᵀ, ẋ·W_gᵀ
    "fwd": [(64, 64, 32, 4, 4), (64, 64, 64, 4, 3), (128, 64, 32, 8, 4), (128, 64, 64, 8, 3),
            (64, 128, 32, 8, 4), (64, 32, 64, 4, 4)],
    # the same kernel with the implicit-im2col gather, which needs more registers for addresses
    "conv": [(64, 64, 32, 8, 3), (64, 32, 32, 4, 3), (32, 64, 32, 4, 3)],
    # two accumulators: (∂x, ∂ẋ) or (∂W_g, ∂W_r)
    "bwd": [(128, 64, 32, 8, 4), (64, 64, 64, 4, 3), (128, 64, 64, 8, 3), (64, 32, 64, 4, 4),
            (64, 128, 32, 8, 4), (128, 128, 32, 8, 3)],
}
# FASTDSTN_TRITON_PIN=1 on a GPU (tests): one config per family that spills in neither dtype nor arch.
PINNED_GPU = {"fwd": (64, 64, 32, 4, 4), "conv": (32, 64, 32, 4, 3), "bwd": (64, 64, 64, 4, 3)}
# Under the interpreter: 32-wide tiles keep tests cheap while small test shapes still span several tiles
# (the interpreter costs ~3.5-4 ms per program x K-step, whatever the block).
PINNED_INTERPRETER = (32, 32, 32, 4, 2)


def _config(spec) -> triton.Config:
    bm, bn, bk, warps, stages = spec
    return triton.Config(dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8), num_warps=warps, num_stages=stages)


def gemm_configs(kind: str, every: bool = False) -> List[triton.Config]:
    """Autotune space of a GEMM kernel family ("fwd", "conv", "bwd"); one pinned config when `pinned()`
    (unless `every`, which compile_check uses to build them all)."""
    if every:
        return [_config(c) for c in CONFIGS[kind]]
    if interpreting():
        return [_config(PINNED_INTERPRETER)]
    if pinned():
        return [_config(PINNED_GPU[kind])]
    return [_config(c) for c in CONFIGS[kind]]


def input_precision(dtype: torch.dtype) -> str:
    """fp32 tl.dot follows torch's matmul setting: tf32 only where torch would use it too."""
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32 and not interpreting():
        return "tf32"
    return "ieee"


def check_device(*tensors) -> None:
    """Compiled Triton needs CUDA tensors; the interpreter runs on CPU tensors."""
    if interpreting():
        return
    for t in tensors:
        if t is not None and t.device.type != "cuda":
            raise ValueError(f"fastdstn.ops (triton backend): expected CUDA tensors (or TRITON_INTERPRET=1 for CPU), "
                             f"received a tensor on {t.device}")


def acc_dtype(dtype: torch.dtype):
    """Accumulator dtype: fp32, or fp64 for fp64 inputs (gradcheck)."""
    import triton.language as tl
    return tl.float64 if dtype == torch.float64 else tl.float32


def skip_launch(*tensors) -> bool:
    """Under the interpreter `wrap_triton` runs kernels eagerly instead of tracing them, so a fake/meta
    tensor (opcheck's fake-tensor test, torch.compile's tracing) must not reach a launch: the op's output
    shapes are all a fake run needs. On a GPU wrap_triton traces the launch and this is always False."""
    if not interpreting():
        return False
    from torch._subclasses.fake_tensor import FakeTensor
    return any(isinstance(t, FakeTensor) or t.device.type == "meta" for t in tensors if t is not None)
