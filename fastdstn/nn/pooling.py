"""Max pooling through fastdstn's compiled op, in the dual pass and out of it.

On CPU, ATen's max pooling of a (N, C, H, W) tensor branches on every comparison, a coin toss on real activations.
`fastdstn.ops.max_pool2d_dual` (csrc/pooling/) runs each window's comparisons as vector selects, in one pass over
the input: 1.4 ms for SimpleCNN's first pool against 8.6 ms for ATen's kernel and 2.6 ms through a channels-last copy
and back (1 thread, `python benchmarks/bench_cpu_env.py pooling`). It gives the same values and indices (the
first maximum of each window in row-major order; the last NaN) and, in its backward, the same gradient, summed in
the same order (tests/nn/test_pooling.py).

    dual input, primal frozen (Δ-STN's dual pass): y, ẏ = ẋ at the argmax indices, and the adjoint that scatters ∂ẏ
        back onto them, each one pass. PyTorch's forward-mode rule takes the (N, C, H, W) kernel, a gather and a
        zero fill and scatter: 5.9 against 1.7 ms forward and backward for SimpleCNN's first pool (2 threads,
        `python benchmarks/bench_ops_cpp.py --only pooling`).
    plain input on CPU, float32 or float64: y and the indices from the op, its backward the same scatter (the
        general sub-step, the hyper step and evaluation).

Elsewhere (a channels-last input, CUDA, half precision, torch.compile or functorch transforms, the reference
backend asked for) `max_pool2d` is F.max_pool2d. `dual_routes()` sends F.max_pool2d (a model's own call) here;
`convert` puts `MaxPool2d` in place of nn.MaxPool2d.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..ops import dispatch
from ..ops.pooling import reference
from .base import frozen_primal, join_dual, split_dual

Tensor = torch.Tensor
Size = Union[int, Sequence[int]]


class _MaxPool(torch.autograd.Function):
    """Max pooling of x by fastdstn's op, (y, ẏ, indices), differentiable w.r.t. `source`: x itself (plain pooling;
    ẏ is None) or the tangent ẋ at a frozen primal x (the dual pass; y carries no gradient). The gradient is the
    compiled scatter, or under create_graph the reference's scatter-add, which autograd differentiates (a double
    backward, as F.max_pool2d allows)."""

    @staticmethod
    def forward(ctx, source: Tensor, x: Tensor, geometry: tuple):
        ctx.dual = source is not x
        y, yt, indices = ops.max_pool2d_dual(x, source if ctx.dual else None, *geometry)
        ctx.save_for_backward(indices)
        ctx.input_size = x.shape[2:]
        ctx.mark_non_differentiable(*((y, indices) if ctx.dual else (indices,)))
        return y, yt, indices

    @staticmethod
    def backward(ctx, grad_y: Tensor, grad_yt: Tensor, _):
        (indices,) = ctx.saved_tensors
        scatter = reference.max_pool2d_dual_backward if torch.is_grad_enabled() else ops.max_pool2d_dual_backward
        return scatter(grad_yt if ctx.dual else grad_y, indices, ctx.input_size), None, None


def _planar(x: Tensor) -> bool:
    """A (N, C, H, W) tensor not laid out channels-last (ATen's channels-last kernel is the fast one there)."""
    return x.dim() == 4 and (x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last))


def _traced() -> bool:
    """torch.compile or a functorch transform (torch.func.jvp, vmap, ...) at work: they need PyTorch's function."""
    return torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active()


def _compiled_op_pools(x: Tensor) -> bool:
    """Whether the compiled op serves a plain input: the cpp backend runs it for x's device and dtype."""
    return x.device.type == "cpu" and _planar(x) and dispatch.choose("max_pool2d_dual", "cpu", x.dtype)[0] == "cpp"


def max_pool2d(input: Tensor, kernel_size: Size, stride=None, padding: Size = 0, dilation: Size = 1,
               ceil_mode: bool = False, return_indices: bool = False):
    """F.max_pool2d, through fastdstn's op where it serves (module docstring)."""
    x, xt = split_dual(input)
    geometry = (kernel_size, stride, padding, dilation, ceil_mode)
    if _traced():
        return F.max_pool2d(input, *geometry, return_indices=return_indices)
    if xt is not None:
        if not _planar(x) or not frozen_primal(x):
            return F.max_pool2d(input, *geometry, return_indices=return_indices)
        y, yt, indices = _MaxPool.apply(xt, x, geometry)
        y = join_dual(y, yt)
    elif _compiled_op_pools(x):
        y, _, indices = _MaxPool.apply(x, x, geometry)
    else:
        return F.max_pool2d(input, *geometry, return_indices=return_indices)
    return (y, indices) if return_indices else y


class MaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d through `max_pool2d` (the module docstring): the same values, indices and gradients."""

    def forward(self, input: Tensor):
        return max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                          ceil_mode=self.ceil_mode, return_indices=self.return_indices)
