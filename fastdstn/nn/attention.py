"""The one place where converted attention modules compute softmax attention.

    attention(q, k, v, attn_mask=None, is_causal=False, scale=None, dropout=None, need_weights=False)

q: (B, ..., L, E), k and v: (B, ..., S, E) (e.g. (B, heads, L, E), or (B, windows, heads, L, E) for Swin), in
`F.scaled_dot_product_attention`'s conventions: attn_mask boolean (True = attend) or additive, broadcastable to
(B, ..., L, S); is_causal masks key j > query i. dropout: the attention weights' drop probability, a float (one
rate for all) or a (B,) tensor of per-example rates (a tuned hyperparameter).

Routes:
* nothing per example, no dual pass, no weights asked for: PyTorch's fused `scaled_dot_product_attention`;
* per-example dropout: `fastdstn.ops.attention_with_dropout`, each example's keep mask at its own rate;
* inside Δ-STN's dual pass (a dual feed), where PyTorch's fused SDPA kernels have no forward-mode rule:
  `fastdstn.ops.attention_dual`, primal and tangent from the tangents q, k and v carry;
* asked for the weights (`need_weights`, which the fused ops do not return): `_explicit`, softmax(S)·V written
  out, the weights' tangent included in the dual pass.
Like the STN layers, attention takes the dual route because the feed is dual, not because its inputs carry
tangents: under another forward-mode transform (torch.func.jvp) it is plain PyTorch attention.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F

from .. import ops
from ..hyper.feed import current_feed
from .base import join_dual, split_dual
from .dropout import draw_seed
from .dual_routes import one_call

Tensor = torch.Tensor
Dropout = Union[float, Tensor, None]


@one_call
def attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Optional[Tensor] = None, is_causal: bool = False,
              scale: Optional[float] = None, dropout: Dropout = None,
              need_weights: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
    """(output (B, ..., L, Ev), the attention weights after dropout (B, ..., L, S) when need_weights else None);
    see the module docstring."""
    feed = current_feed()
    if feed is not None and feed.dual:
        (q, q_t), (k, k_t), (v, v_t) = split_dual(q), split_dual(k), split_dual(v)
    else:
        q_t = k_t = v_t = None
    if attn_mask is not None and attn_mask.is_floating_point() and attn_mask.dtype != q.dtype:
        # PyTorch's CPU SDPA reads a float32 mask beside float64 q wrongly (torch 2.14: off by up to 1.9 at 8
        # queries and keys against the same mask in float64), and converted float64 models meet float32 masks
        # (nn.Transformer.generate_square_subsequent_mask).
        attn_mask = attn_mask.to(q.dtype)
    dual = q_t is not None or k_t is not None or v_t is not None
    per_example = isinstance(dropout, Tensor)
    if not (dual or per_example or need_weights):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale,
                                             dropout_p=float(dropout or 0.0))
        return out, None
    rate = _per_example(dropout, q)
    if need_weights:
        out, out_t, weights = _explicit(q, k, v, q_t, k_t, v_t, attn_mask, is_causal, scale, rate)
        return (out if out_t is None else join_dual(out, out_t)), weights
    if attn_mask is not None and is_causal:
        attn_mask, is_causal = _additive_mask(attn_mask, True, q.shape[-2], k.shape[-2], q), False
    if dual:
        return join_dual(*ops.attention_dual(q, k, v, q_t, k_t, v_t, attn_mask, is_causal, scale, rate)), None
    return ops.attention_with_dropout(q, k, v, attn_mask, is_causal, scale, rate), None


def _per_example(dropout: Dropout, q: Tensor) -> Optional[Tensor]:
    """(B,) drop probabilities, or None when nothing drops."""
    if isinstance(dropout, Tensor):
        return dropout.to(device=q.device, dtype=q.dtype)
    if not dropout:
        return None
    return q.new_full((q.shape[0],), float(dropout))


def _additive_mask(attn_mask: Optional[Tensor], is_causal: bool, length: int, source: int,
                   like: Tensor) -> Optional[Tensor]:
    """SDPA's masks as one additive mask (−inf where a boolean mask is False or a causal mask hides a key)."""
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        attn_mask = torch.zeros((), dtype=like.dtype, device=like.device).masked_fill(~attn_mask, -math.inf)
    if is_causal:
        hidden = torch.ones(length, source, dtype=torch.bool, device=like.device).triu(1)
        causal = torch.zeros((), dtype=like.dtype, device=like.device).masked_fill(hidden, -math.inf)
        attn_mask = causal if attn_mask is None else attn_mask + causal
    return attn_mask


def _scores(q: Tensor, k: Tensor, attn_mask: Optional[Tensor], is_causal: bool, scale: Optional[float]):
    """(S = scale·QKᵀ + M, scale)."""
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale
    mask = _additive_mask(attn_mask, is_causal, q.shape[-2], k.shape[-2], scores)
    return (scores if mask is None else scores + mask), scale


def _softmax(scores: Tensor) -> Tensor:
    """Softmax over the keys, and 0 for a query whose keys are all masked, as PyTorch's SDPA gives (not NaN: a
    left-padded batch of a causal model has such queries)."""
    hidden = torch.isneginf(scores).all(-1, keepdim=True)
    return torch.softmax(scores, dim=-1).masked_fill(hidden, 0.0)


def _explicit(q: Tensor, k: Tensor, v: Tensor, q_t: Optional[Tensor], k_t: Optional[Tensor], v_t: Optional[Tensor],
              attn_mask: Optional[Tensor], is_causal: bool, scale: Optional[float],
              rate: Optional[Tensor]) -> Tuple[Tensor, Optional[Tensor], Tensor]:
    """Attention with its weights, along tangents (Q̇, K̇, V̇) (all None outside the dual pass; a missing tangent
    is zero), with dropout D on the weights:
        Ṡ = scale·(Q̇Kᵀ + QK̇ᵀ),  Ṗ = P ⊙ (Ṡ − r) with r = Σ_j P_ij Ṡ_ij,
        O = (P⊙D)·V,  Ȯ = (P⊙D)·V̇ + (Ṗ⊙D)·V.
    Returns (O, Ȯ or None without tangents, P⊙D)."""
    scores, scale = _scores(q, k, attn_mask, is_causal, scale)
    weights = _softmax(scores)
    scores_t = None
    if q_t is not None:
        scores_t = (q_t @ k.transpose(-2, -1)) * scale
    if k_t is not None:
        from_k = (q @ k_t.transpose(-2, -1)) * scale
        scores_t = from_k if scores_t is None else scores_t + from_k
    weights_t = None
    if scores_t is not None:
        weighted = weights * scores_t
        weights_t = weighted - weights * weighted.sum(-1, keepdim=True)
    if rate is not None:
        weights, weights_t = ops.dropout_dual(weights, weights_t, rate, draw_seed(), 0)
    out_t = None if v_t is None else weights @ v_t
    if weights_t is not None:
        out_t = weights_t @ v if out_t is None else out_t + weights_t @ v
    return weights @ v, out_t, weights
