"""Dropout whose rate is a tuned hyperparameter, per example (SPEC §6).

Each module names the hyperparameter it reads; the feed supplies its per-example constrained
values. Outside a feed, or in eval mode, the module is the identity. Inside a dual (Δ-STN) feed
the same mask multiplies the primal and the tangent.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .. import ops
from ..hyper.feed import current_feed
from .base import join_dual, split_dual

# A sigmoid-constrained rate can round to exactly 1.0 in float32; 1/(1 − p) must stay finite.
MAX_RATE = 1.0 - 1e-6


def draw_seed() -> int:
    """A mask seed from torch's global generator, so runs are reproducible under torch.manual_seed
    and resumable from a checkpoint of the RNG state."""
    return int(torch.randint(0, 2**62, (), dtype=torch.int64))


class StnDropout(nn.Module):
    """Element dropout: example i (along `batch_dim`) drops each unit with its own rate p_i.
    `shared_dims` share one draw (see StnDropout2d and StnLockedDropout)."""

    def __init__(self, hyper: str, batch_dim: int = 0, shared_dims: Sequence[int] = ()) -> None:
        super().__init__()
        self.hyper = hyper
        self.batch_dim = batch_dim
        self.shared_dims = tuple(shared_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feed = current_feed()
        if not self.training or feed is None or not feed.values:
            return x
        rate = feed.value(self.hyper, x.shape[self.batch_dim], f"{self._get_name()}({self.hyper!r})")
        rate = rate.to(device=x.device, dtype=x.dtype).clamp(0.0, MAX_RATE)
        primal, tangent = split_dual(x) if feed.dual else (x, None)
        return join_dual(*ops.dropout_dual(primal, tangent, rate, draw_seed(), self.batch_dim, self.shared_dims))

    def extra_repr(self) -> str:
        return f"hyper={self.hyper!r}, batch_dim={self.batch_dim}, shared_dims={self.shared_dims}"


class StnDropout2d(StnDropout):
    """Channel dropout of (B, C, H, W) feature maps: one draw per example and channel."""

    def __init__(self, hyper: str) -> None:
        super().__init__(hyper, batch_dim=0, shared_dims=(2, 3))


class StnLockedDropout(StnDropout):
    """Locked (variational) dropout of sequences: one mask per example for all time steps.
    Time-major (T, B, D) by default; batch_first=True for (B, T, D)."""

    def __init__(self, hyper: str, batch_first: bool = False) -> None:
        super().__init__(hyper, batch_dim=0 if batch_first else 1, shared_dims=(1,) if batch_first else (0,))
