"""StnEmbedding: y = E_g[tok] + s ⊙ E_r[tok], s = h·Vᵀ per example and embedding dimension."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from .base import StnLayer, join_dual, rows_for


class StnEmbedding(nn.Embedding, StnLayer):
    """nn.Embedding with a best-response. `batch_dim` says which token dimension holds the examples
    (0 for (B, T) batches, 1 for time-major (T, B) language-model batches)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, num_hypers: int, batch_dim: int = 0,
                 padding_idx=None, device=None, dtype=None) -> None:
        super().__init__(num_embeddings, embedding_dim, padding_idx=padding_idx, device=device, dtype=dtype)
        self.batch_dim = batch_dim
        # V projects h onto one scale per embedding dimension (the weight's columns), no bias gate.
        self.num_hypers = num_hypers
        if num_hypers < 1:
            raise ValueError(f"num_hypers: expected >= 1, received {num_hypers}")
        self.response_weight = nn.Parameter(torch.empty_like(self.weight))
        self.response_bias = None
        self.hyper_proj = nn.Parameter(self.weight.new_zeros(embedding_dim, num_hypers))
        self.reset_response_parameters()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        feed = self.active_feed(tokens.shape[self.batch_dim]) if tokens.dim() > 0 else None
        if feed is None:
            return F.embedding(tokens, self.weight, self.padding_idx)
        h = rows_for(feed.h, (*tokens.shape, self.embedding_dim), self.batch_dim).to(self.weight.dtype)
        flat = tokens.reshape(-1)
        if feed.dual:
            out = join_dual(*ops.stn_embedding_dual(flat, h, self.weight, self.response_weight, self.hyper_proj))
        else:
            out = ops.stn_embedding(flat, h, self.weight, self.response_weight, self.hyper_proj)
        return out.reshape(*tokens.shape, self.embedding_dim)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_hypers={self.num_hypers}, batch_dim={self.batch_dim}"
