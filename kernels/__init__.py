"""fastdstn.kernels: the Triton backend of `fastdstn.ops` (CUDA tensors; CPU under TRITON_INTERPRET=1).

The functions have exactly the signatures of `fastdstn.ops.reference`; `fastdstn.ops.use_backend("triton")`
selects them. Ops are registered with torch.library under the `fastdstn_triton::` namespace (the C++
backend owns `fastdstn::`), with fake kernels (from `triton_op`) and autograd formulas:

    fastdstn_triton::linear_dual, ::linear, ::linear_backward     (linear.py)
    fastdstn_triton::conv2d_dual, ::conv2d                         (conv.py; backward through ATen)
    fastdstn_triton::dropout_dual, ::lstm_cell_dual, ::lstm_cell_dual_backward   (pointwise.py)

Geometries the kernels do not cover (grouped convolutions) fall back to `fastdstn.ops.reference`.
Launch configs: `_config.py` (autotuned on a GPU; one pinned config under TRITON_INTERPRET=1 or
FASTDSTN_TRITON_PIN=1). `python -m fastdstn.kernels.compile_check` builds every kernel for sm_80/sm_90
without a GPU and reports registers, spills and shared memory. This module imports without
Triton: AVAILABLE is then False and UNAVAILABLE_REASON says why (the backend registry reads both).
"""
from __future__ import annotations

DEVICE_TYPES = ("cuda",)

try:
    import triton  # noqa: F401
    import triton.language  # noqa: F401
except ImportError as error:  # pragma: no cover - triton ships with every CUDA build of torch
    AVAILABLE = False
    UNAVAILABLE_REASON = f"triton is not importable ({error}); install a CUDA build of torch, which brings it"
else:
    AVAILABLE = True
    UNAVAILABLE_REASON = ""
    from .conv import stn_conv2d, stn_conv2d_dual  # noqa: F401
    from .linear import stn_linear, stn_linear_dual  # noqa: F401
    from .pointwise import dropout_dual, lstm_cell_dual  # noqa: F401

__all__ = ["AVAILABLE", "UNAVAILABLE_REASON", "DEVICE_TYPES", "stn_linear", "stn_linear_dual", "stn_conv2d",
           "stn_conv2d_dual", "dropout_dual", "lstm_cell_dual"]
