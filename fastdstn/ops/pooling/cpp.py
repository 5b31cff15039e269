"""The compiled max pooling, with and without the tangent (csrc/pooling/): functions with the signatures of
reference.py, one op call each, and the ops' fake (meta) kernels. Import only when `fastdstn.ops.cpp.AVAILABLE`.

CPU only (DEVICE_TYPES): no CUDA kernel was written, so on a GPU the reference's ATen kernels run. On a CPU the
reference's pooling kernel branches on every comparison and its gather and scatter are passes of their own: SimpleCNN's
first pool with its tangent, forward and backward, 5.6 ms against 1.7 ms here (2 threads, `python
benchmarks/bench_ops_cpp.py --only pooling`).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

from . import pooled_shape

Tensor = torch.Tensor

DEVICE_TYPES = ("cpu",)

_forward = torch.ops.fastdstn.max_pool2d_dual.default
_backward = torch.ops.fastdstn.max_pool2d_dual_backward.default


def max_pool2d_dual(x: Tensor, xt: Optional[Tensor], kernel_size: List[int], stride: List[int], padding: List[int],
                    dilation: List[int], ceil_mode: bool) -> Tuple[Tensor, Optional[Tensor], Tensor]:
    y, yt, indices = _forward(x, xt, kernel_size, stride, padding, dilation, ceil_mode)
    return y, (None if xt is None else yt), indices


def max_pool2d_dual_backward(grad_yt: Tensor, indices: Tensor, input_size: Sequence[int]) -> Tensor:
    return _backward(grad_yt, indices, list(input_size))


@torch.library.register_fake("fastdstn::max_pool2d_dual")
def _(x, xt, kernel_size, stride, padding, dilation, ceil_mode):
    shape = pooled_shape(x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    return x.new_empty(shape), x.new_empty(shape if xt is not None else 0), x.new_empty(shape, dtype=torch.int64)


@torch.library.register_fake("fastdstn::max_pool2d_dual_backward")
def _(grad_yt, indices, input_size):
    return grad_yt.new_empty((*grad_yt.shape[:2], *input_size))
