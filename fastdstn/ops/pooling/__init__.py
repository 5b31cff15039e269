"""Max pooling in Δ-STN's dual pass, where the primal does not move and only the tangent needs a gradient:

    max_pool2d_dual(x, xt, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False) -> (y, ẏ, indices)
    max_pool2d_dual_backward(grad_yt, indices, input_size)                                   -> grad_xt

x, xt: (N, C, H, W); y and indices are F.max_pool2d's (indices: each window's maximum as h·W + w in its plane,
int64, the first of equal maxima), ẏ = ẋ at the indices; xt may be None (ẏ is then None): the pooling alone, whose
gradient is the same backward. The backward is the adjoint of that selection. Neither op
is differentiable itself: fastdstn/nn/pooling.py's autograd Function calls the second in its backward.

Backends (`dispatch` picks): `reference` (ATen's pooling, gather and scatter-add; any device and dtype) and `cpp`
(CPU, float32 and float64: one pass each way, csrc/pooling/).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch

from .. import checks
from ..dispatch import resolve

Tensor = torch.Tensor
Size = Union[int, Sequence[int]]

__all__ = ["max_pool2d_dual", "max_pool2d_dual_backward"]


def _pair(name: str, value: Size, low: int) -> List[int]:
    pair = [value, value] if isinstance(value, int) else list(value) if isinstance(value, (tuple, list)) else None
    if (pair is None or len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair)
            or min(pair) < low):
        raise ValueError(f"{name}: expected an int or 2 ints of at least {low}, received {value!r}")
    return pair


def _pooled(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool) -> int:
    """ATen's number of windows along one dim (pooling_output_shape): with ceil_mode a last, partial window counts
    unless it would start in the padding."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _outside(size: int, kernel: int, stride: int, padding: int, dilation: int, windows: int) -> Optional[int]:
    """The first of `windows` windows along one dim with no tap inside [0, size), or None. Only dilated taps can step
    over the input: undilated, ATen's rules (padding at most half the kernel, the last window starting inside)
    put a tap of every window inside, and the loop would cost every call O(windows) in Python."""
    if dilation == 1:
        return None
    for w in range(windows):
        start = w * stride - padding
        if not any(0 <= start + j * dilation < size for j in range(kernel)):
            return w
    return None


def pooled_shape(shape: Sequence[int], kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int],
                 dilation: Sequence[int], ceil_mode: bool) -> Tuple[int, ...]:
    """The (N, C, H_out, W_out) of pooling an (N, C, H, W) tensor."""
    return (*shape[:2], *(_pooled(shape[2 + i], kernel_size[i], stride[i], padding[i], dilation[i], ceil_mode)
                          for i in range(2)))


def max_pool2d_dual(x: Tensor, xt: Optional[Tensor], kernel_size: Size, stride: Optional[Size] = None,
                    padding: Size = 0, dilation: Size = 1,
                    ceil_mode: bool = False) -> Tuple[Tensor, Optional[Tensor], Tensor]:
    checks.require_tensor("x", x, ndim=4)
    if xt is not None:
        checks.require_tensor("xt", xt)
        checks.require_shape("xt", xt, x.shape, "the shape of x")
    checks.require_same_kind("x", x, xt=xt)
    kernel = _pair("kernel_size", kernel_size, 1)
    step = kernel if stride is None or (isinstance(stride, (tuple, list)) and not stride) else _pair("stride", stride, 1)
    pad, spread = _pair("padding", padding, 0), _pair("dilation", dilation, 1)
    half = [k // 2 for k in kernel]     # ATen's rule
    if pad[0] > half[0] or pad[1] > half[1]:
        raise ValueError(f"padding: expected at most half the kernel size, {tuple(half)}, received {padding!r}")
    if not isinstance(ceil_mode, bool):
        raise TypeError(f"ceil_mode: expected a bool, received {ceil_mode!r}")
    shape = pooled_shape(x.shape, kernel, step, pad, spread, ceil_mode)
    if min(shape[2:]) < 1:
        raise ValueError(f"x: its planes {tuple(x.shape[2:])} are smaller than the window; the output would be "
                         f"{tuple(shape[2:])}")
    for dim in range(2):
        empty = _outside(x.shape[2 + dim], kernel[dim], step[dim], pad[dim], spread[dim], shape[2 + dim])
        if empty is not None:
            raise ValueError(f"dilation: window {empty} along {'HW'[dim]} has no tap inside the input's "
                             f"{x.shape[2 + dim]} (dilation {spread[dim]}, padding {pad[dim]})")
    return resolve("max_pool2d_dual", x)(x, xt, kernel, step, pad, spread, ceil_mode)


def max_pool2d_dual_backward(grad_yt: Tensor, indices: Tensor, input_size: Sequence[int]) -> Tensor:
    checks.require_tensor("grad_yt", grad_yt, ndim=4)
    checks.require_tensor("indices", indices, floating=False)
    if indices.dtype != torch.int64:
        raise TypeError(f"indices: expected int64 (max_pool2d_dual's), received {checks.describe(indices)}")
    checks.require_shape("indices", indices, grad_yt.shape, "the shape of grad_yt")
    if indices.device != grad_yt.device:
        raise ValueError(f"indices: expected device {grad_yt.device} (the device of grad_yt), received "
                         f"{indices.device}")
    size = list(input_size) if isinstance(input_size, (tuple, list, torch.Size)) else None
    if size is None or len(size) != 2 or not all(isinstance(v, int) and v >= 1 for v in size):
        raise ValueError(f"input_size: expected the input's (H, W), 2 positive ints, received {input_size!r}")
    return resolve("max_pool2d_dual_backward", grad_yt)(grad_yt, indices, size)
