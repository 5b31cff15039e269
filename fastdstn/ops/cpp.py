"""The compiled backend's loader: loads `fastdstn._C` (csrc/) when it was built for this torch, and says what
was built.

The C++ library defines the `fastdstn::*` operators, their CPU/CUDA kernels and their autograd formulas (one
folder per op family under csrc/); each family's `cpp.py` (fastdstn/ops/dense/cpp.py, lstm_cell/cpp.py,
dropout/cpp.py, attention/cpp.py, penalty/cpp.py, pooling/cpp.py) registers the fake (meta) kernels of its ops and exposes functions with the
signatures of its `reference.py`. The backend registry (dispatch.py) reads AVAILABLE, UNAVAILABLE_REASON, DEVICE_TYPES and DTYPES.

Importing never raises: without the compiled extension `AVAILABLE` is False and `UNAVAILABLE_REASON` says how
to build it (the backend registry then falls back to the reference).
"""
from __future__ import annotations

import json
import os
import warnings
from typing import List, Optional, Tuple

import torch

Tensor = torch.Tensor

AVAILABLE = False
UNAVAILABLE_REASON = ""
CPU_ISA: Optional[str] = None  # the instruction set of the CPU loops in use (avx512, avx2, baseline)
SMALL_GEMM = False  # whether the linear ops' small-batch GEMM kernel runs (csrc/dense/small_gemm_cpu.cpp)
DEVICE_TYPES: Tuple[str, ...] = ("cpu",)
# The CPU loops compute float32 and float64; float16 and bfloat16 run on CUDA (else the registry passes the op
# to the reference, which computes them with PyTorch's CPU kernels).
DTYPES = {"cpu": (torch.float32, torch.float64),
          "cuda": (torch.float16, torch.bfloat16, torch.float32, torch.float64)}

_REBUILD = "reinstall with `pip install --no-build-isolation -e .` (FASTDSTN_NO_EXTENSIONS unset)"


def _load_build_info() -> dict:
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_build_info.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def torch_mismatch(build_info: dict, torch_version: str, torch_cuda: Optional[str]) -> str:
    """Why the extension that `build_info` (fastdstn/_build_info.json) describes must not be loaded beside
    this torch, or "" when it may be.

    Loading a library compiled against another torch can crash the process instead of raising, so this is
    decided from the record, before importing fastdstn._C. The extension needs the torch release it was
    compiled against (e.g. 2.14.1; the local tag, +cu130 or +cpu, only names torch's variant) and, when it holds
    CUDA kernels, the CUDA version of torch's libraries. A build without a record (a pure-Python install
    has no fastdstn._C to load) is let through."""
    built_torch, built_cuda = build_info.get("torch"), build_info.get("cuda")
    if not built_torch:
        return ""
    same_release = built_torch.split("+")[0] == torch_version.split("+")[0]
    if same_release and (built_cuda is None or built_cuda == torch_cuda):
        return ""
    built = f"torch {built_torch}" + (f" (CUDA {built_cuda})" if built_cuda else "")
    installed = f"torch {torch_version}" + (f" (CUDA {torch_cuda or 'none'})" if built_cuda else "")
    return (f"fastdstn._C was built for {built} but {installed} is installed, so it is not loaded and the "
            f"reference ops run instead; install the fastdstn wheel built for torch {torch_version}, or rebuild "
            f"against it: `pip install --no-build-isolation .` in a source checkout or unpacked sdist")


BUILD_INFO = _load_build_info()
UNAVAILABLE_REASON = torch_mismatch(BUILD_INFO, torch.__version__, torch.version.cuda)
if UNAVAILABLE_REASON:
    # Said once, here: otherwise a run would silently take the slower reference ops.
    warnings.warn(f"fastdstn: {UNAVAILABLE_REASON}", RuntimeWarning)
else:
    try:
        from fastdstn import _C  # noqa: F401  (loading the library runs the TORCH_LIBRARY registrations)
    except ImportError as error:
        UNAVAILABLE_REASON = f"fastdstn._C was not built or does not load ({error}): {_REBUILD}"
    else:
        AVAILABLE = True
        CPU_ISA = _C.cpu_isa()
        SMALL_GEMM = _C.small_gemm()


def cuda_registered() -> bool:
    """Whether the compiled ops have kernels for the CUDA dispatch key (the extension was built with CUDA)."""
    if not AVAILABLE:
        return False
    return all(torch._C._dispatch_has_kernel_for_dispatch_key(f"fastdstn::{name}", "CUDA")
               for name in ("stn_linear", "stn_linear_dual", "stn_conv2d", "stn_conv2d_dual", "lstm_cell_dual",
                            "dropout_dual"))


if AVAILABLE and cuda_registered():
    DEVICE_TYPES = ("cpu", "cuda")


def fake_grads(like: Tensor, inputs, mask) -> List[Tensor]:
    """What a compiled backward op returns, for its fake kernel: a new tensor shaped like each input whose
    gradient `mask` asks for, an empty one (0 elements, like's dtype) where it does not or the input is None."""
    return [i.new_empty(i.shape) if (m and i is not None) else like.new_empty(0) for i, m in zip(inputs, mask)]
