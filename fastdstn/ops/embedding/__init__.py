"""The STN embedding ops (docs/METHOD.md §3): a gather of E_g and E_r scaled per token, reference backend only.

    stn_embedding(tokens, h, Eg, Er, V)        -> y
    stn_embedding_dual(tokens, eps, Eg, Er, V) -> (y, ẏ)
"""
from __future__ import annotations

from typing import Tuple

import torch

from .. import checks
from ..dispatch import resolve

Tensor = torch.Tensor

__all__ = ["stn_embedding", "stn_embedding_dual"]


def _check(tokens: Tensor, h_name: str, h: Tensor, Eg: Tensor, Er: Tensor, V: Tensor) -> None:
    checks.require_tensor("tokens", tokens, ndim=1, floating=False)
    checks.require_tensor("Eg", Eg, ndim=2)
    checks.require_shape("Er", Er, Eg.shape, "the shape of Eg")
    checks.check_hyper_projection(V, h_name, h, Eg.shape[1], has_bias=False)
    if h.shape[0] != tokens.shape[0]:
        raise ValueError(f"{h_name}: expected {tokens.shape[0]} rows (one per token), received shape {tuple(h.shape)}")
    checks.require_same_kind("Eg", Eg, Er=Er, V=V, **{h_name: h})


def stn_embedding(tokens: Tensor, h: Tensor, Eg: Tensor, Er: Tensor, V: Tensor) -> Tensor:
    _check(tokens, "h", h, Eg, Er, V)
    return resolve("stn_embedding", Eg)(tokens, h, Eg, Er, V)


def stn_embedding_dual(tokens: Tensor, eps: Tensor, Eg: Tensor, Er: Tensor, V: Tensor) -> Tuple[Tensor, Tensor]:
    _check(tokens, "eps", eps, Eg, Er, V)
    return resolve("stn_embedding_dual", Eg)(tokens, eps, Eg, Er, V)
