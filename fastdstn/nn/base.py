"""What every STN layer shares: its parameter groups, how it reads the feed, and dual-tensor packing."""
from __future__ import annotations

import math
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
    fed = False         # True once a forward has computed the best-response (see fastdstn.nn.report)
    # What the layer's input looks like inside a feed, for the error on an input without an example dimension.
    input_layout: str = "(B, ...)"

    def add_response_parameters(self, num_hypers: int, with_bias: bool) -> None:
        """W_r shaped like `weight`, b_r (when the layer has a bias) and V with [s | t] rows (s rows
        only without a bias), for a layer whose torch module already made weight and bias."""
        if num_hypers < 1:
            raise ValueError(f"num_hypers: expected >= 1, received {num_hypers}")
        self.num_hypers = num_hypers
        scales = self.scale_count()
        self.response_weight = nn.Parameter(torch.empty_like(self.weight))
        self.response_bias = nn.Parameter(self.weight.new_empty(scales)) if with_bias else None
        self.hyper_proj = nn.Parameter(self.weight.new_zeros((2 * scales if with_bias else scales), num_hypers))
        self.reset_response_parameters()

    def scale_count(self) -> int:
        """The number of scales s (rows of V without the bias gates): one per output unit, the weight's rows."""
        return self.weight.shape[0]

    def adopt(self, weight: nn.Parameter, bias: Optional[nn.Parameter]) -> None:
        """Take another module's Parameters as the general weights (so that weights tied to them stay tied) and
        make response parameters to match. `convert` builds the layer on the meta device, then adopts."""
        if weight.shape != self.weight.shape:
            raise ValueError(f"{self._describe()}: adopt expected a weight of shape {tuple(self.weight.shape)}, "
                             f"received {tuple(weight.shape)}")
        self.weight = weight
        if hasattr(self, "bias"):
            self.bias = bias
        self.add_response_parameters(self.num_hypers, with_bias=bias is not None)

    def reset_response_parameters(self) -> None:
        """W_r at the scale of W_g, b_r like nn.Linear/nn.Conv2d initialise b_g (uniform ±1/√fan_in, as the
        authors' code does), V = 0. b_r must not start at 0: with b_r = 0 and V = 0 the gradients of b_r
        (Σ t⊙g) and of V's bias rows (Σ (g⊙b_r)·hᵀ) are exactly 0, and the bias half of the best-response
        never trains."""
        init_response_like(self.weight, self.response_weight)
        if getattr(self, "response_bias", None) is not None:
            fan_in = self.weight[0].numel()
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            nn.init.uniform_(self.response_bias, -bound, bound)
        nn.init.zeros_(self.hyper_proj)

    def response_parameters(self) -> Iterator[nn.Parameter]:
        for name, p in self.named_parameters(recurse=False):
            if name.startswith(RESPONSE_PREFIXES):
                yield p

    def general_parameters(self) -> Iterator[nn.Parameter]:
        for name, p in self.named_parameters(recurse=False):
            if not name.startswith(RESPONSE_PREFIXES):
                yield p

    def active_feed(self, x: Tensor, batch_dim: Optional[int], batched_dims: int) -> Optional[Feed]:
        """The feed when it asks for the response branch (h given), checked against this layer and its input x,
        which has its examples along `batch_dim` when it has `batched_dims` dimensions. An input with fewer
        dimensions (unbatched) has no example to give its own h: an error inside such a feed. batch_dim None:
        the layer checks the batch itself (`check_batch`)."""
        feed = current_feed()
        if feed is None or feed.h is None:
            return None
        if x.dim() < batched_dims:
            raise ValueError(f"{self._describe()}: inside a feed the input must be batched, {self.input_layout}, "
                             f"with one example per row of h; received an unbatched input of shape {tuple(x.shape)}")
        h = feed.h
        self.fed = True
        if h.shape[1] != self.num_hypers:
            raise ValueError(f"{self._describe()}: built for {self.num_hypers} hyperparameters, "
                             f"but the feed has h with {h.shape[1]} columns (shape {tuple(h.shape)})")
        if batch_dim is not None:
            self.check_batch(h, x.shape[batch_dim])
        return feed

    def check_batch(self, h: Tensor, batch: int) -> None:
        if h.shape[0] != batch:
            raise ValueError(f"{self._describe()}: the feed has h for {h.shape[0]} examples, "
                             f"but the input batch has {batch}")

    def _describe(self) -> str:
        return f"{self._get_name()}({self.extra_repr()})"


def op_dtype_args(x: Tensor, *tensors: Optional[Tensor]) -> Tuple[Optional[Tensor], ...]:
    """x, h and the layer's parameters in x's dtype for the op (the space's λ is float32 even when the model
    runs in float64); under torch.autocast the op then casts them all by its rule (fastdstn.ops.autocast)."""
    return tuple(t if t is None or t.dtype == x.dtype else t.to(x.dtype) for t in (x, *tensors))


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


def frozen_primal(x: Tensor, *tensors: Optional[Tensor]) -> bool:
    """Whether a dual op at primal x (and parameters `tensors`) needs a gradient of its tangent only: no grad mode or
    no primal operand requiring grad (the response sub-step and the hyper step), and no autocast on x's device.
    Where this holds, `dual_routes()` computes the tangent of a PyTorch layer with its own fused kernels."""
    if torch.is_autocast_enabled(x.device.type):
        return False
    return not torch.is_grad_enabled() or not any(t is not None and t.requires_grad for t in (x, *tensors))


def init_response_like(weight: Tensor, response: Tensor) -> None:
    """Response weights start at the scale of the general ones: with V = 0 their gradient is zero
    until V moves, and V's gradient is proportional to them, so they must not start at zero."""
    with torch.no_grad():
        response.copy_(torch.randn_like(response) * weight.std().clamp_min(1e-3))
