"""Parameter groups and the tunable L2 penalty of any model that contains STN layers."""
from __future__ import annotations

from typing import Iterator, List, Optional

import torch
from torch import nn

from .base import StnLayer
from .conv import StnConv2d
from .linear import StnLinear
from ..ops.penalty import penalty_row_combination, penalty_row_sums


def stn_layers(model: nn.Module) -> Iterator[StnLayer]:
    return (m for m in model.modules() if isinstance(m, StnLayer))


def response_parameters(model: nn.Module) -> List[nn.Parameter]:
    """W_r, b_r and V of every STN layer: what the response sub-step updates."""
    return [p for layer in stn_layers(model) for p in layer.response_parameters()]


def general_parameters(model: nn.Module) -> List[nn.Parameter]:
    """Every other parameter of the model (general weights of STN layers, BatchNorm, plain layers)."""
    response = {id(p) for p in response_parameters(model)}
    return [p for p in model.parameters() if id(p) not in response]


class _SquaredNorm(torch.autograd.Function):
    """‖W‖² in one pass over W, and its gradient 2·c·W in one more. Autograd's W.pow(2).sum() makes 2–3 passes each
    way: over ResNet-18's 11 M weights (B16, 64 px, 1 thread) the general sub-step took 1.18× a plain step with the
    weight decay tuned and 1.02× without, timed interleaved; 1.15× with these Functions."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weight)
        return torch.linalg.vector_norm(weight).square()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (weight,) = ctx.saved_tensors
        return weight * (2 * grad)


class _RowSums(torch.autograd.Function):
    """(3, rows): ‖g_k‖², ⟨g_k, r_k⟩ and ‖r_k‖² for the rows k (output units) of g = W_g and r = W_r, in one pass
    over both weights; the backward gives each weight's gradient, a combination of the rows of g and r, in one
    more (fastdstn.ops.penalty_row_sums and penalty_row_combination, compiled on CPU). ATen expressions make 5–7
    passes a sub-step over weights that do not stay in cache: over ResNet-18's STN layers the response sub-step's
    penalty and its gradient take 31.7 ms with the ops' reference and 16.8 ms with the compiled passes (2 threads;
    `python benchmarks/bench_ops_cpp.py --only penalty`)."""

    @staticmethod
    def forward(ctx, g: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(g, r)
        return penalty_row_sums(g, r)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_sums: torch.Tensor):
        g, r = ctx.saved_tensors
        d_gg, d_gr, d_rr = d_sums
        d_g = penalty_row_combination(2 * d_gg, g, d_gr, r) if ctx.needs_input_grad[0] else None
        d_r = penalty_row_combination(d_gr, g, 2 * d_rr, r) if ctx.needs_input_grad[1] else None
        return d_g, d_r


# Both Functions take the weights in their own shapes and return gradients of those shapes, not of a flattened view:
# a view's gradient reached the weight's input buffer as a view, and adding the layer's own weight gradient to it
# was then out of place (3.7 ms per 512×512×3×3 weight of ResNet-18 against 1.2 ms in place, 1 thread, profiler).
def _layer_penalty(layer: nn.Module, h: Optional[torch.Tensor], general: bool) -> torch.Tensor:
    g = layer.weight
    if h is None:
        return _SquaredNorm.apply(g)
    s = h.to(g.dtype) @ layer.hyper_proj[: g.shape[0]].t()      # (B, out): the rows' scales per example
    # mean_i ‖g + s_i r‖² per row = ‖g‖² + 2·mean(s)·⟨g, r⟩ + mean(s²)·‖r‖²
    gg, gr, rr = _RowSums.apply(g, layer.response_weight)
    response = (2 * s.mean(0) * gr + s.pow(2).mean(0) * rr).sum()
    return gg.sum() + response if general else response


def weight_penalty(model: nn.Module, h: Optional[torch.Tensor] = None, general: bool = True) -> torch.Tensor:
    """Σ over the weights of StnLinear/StnConv2d layers of the mean over examples of
    ‖W_g + diag(s_i)·W_r‖² (docs/METHOD.md §6, closed form); h = None gives Σ ‖W_g‖². Biases, embeddings
    and non-STN layers are not decayed. general=False (with h) leaves out Σ ‖W_g‖², the term of W_g alone: the
    response sub-step freezes W_g, so the term is a constant there."""
    terms = [_layer_penalty(m, h, general) for m in model.modules() if isinstance(m, (StnLinear, StnConv2d))]
    if not terms:
        raise ValueError("weight_penalty: the model has no StnLinear or StnConv2d layer to decay")
    return torch.stack(terms).sum()
