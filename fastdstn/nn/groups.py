"""Parameter groups and the tunable L2 penalty of any model that contains STN layers."""
from __future__ import annotations

from typing import Iterator, List, Optional

import torch
from torch import nn

from .base import StnLayer
from .conv import StnConv2d
from .linear import StnLinear


def stn_layers(model: nn.Module) -> Iterator[StnLayer]:
    return (m for m in model.modules() if isinstance(m, StnLayer))


def response_parameters(model: nn.Module) -> List[nn.Parameter]:
    """W_r, b_r and V of every STN layer: what the response sub-step updates."""
    return [p for layer in stn_layers(model) for p in layer.response_parameters()]


def general_parameters(model: nn.Module) -> List[nn.Parameter]:
    """Every other parameter of the model (general weights of STN layers, BatchNorm, plain layers)."""
    response = {id(p) for p in response_parameters(model)}
    return [p for p in model.parameters() if id(p) not in response]


def _layer_penalty(layer: nn.Module, h: Optional[torch.Tensor], general: bool) -> torch.Tensor:
    g = layer.weight.flatten(1)
    if h is None:
        return g.pow(2).sum()
    r = layer.response_weight.flatten(1)
    s = h.to(g.dtype) @ layer.hyper_proj[: g.shape[0]].t()      # (B, out): the rows' scales per example
    # mean_i ‖g + s_i r‖² per row = ‖g‖² + 2·mean(s)·⟨g, r⟩ + mean(s²)·‖r‖²
    response = (2 * s.mean(0) * (g * r).sum(1) + s.pow(2).mean(0) * r.pow(2).sum(1)).sum()
    return g.pow(2).sum() + response if general else response


def weight_penalty(model: nn.Module, h: Optional[torch.Tensor] = None, general: bool = True) -> torch.Tensor:
    """Σ over the weights of StnLinear/StnConv2d layers of the mean over examples of
    ‖W_g + diag(s_i)·W_r‖² (docs/METHOD.md §6, closed form); h = None gives Σ ‖W_g‖². Biases, embeddings
    and non-STN layers are not decayed. general=False (with h) leaves out Σ ‖W_g‖², the term of W_g alone: the
    response sub-step freezes W_g, so the term has no gradient there and computing it is a wasted pass over every
    general weight."""
    terms = [_layer_penalty(m, h, general) for m in model.modules() if isinstance(m, (StnLinear, StnConv2d))]
    if not terms:
        raise ValueError("weight_penalty: the model has no StnLinear or StnConv2d layer to decay")
    return torch.stack(terms).sum()
