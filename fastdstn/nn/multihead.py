"""StnMultiheadAttention: nn.MultiheadAttention with STN query/key/value/output projections and a tunable
per-example attention-weight dropout."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .attention import attention
from .dropout import training_rate
from .linear import StnLinear

Tensor = torch.Tensor


class StnMultiheadAttention(nn.Module):
    """Like nn.MultiheadAttention(embed_dim, num_heads, dropout, bias, kdim, vdim, batch_first): forward(query, key,
    value, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal) returns (output, averaged or
    per-head weights or None), with the same mask conventions (boolean True = not allowed, or additive) and
    unbatched inputs. q_proj, k_proj, v_proj and out_proj are StnLinear layers.

    dropout_hyper: name of the hyperparameter that is the attention weights' per-example drop probability in
    training (then `dropout` is unused); without it, `dropout` is a fixed rate as in nn.MultiheadAttention.
    add_bias_kv and add_zero_attn are not supported."""

    def __init__(self, embed_dim: int, num_heads: int, num_hypers: int, dropout: float = 0.0, bias: bool = True,
                 kdim: Optional[int] = None, vdim: Optional[int] = None, batch_first: bool = False,
                 dropout_hyper: Optional[str] = None, device=None, dtype=None) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim: expected a multiple of num_heads={num_heads}, received {embed_dim}")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.kdim, self.vdim = kdim or embed_dim, vdim or embed_dim
        self.batch_first, self.dropout, self.dropout_hyper = batch_first, dropout, dropout_hyper
        # Sequence-first inputs (L, B, E) keep their layout: the projections read the examples along dim 1.
        batch_dim = 0 if batch_first else 1
        kwargs = dict(bias=bias, batch_dim=batch_dim, device=device, dtype=dtype)
        self.q_proj = StnLinear(embed_dim, embed_dim, num_hypers, **kwargs)
        self.k_proj = StnLinear(self.kdim, embed_dim, num_hypers, **kwargs)
        self.v_proj = StnLinear(self.vdim, embed_dim, num_hypers, **kwargs)
        self.out_proj = StnLinear(embed_dim, embed_dim, num_hypers, **kwargs)

    @classmethod
    def from_module(cls, m: nn.MultiheadAttention, num_hypers: int,
                    dropout_hyper: Optional[str] = None) -> "StnMultiheadAttention":
        """The converted `m`: its (packed or separate) projection weights as the general weights."""
        if m.bias_k is not None or m.add_zero_attn:
            raise ValueError(f"convert: nn.MultiheadAttention with add_bias_kv or add_zero_attn is not supported "
                             f"(skip it with skip=...), received {m}")
        new = cls(m.embed_dim, m.num_heads, num_hypers, dropout=m.dropout, bias=m.in_proj_bias is not None,
                  kdim=m.kdim, vdim=m.vdim, batch_first=m.batch_first, dropout_hyper=dropout_hyper,
                  device="meta", dtype=m.out_proj.weight.dtype)
        E = m.embed_dim
        if m._qkv_same_embed_dim:
            weights = [nn.Parameter(w.detach().clone()) for w in m.in_proj_weight.split(E)]
        else:
            weights = [m.q_proj_weight, m.k_proj_weight, m.v_proj_weight]
        biases = [None] * 3 if m.in_proj_bias is None else [nn.Parameter(b.detach().clone())
                                                              for b in m.in_proj_bias.split(E)]
        for proj, w, b in zip((new.q_proj, new.k_proj, new.v_proj), weights, biases):
            proj.adopt(w, b)
        new.out_proj.adopt(m.out_proj.weight, m.out_proj.bias)
        return new

    def _rate(self, batch: int, like: Tensor):
        """The attention weights' drop probability now: per-example rates of `dropout_hyper`, a fixed float
        in training, or None."""
        if self.dropout_hyper is not None:
            return training_rate(self, self.dropout_hyper, batch, f"StnMultiheadAttention({self.dropout_hyper!r})",
                                 like)
        return self.dropout if self.training and self.dropout > 0 else None

    def _mask(self, attn_mask: Optional[Tensor], key_padding_mask: Optional[Tensor], batch: int,
              like: Tensor) -> Optional[Tensor]:
        """nn.MultiheadAttention's masks as one additive mask broadcastable to (B, heads, L, S)."""
        key_padding_mask = F._canonical_mask(mask=key_padding_mask, mask_name="key_padding_mask",
                                             other_type=F._none_or_dtype(attn_mask), other_name="attn_mask",
                                             target_type=like.dtype)
        attn_mask = F._canonical_mask(mask=attn_mask, mask_name="attn_mask", other_type=None, other_name="",
                                      target_type=like.dtype, check_other=False)
        if attn_mask is not None and attn_mask.dim() == 3:       # (B·heads, L, S)
            attn_mask = attn_mask.view(batch, self.num_heads, *attn_mask.shape[1:])
        if key_padding_mask is not None:                         # (B, S)
            padding = key_padding_mask.view(batch, 1, 1, -1)
            attn_mask = padding if attn_mask is None else attn_mask + padding
        return attn_mask

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Optional[Tensor] = None,
                need_weights: bool = True, attn_mask: Optional[Tensor] = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
        if query.dim() == 2:            # unbatched (L, E): a batch of one
            batch_dim = 0 if self.batch_first else 1
            out, weights = self(query.unsqueeze(batch_dim), key.unsqueeze(batch_dim), value.unsqueeze(batch_dim),
                                None if key_padding_mask is None else key_padding_mask.unsqueeze(0), need_weights,
                                attn_mask, average_attn_weights, is_causal)
            return out.squeeze(batch_dim), None if weights is None else weights.squeeze(0)
        # (B, heads, L, head_dim) from (B, L, E) or (L, B, E) projections
        order = (0, 2, 1, 3) if self.batch_first else (1, 2, 0, 3)
        q, k, v = (proj(x).unflatten(-1, (self.num_heads, self.head_dim)).permute(*order)
                   for proj, x in ((self.q_proj, query), (self.k_proj, key), (self.v_proj, value)))
        batch = q.shape[0]
        mask = self._mask(attn_mask, key_padding_mask, batch, q)
        out, weights = attention(q, k, v, attn_mask=mask, is_causal=is_causal and mask is None,
                                 dropout=self._rate(batch, q), need_weights=need_weights)
        out = out.permute(*(order if self.batch_first else (2, 0, 1, 3))).flatten(-2)
        if weights is not None and average_attn_weights:
            weights = weights.mean(1)
        return self.out_proj(out), weights

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, batch_first={self.batch_first}, "
                f"dropout={self.dropout}, dropout_hyper={self.dropout_hyper!r}")
