"""Dropout whose rate is a tuned hyperparameter, per example (docs/METHOD.md §6).

Each module names the hyperparameter it reads; the feed supplies its per-example constrained
values. Outside a feed, or in eval mode, the module is the identity. Inside a dual (Δ-STN) feed
the same mask multiplies the primal and the tangent.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .. import ops
from ..hyper.feed import Feed, current_feed
from ..untraced import untraced
from .base import join_dual, split_dual
from .dual_routes import one_call

# A sigmoid-constrained rate with high = 1 can round to exactly 1.0 in float32; 1/(1 − p) must stay finite.
MAX_RATE = 1.0 - 1e-6


def draw_seed() -> int:
    """A mask seed from torch's global generator, so runs are reproducible under torch.manual_seed
    and resumable from a checkpoint of the RNG state."""
    return int(torch.randint(0, 2**62, (), dtype=torch.int64))


def per_example_rate(feed: Feed, hyper: str, batch: int, where: str, like: torch.Tensor) -> torch.Tensor:
    """The (batch,) drop probabilities that hyperparameter `hyper` has in the feed, on like's device and dtype.
    A value outside [0, 1] is an error naming the hyperparameter (its range does not fit a rate); exactly 1 (a
    float32 sigmoid rounding up) is taken as MAX_RATE."""
    rate = feed.value(hyper, batch, where)
    if not bool(((rate >= 0) & (rate <= 1)).all()):     # NaN fails both comparisons
        raise ValueError(f"{where}: hyperparameter {hyper!r} is used as a drop probability, expected values in "
                         f"[0, 1], received values in [{rate.min().item():.4g}, {rate.max().item():.4g}]; give it a "
                         f"range inside [0, 1], e.g. Hyper({hyper!r}, 0.1, 0.0, 0.95)")
    return rate.to(device=like.device, dtype=like.dtype).clamp(max=MAX_RATE)


@untraced      # reads the rates' values; traced, every site's `where` was a guard and a recompile of its own
def training_rate(module: nn.Module, hyper: Optional[str], batch: int, where: str,
                  like: torch.Tensor) -> Optional[torch.Tensor]:
    """The per-example rates `module` applies now: those of `hyper` in a training forward inside a feed that
    carries values, else None (no dropout). Sets `module.applied`: the site is in use (see `fastdstn.nn.report`)."""
    feed = current_feed()
    if hyper is None or not module.training or feed is None or not feed.values:
        return None
    module.applied = True
    return per_example_rate(feed, hyper, batch, where, like)


class StnDropout(nn.Module):
    """Element dropout: example i (along `batch_dim`) drops each unit with its own rate p_i.
    `shared_dims` share one draw (see StnDropout2d and StnLockedDropout).

    For code written for nn.Dropout, `p` reads 0.0 and `inplace` False: a code path that reads `p` to apply
    dropout itself (Hugging Face attention passes `dropout.p` to its attention function) applies none, because
    the tuned per-example rate exists only inside this module's forward. Such a site is never called; SelfTuning
    reports it after the first training step (map the attention module instead, see docs/CONVERT.md)."""

    inplace = False

    def __init__(self, hyper: str, batch_dim: int = 0, shared_dims: Sequence[int] = ()) -> None:
        super().__init__()
        self.hyper = hyper
        self.batch_dim = batch_dim
        self.shared_dims = tuple(shared_dims)

    @property
    def p(self) -> float:
        return 0.0

    # Not traced by torch.compile: reading the rates (the range check) and drawing the mask seed are graph breaks,
    # three per site; one break at the module costs a compiled model less (benchmarks/STEP_COST.md).
    @untraced
    @one_call
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rate = training_rate(self, self.hyper, x.shape[self.batch_dim], f"{self._get_name()}({self.hyper!r})", x)
        if rate is None:
            return x
        feed = current_feed()
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
