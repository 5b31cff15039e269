"""The pooling family's reference: ATen's max pooling with indices, a gather and a scatter-add; any device and dtype."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

Tensor = torch.Tensor


def max_pool2d_dual(x: Tensor, xt: Optional[Tensor], kernel_size: List[int], stride: List[int], padding: List[int],
                    dilation: List[int], ceil_mode: bool) -> Tuple[Tensor, Optional[Tensor], Tensor]:
    """(y, ẏ, indices) for x, ẋ (N, C, H, W): y and indices are F.max_pool2d's with return_indices (the index of
    each window's maximum in its (H, W) plane, h·W + w), ẏ = ẋ at those indices: the tangent of max pooling at a
    primal that does not move. Without ẋ, ẏ is None."""
    y, indices = torch.ops.aten.max_pool2d_with_indices(x, kernel_size, stride, padding, dilation, ceil_mode)
    yt = None if xt is None else xt.flatten(2).gather(2, indices.flatten(2)).view(indices.shape)
    return y, yt, indices


def max_pool2d_dual_backward(grad_yt: Tensor, indices: Tensor, input_size: Sequence[int]) -> Tensor:
    """The adjoint of ẏ = ẋ[indices]: grad_yt (N, C, H_out, W_out) added onto the input plane positions
    `indices`, zero elsewhere; (N, C, *input_size)."""
    n, c = grad_yt.shape[:2]
    grad_xt = grad_yt.new_zeros(n, c, input_size[0] * input_size[1])
    grad_xt.scatter_add_(2, indices.flatten(2), grad_yt.flatten(2))
    return grad_xt.view(n, c, *input_size)
