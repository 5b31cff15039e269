"""What every STN layer shares: its parameter groups, how it reads the feed, and dual-tensor packing."""
from __future__ import annotations

from typing import Iterator, Optional, Sequence, Tuple

import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

from ..hyper.feed import Feed, current_feed

Tensor = torch.Tensor

RESPONSE_PREFIXES = ("response_", "hyper_proj")


class StnLayer(nn.Module):
    """Mixin for layers with general weights (the torch module's own parameters), response weights
    (`response_*`) and the hyper-projection V (`hyper_proj`, initialised to 0 so that h = 0 and any
    h at initialisation compute exactly the general network)."""

    num_hypers: int

    def add_response_parameters(self, num_hypers: int, with_bias: bool) -> None:
        """W_r shaped like `weight`, b_r (when the layer has a bias) and V with [s | t] rows (s rows
        only without a bias), for a layer whose torch module already made weight and bias."""
        if num_hypers < 1:
            raise ValueError(f"num_hypers: expected >= 1, received {num_hypers}")
        self.num_hypers = num_hypers
        out = self.weight.shape[0]
        self.response_weight = nn.Parameter(torch.empty_like(self.weight))
        self.response_bias = nn.Parameter(self.weight.new_empty(out)) if with_bias else None
        self.hyper_proj = nn.Parameter(self.weight.new_zeros((2 * out if with_bias else out), num_hypers))
        self.reset_response_parameters()

    def reset_response_parameters(self) -> None:
        init_response_like(self.weight, self.response_weight)
        if getattr(self, "response_bias", None) is not None:
            nn.init.zeros_(self.response_bias)
        nn.init.zeros_(self.hyper_proj)

    def response_parameters(self) -> Iterator[nn.Parameter]:
        for name, p in self.named_parameters(recurse=False):
            if name.startswith(RESPONSE_PREFIXES):
                yield p

    def general_parameters(self) -> Iterator[nn.Parameter]:
        for name, p in self.named_parameters(recurse=False):
            if not name.startswith(RESPONSE_PREFIXES):
                yield p

    def active_feed(self, batch: int) -> Optional[Feed]:
        """The feed when it asks for the response branch (h given), checked against this layer."""
        feed = current_feed()
        if feed is None or feed.h is None:
            return None
        h = feed.h
        if h.shape[1] != self.num_hypers:
            raise ValueError(f"{self._get_name()}({self.extra_repr()}): built for {self.num_hypers} hyperparameters, "
                             f"but the feed has h with {h.shape[1]} columns (shape {tuple(h.shape)})")
        if h.shape[0] != batch:
            raise ValueError(f"{self._get_name()}({self.extra_repr()}): the feed has h for {h.shape[0]} examples, "
                             f"but the input batch has {batch}")
        return feed


def op_dtype_args(x: Tensor, *tensors: Optional[Tensor]) -> Tuple[Optional[Tensor], ...]:
    """x, h and the layer's parameters in one dtype for the op: the autocast dtype inside
    torch.autocast (custom ops get no autocast rule of their own), else x's dtype (the space's λ is
    float32 even when the model runs in float64)."""
    dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
    return tuple(t if t is None or t.dtype == dtype else t.to(dtype) for t in (x, *tensors))


def rows_for(h: Tensor, shape: Sequence[int], batch_dim: int) -> Tensor:
    """Per-row copies of per-example h (B, H) for an input laid out as `shape` (its last dim is the
    feature dim, dropped here) with examples along `batch_dim`: (prod(shape[:-1]), H)."""
    grid = list(shape[:-1])
    if len(grid) == 1:
        return h
    view = [1] * len(grid) + [h.shape[1]]
    view[batch_dim] = h.shape[0]
    return h.reshape(view).expand(*grid, h.shape[1]).reshape(-1, h.shape[1])


def split_dual(x: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
    """(primal, tangent or None) of a possibly dual tensor."""
    primal, tangent = fwAD.unpack_dual(x)
    return primal, tangent


def join_dual(primal: Tensor, tangent: Optional[Tensor]) -> Tensor:
    return primal if tangent is None else fwAD.make_dual(primal, tangent)


def init_response_like(weight: Tensor, response: Tensor) -> None:
    """Response weights start at the scale of the general ones: with V = 0 their gradient is zero
    until V moves, and V's gradient is proportional to them, so they must not start at zero."""
    with torch.no_grad():
        response.copy_(torch.randn_like(response) * weight.std().clamp_min(1e-3))
