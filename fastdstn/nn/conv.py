"""StnConv2d: nn.Conv2d with a structured best-response, s and t per example and channel."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from .base import StnLayer, join_dual, op_dtype_args, split_dual
from .dual_routes import one_call


class StnConv2d(nn.Conv2d, StnLayer):
    """y = conv(x, W_g) + b_g + s ⊙ conv(x, W_r) + t ⊙ b_r; `weight`/`bias` are W_g/b_g.

    Same geometry arguments as nn.Conv2d (stride, padding incl. 'same'/'valid', dilation, groups,
    bias, padding_mode); outside a feed it is exactly nn.Conv2d at the general weights."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, num_hypers: int, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device=None, dtype=None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                         groups=groups, bias=bias, padding_mode=padding_mode, device=device, dtype=dtype)
        self.add_response_parameters(num_hypers, with_bias=bias)

    def _explicit_padding(self, x: torch.Tensor):
        """(input padded for non-zero padding modes, integer padding pair) for the op."""
        if self.padding_mode != "zeros":
            return F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode), (0, 0)
        if self.padding == "valid":
            return x, (0, 0)
        if self.padding == "same":
            total = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
            if any(t % 2 for t in total):   # asymmetric: pad the extra row/column on the bottom/right
                x = F.pad(x, [0, total[1] % 2, 0, total[0] % 2])
            return x, (total[0] // 2, total[1] // 2)
        return x, tuple(self.padding)

    input_layout = "(B, C, H, W)"

    @one_call
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feed = self.active_feed(x, 0, batched_dims=4)
        if feed is None:
            return self._conv_forward(x, self.weight, self.bias)
        primal, tangent = split_dual(x) if feed.dual else (x, None)
        primal, tangent, h, *args = op_dtype_args(primal, tangent, feed.h, self.weight, self.bias, self.response_weight,
                                                  self.response_bias, self.hyper_proj)
        primal, padding = self._explicit_padding(primal)
        geometry = (self.stride, padding, self.dilation, self.groups)
        if not feed.dual:
            return ops.stn_conv2d(primal, h, *args, *geometry)
        if tangent is not None:
            tangent, _ = self._explicit_padding(tangent)
        return join_dual(*ops.stn_conv2d_dual(primal, tangent, h, *args, *geometry))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_hypers={self.num_hypers}"
