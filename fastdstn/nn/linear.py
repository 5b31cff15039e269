"""StnLinear: nn.Linear with a structured best-response (docs/METHOD.md §3)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from .base import StnLayer, join_dual, op_dtype_args, rows_for, split_dual
from .dual_routes import one_call


class StnLinear(nn.Linear, StnLayer):
    """y = x·W_gᵀ + b_g + s ⊙ (x·W_rᵀ) + t ⊙ b_r with [s | t] = h·Vᵀ; `weight`/`bias` are W_g/b_g.

    Inputs are (..., in) with the examples along `batch_dim` (0 for (B, ..., in), 1 for time-major
    (T, B, in) sequences); outside a feed (or with h = None) it is exactly nn.Linear at the general
    weights."""

    def __init__(self, in_features: int, out_features: int, num_hypers: int, bias: bool = True,
                 batch_dim: int = 0, device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.batch_dim = batch_dim
        self.add_response_parameters(num_hypers, with_bias=bias)

    @property
    def input_layout(self) -> str:
        return f"(..., {self.in_features}) with the examples along dim {self.batch_dim}"

    @one_call
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feed = self.active_feed(x, self.batch_dim, batched_dims=max(2, self.batch_dim + 2))
        if feed is None:
            return F.linear(x, self.weight, self.bias)
        primal, tangent = split_dual(x) if feed.dual else (x, None)
        primal, tangent, h, *args = op_dtype_args(primal, tangent, rows_for(feed.h, x.shape, self.batch_dim), self.weight,
                                                  self.bias, self.response_weight, self.response_bias, self.hyper_proj)
        primal = primal.reshape(-1, self.in_features)
        if feed.dual:
            tangent = None if tangent is None else tangent.reshape(-1, self.in_features)
            out = join_dual(*ops.stn_linear_dual(primal, tangent, h, *args))
        else:
            out = ops.stn_linear(primal, h, *args)
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_hypers={self.num_hypers}, batch_dim={self.batch_dim}"
