"""Pure-PyTorch reference of the STN embedding ops (the only backend: a gather has nothing to fuse).

Shapes: tokens (N,), h/eps (N, H), Eg/Er (vocabulary, dim), V (dim, H); docs/METHOD.md §3.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def stn_embedding(tokens: Tensor, h: Tensor, Eg: Tensor, Er: Tensor, V: Tensor) -> Tensor:
    """y = E_g[tok] + s ⊙ E_r[tok]; tokens (N,), h (N, H), V (dim, H)."""
    s = h @ V.t()
    return F.embedding(tokens, Eg) + s * F.embedding(tokens, Er)


def stn_embedding_dual(tokens: Tensor, eps: Tensor, Eg: Tensor, Er: Tensor, V: Tensor) -> Tuple[Tensor, Tensor]:
    """Primal E_g[tok], tangent s ⊙ E_r[tok] with s = ε·Vᵀ."""
    s = eps @ V.t()
    return F.embedding(tokens, Eg), s * F.embedding(tokens, Er)
