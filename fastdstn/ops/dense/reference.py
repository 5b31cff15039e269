"""Pure-PyTorch reference of the dense STN ops (linear, conv2d): the ground truth for tests and benchmarks.

Each function is the plain formulation of docs/METHOD.md §3/§5 (separate GEMMs, unfused elementwise
epilogues). Inputs are assumed valid: `fastdstn.ops.dense` checks them before dispatching here.

Shapes (N rows, H hyperparameters, `out` output units):
    x, xt: (N, in)            h, eps: (N, H)
    Wg, Wr: (out, in)         bg, br: (out,) or None
    V: (2*out, H) when br is given (rows [s | t]), (out, H) when br is None (rows s)
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def hyper_projection(h: Tensor, V: Tensor, out: int) -> Tuple[Tensor, Optional[Tensor]]:
    """[s | t] = h·Vᵀ split into the scale s (N, out) and the bias gate t (N, out) or None."""
    st = h @ V.t()
    if V.shape[0] == out:
        return st, None
    return st[:, :out], st[:, out:]


def stn_linear(x: Tensor, h: Tensor, Wg: Tensor, bg: Optional[Tensor], Wr: Tensor,
               br: Optional[Tensor], V: Tensor) -> Tensor:
    """y = x·W_gᵀ + b_g + s ⊙ (x·W_rᵀ) + t ⊙ b_r."""
    s, t = hyper_projection(h, V, Wg.shape[0])
    y = x @ Wg.t() + s * (x @ Wr.t())
    if bg is not None:
        y = y + bg
    if br is not None:
        y = y + t * br
    return y


def stn_linear_dual(x: Tensor, xt: Optional[Tensor], eps: Tensor, Wg: Tensor, bg: Optional[Tensor],
                    Wr: Tensor, br: Optional[Tensor], V: Tensor) -> Tuple[Tensor, Tensor]:
    """Primal y = x·W_gᵀ + b_g and tangent ẏ = ẋ·W_gᵀ + s ⊙ (x·W_rᵀ) + t ⊙ b_r, [s|t] = ε·Vᵀ."""
    s, t = hyper_projection(eps, V, Wg.shape[0])
    y = x @ Wg.t()
    if bg is not None:
        y = y + bg
    yt = s * (x @ Wr.t())
    if xt is not None:
        yt = yt + xt @ Wg.t()
    if br is not None:
        yt = yt + t * br
    return y, yt


def _per_channel(v: Tensor) -> Tensor:
    """(N, C) -> (N, C, 1, 1) so it broadcasts over an image's H×W."""
    return v[:, :, None, None]


def stn_conv2d(x: Tensor, h: Tensor, Wg: Tensor, bg: Optional[Tensor], Wr: Tensor,
               br: Optional[Tensor], V: Tensor, stride: Sequence[int] = (1, 1),
               padding: Sequence[int] = (0, 0), dilation: Sequence[int] = (1, 1),
               groups: int = 1) -> Tensor:
    """y = conv(x, W_g) + b_g + s ⊙ conv(x, W_r) + t ⊙ b_r, s and t per example and channel."""
    s, t = hyper_projection(h, V, Wg.shape[0])
    y = F.conv2d(x, Wg, bg, stride, padding, dilation, groups)
    y = y + _per_channel(s) * F.conv2d(x, Wr, None, stride, padding, dilation, groups)
    if br is not None:
        y = y + _per_channel(t * br)
    return y


def stn_conv2d_dual(x: Tensor, xt: Optional[Tensor], eps: Tensor, Wg: Tensor, bg: Optional[Tensor],
                    Wr: Tensor, br: Optional[Tensor], V: Tensor, stride: Sequence[int] = (1, 1),
                    padding: Sequence[int] = (0, 0), dilation: Sequence[int] = (1, 1),
                    groups: int = 1) -> Tuple[Tensor, Tensor]:
    """The conv analogue of `stn_linear_dual`."""
    s, t = hyper_projection(eps, V, Wg.shape[0])
    y = F.conv2d(x, Wg, bg, stride, padding, dilation, groups)
    yt = _per_channel(s) * F.conv2d(x, Wr, None, stride, padding, dilation, groups)
    if xt is not None:
        yt = yt + F.conv2d(xt, Wg, None, stride, padding, dilation, groups)
    if br is not None:
        yt = yt + _per_channel(t * br)
    return y, yt
