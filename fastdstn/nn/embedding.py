"""StnEmbedding: y = E_g[tok] + s ⊙ E_r[tok], s = h·Vᵀ per example and embedding dimension.

Inputs without an example dimension (one rule, docs/CONVERT.md): a 1-d token input, e.g. the positions
`arange(T)` of a positional embedding, or one whose `batch_dim` has size 1, e.g. HF's (1, T) position ids, indexes
rows that every example shares. Those rows get the batch's mean h: s = mean_i(h_i)·Vᵀ. That is exact wherever the
examples share h (STN evaluation at λ, per-batch hyperparameters) and, being linear in h, gives the mean of the
per-example tangents in Δ-STN's dual pass. The shape of the input decides, never a coincidence of sizes: a 1-d
input is shared even when its length equals the batch size. (A model that embeds one token per example, e.g. class
labels, passes them as (B, 1).)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from .base import StnLayer, join_dual, rows_for
from .dual_routes import one_call


class StnEmbedding(nn.Embedding, StnLayer):
    """nn.Embedding with a best-response. `batch_dim` says which token dimension holds the examples
    (0 for (B, T) batches, 1 for time-major (T, B) language-model batches). The padding row (padding_idx)
    starts at 0 in W_g and W_r and gets no gradient, as in nn.Embedding."""

    def __init__(self, num_embeddings: int, embedding_dim: int, num_hypers: int, batch_dim: int = 0,
                 padding_idx=None, device=None, dtype=None) -> None:
        super().__init__(num_embeddings, embedding_dim, padding_idx=padding_idx, device=device, dtype=dtype)
        self.batch_dim = batch_dim
        self.add_response_parameters(num_hypers, with_bias=False)

    def scale_count(self) -> int:
        """V projects h onto one scale per embedding dimension (the weight's columns), no bias gate."""
        return self.weight.shape[1]

    def reset_response_parameters(self) -> None:
        super().reset_response_parameters()
        if self.padding_idx is not None:
            with torch.no_grad():
                self.response_weight[self.padding_idx].zero_()

    def _shared(self, tokens: torch.Tensor, batch: int) -> bool:
        """True when the input has no example dimension (see the module docstring)."""
        return tokens.dim() < 2 or (tokens.shape[self.batch_dim] == 1 and batch != 1)

    @one_call
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        feed = self.active_feed(tokens, None, batched_dims=0)
        if feed is None:
            return F.embedding(tokens, self.weight, self.padding_idx)
        flat = tokens.reshape(-1)
        if self._shared(tokens, feed.h.shape[0]):
            h = feed.h.mean(0, keepdim=True).expand(flat.shape[0], feed.h.shape[1])
        else:
            self.check_batch(feed.h, tokens.shape[self.batch_dim])
            h = rows_for(feed.h, (*tokens.shape, self.embedding_dim), self.batch_dim)
        h = h.to(self.weight.dtype)
        if feed.dual:
            out, out_t = ops.stn_embedding_dual(flat, h, self.weight, self.response_weight, self.hyper_proj)
        else:
            out, out_t = ops.stn_embedding(flat, h, self.weight, self.response_weight, self.hyper_proj), None
        if self.padding_idx is not None:
            out, out_t = self._without_padding_gradient(flat, out, out_t)
        return join_dual(out, out_t).reshape(*tokens.shape, self.embedding_dim)

    def _without_padding_gradient(self, flat: torch.Tensor, out: torch.Tensor, out_t):
        """The rows of padding tokens as constants: no gradient reaches the padding row (nor V through it)."""
        keep = (flat != self.padding_idx).unsqueeze(1)
        return (torch.where(keep, out, out.detach()),
                None if out_t is None else torch.where(keep, out_t, out_t.detach()))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_hypers={self.num_hypers}, batch_dim={self.batch_dim}"
