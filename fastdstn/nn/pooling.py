"""Max pooling in Δ-STN's dual pass: the primal through the channels-last kernel, the tangent as a gather.

On CPU, ATen's max pooling of a contiguous (N, C, H, W) tensor is several times slower than of the same tensor in
channels-last memory: with the copies there and back, 8.9 against 3.0 ms for SimpleCNN's first pool (128, 16, 28, 28),
4.7 against 1.2 ms for its second, 8.2 against 4.2 ms for ResNet-18's stem (torch 2.14, 1 thread, `python
benchmarks/bench_cpu_env.py pooling`). Both give the same values and the same argmax indices (the first maximum of
each window in row-major order, tests/nn/test_pooling.py). In the dual pass the primal is frozen, so `max_pool2d` pools a channels-last copy of x
and takes ẏ = ẋ at the argmax indices; the adjoint is ATen's max-pooling backward at those indices (a scatter-add).
Elsewhere it is F.max_pool2d. `dual_routes()` sends F.max_pool2d (nn.MaxPool2d's call) here.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F

from .base import frozen_primal, join_dual, split_dual

Tensor = torch.Tensor
Size = Union[int, Sequence[int]]


def _pair(v: Size) -> list:
    return [v, v] if isinstance(v, int) else list(v)


class _MaxPoolTangent(torch.autograd.Function):
    """ẋ ↦ ẋ at the argmax `indices` of each window (flat h·W + w per plane); adjoint: ATen's max_pool2d backward."""

    @staticmethod
    def forward(ctx, xt: Tensor, x: Tensor, indices: Tensor, geometry: tuple) -> Tensor:
        ctx.save_for_backward(x, indices)
        ctx.geometry = geometry
        return xt.contiguous().flatten(2).gather(2, indices.flatten(2)).view(indices.shape)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        x, indices = ctx.saved_tensors
        return (torch.ops.aten.max_pool2d_with_indices_backward(grad.contiguous(), x, *ctx.geometry, indices),
                None, None, None)


def max_pool2d(input: Tensor, kernel_size: Size, stride=None, padding: Size = 0, dilation: Size = 1,
               ceil_mode: bool = False, return_indices: bool = False):
    """F.max_pool2d, with the dual pass's route for a (N, C, H, W) input in contiguous memory (module docstring)."""
    x, xt = split_dual(input)
    if (xt is None or return_indices or x.dim() != 4 or not x.is_contiguous() or x.is_contiguous(
            memory_format=torch.channels_last) or not frozen_primal(x)):
        return F.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode,
                            return_indices=return_indices)
    geometry = (_pair(kernel_size), _pair(kernel_size if stride is None or stride == [] else stride), _pair(padding),
                _pair(dilation), ceil_mode)
    y, indices = torch.ops.aten.max_pool2d_with_indices(x.contiguous(memory_format=torch.channels_last), *geometry)
    indices = indices.contiguous()
    return join_dual(y.contiguous(), _MaxPoolTangent.apply(xt, x, indices, geometry))
