"""BatchNorm (training mode) and LayerNorm in Δ-STN's dual pass: the tangent as one ATen kernel each way.

PyTorch's forward-mode rule of a normalization is a chain of a dozen element-wise ops (`batch_norm_jvp`,
`layer_norm_jvp`), and the response sub-step back-propagates through every one of them. The tangent is a linear map
of ẋ that ATen already has as a single kernel: with x̂ = (x − μ)·rstd over the normalized elements and P(v) =
v − mean(v) − x̂·mean(v⊙x̂) (means over those elements),

    BatchNorm, training:  ẏ = γ·rstd·P(ẋ)       (per channel; μ, rstd the batch statistics)
    LayerNorm:            ẏ = γ ⊙ rstd·P(ẋ)     (per row; γ per element)

and `native_batch_norm_backward` / `native_layer_norm_backward` compute rstd·P(γ⊙g) for a cotangent g. P is
symmetric, so the same kernel is the tangent and its adjoint: BatchNorm's γ·rstd is one number per channel and
commutes with P, LayerNorm's γ moves to the other side. The derivation is in docs/METHOD.md §5c.

`batch_norm` and `layer_norm` take this route when the input carries a tangent and nothing but the tangent needs
a gradient (the primal is frozen, as in the response sub-step and the hyper step); otherwise, and under autocast
(whose dtype policy for the norms differs by device), they are PyTorch's functions. `dual_routes()` sends
F.batch_norm and F.layer_norm calls here inside the dual pass.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .base import frozen_primal, join_dual, split_dual

Tensor = torch.Tensor


class _BatchNormTangent(torch.autograd.Function):
    """ẋ ↦ γ·rstd·P(ẋ) at the batch statistics (mean, rstd) of the frozen primal x; its own adjoint."""

    @staticmethod
    def forward(ctx, xt: Tensor, x: Tensor, weight: Optional[Tensor], mean: Tensor, rstd: Tensor,
                eps: float) -> Tensor:
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.eps = eps
        return _batch_norm_map(xt, x, weight, mean, rstd, eps)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight, mean, rstd = ctx.saved_tensors
        return _batch_norm_map(grad, x, weight, mean, rstd, ctx.eps), None, None, None, None, None


def _batch_norm_map(v: Tensor, x: Tensor, weight: Optional[Tensor], mean: Tensor, rstd: Tensor, eps: float) -> Tensor:
    return torch.ops.aten.native_batch_norm_backward(v.contiguous(memory_format=_layout(x)), x, weight, None, None,
                                                     mean, rstd, True, eps, [True, False, False])[0]


def _layout(x: Tensor) -> torch.memory_format:
    """The memory format of x, so that the tangent and the cotangent match the primal's (channels_last models)."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def batch_norm(input: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor],
               weight: Optional[Tensor] = None, bias: Optional[Tensor] = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """F.batch_norm, with the training-mode tangent as one kernel (see the module docstring)."""
    x, xt = split_dual(input)
    if xt is None or not (training or running_mean is None) or not frozen_primal(x, weight, bias):
        return F.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
    F._verify_batch_size(x.size())
    y, mean, rstd = torch.native_batch_norm(x, weight, bias, running_mean, running_var, True, momentum, eps)
    return join_dual(y, _BatchNormTangent.apply(xt, x, weight, mean, rstd, eps))


class _LayerNormTangent(torch.autograd.Function):
    """ẋ ↦ γ ⊙ rstd·P(ẋ) at the statistics (mean, rstd) of the frozen primal x; adjoint g ↦ rstd·P(γ⊙g)."""

    @staticmethod
    def forward(ctx, xt: Tensor, x: Tensor, normalized_shape: Sequence[int], weight: Optional[Tensor], mean: Tensor,
                rstd: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.normalized_shape = normalized_shape
        yt = _layer_norm_map(xt, x, normalized_shape, None, mean, rstd)
        return yt if weight is None else yt.mul_(weight)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight, mean, rstd = ctx.saved_tensors
        return _layer_norm_map(grad, x, ctx.normalized_shape, weight, mean, rstd), None, None, None, None, None


def _layer_norm_map(v: Tensor, x: Tensor, normalized_shape: Sequence[int], weight: Optional[Tensor], mean: Tensor,
                    rstd: Tensor) -> Tensor:
    return torch.ops.aten.native_layer_norm_backward(v.contiguous(), x, normalized_shape, mean, rstd, weight, None,
                                                     [True, False, False])[0]


def layer_norm(input: Tensor, normalized_shape: Sequence[int], weight: Optional[Tensor] = None,
               bias: Optional[Tensor] = None, eps: float = 1e-5) -> Tensor:
    """F.layer_norm, with the tangent as one kernel (see the module docstring)."""
    x, xt = split_dual(input)
    if xt is None or not frozen_primal(x, weight, bias):
        return F.layer_norm(input, normalized_shape, weight, bias, eps)
    normalized_shape = tuple(normalized_shape)
    y, mean, rstd = torch.native_layer_norm(x, normalized_shape, weight, bias, eps)
    return join_dual(y, _LayerNormTangent.apply(xt, x, normalized_shape, weight, mean, rstd))
