"""Attention in Δ-STN's dual pass: `sdpa_or_dual`, where `dual_routes()` sends scaled_dot_product_attention.

PyTorch's fused attention kernels have no forward-mode AD rule ("Trying to use forward AD with
_scaled_dot_product_flash_attention_for_cpu that does not support it"), so a transformer stops at its first
attention call once its activations carry tangents; only the O(T²)-memory math kernel differentiates forward.
Inside `fastdstn.nn.dual_routes()`, every call of `torch.nn.functional.scaled_dot_product_attention` (the same object as
`torch._C._nn.scaled_dot_product_attention`) whose q, k or v carries a tangent at the current forward-AD level
runs `fastdstn.ops.attention_dual` and returns the dual tensor (O, Ȯ): whoever calls it — a model's own code,
Hugging Face's attention functions, nn.MultiheadAttention (torchvision's ViT, nn.TransformerEncoderLayer). Calls
without tangents, and everything outside the block, run PyTorch's own SDPA. docs/attention.md has the math.

SDPA's arguments map as: attn_mask, is_causal, scale unchanged; dropout_p > 0 becomes the per-example rate
(dropout_p for every example; the keep mask is drawn from torch's generator, shared by O and Ȯ); enable_gqa
repeats the key/value heads over their query-head groups (as SDPA does). A mask that itself carries a tangent
is refused with a clear error.
"""
from __future__ import annotations

import functools
import types
from typing import Optional

import torch
import torch.nn.functional as F

from .. import ops
from .base import join_dual, split_dual

Tensor = torch.Tensor

_SDPA = torch._C._nn.scaled_dot_product_attention


def _repeat_heads(t: Optional[Tensor], groups: int) -> Optional[Tensor]:
    return None if t is None else t.repeat_interleave(groups, dim=-3)


def sdpa_or_dual(query: Tensor, key: Tensor, value: Tensor, attn_mask: Optional[Tensor] = None,
                 dropout_p: float = 0.0, is_causal: bool = False, *, scale: Optional[float] = None,
                 enable_gqa: bool = False) -> Tensor:
    """scaled_dot_product_attention, through attention_dual when q, k or v carries a forward-AD tangent."""
    (q, qt), (k, kt), (v, vt) = split_dual(query), split_dual(key), split_dual(value)
    if qt is None and kt is None and vt is None:
        return _SDPA(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
                     enable_gqa=enable_gqa)
    if attn_mask is not None and split_dual(attn_mask)[1] is not None:
        raise NotImplementedError("scaled_dot_product_attention in the dual pass: attn_mask carries a forward-mode "
                                  "tangent; attention_dual takes tangents of query, key and value only")
    if enable_gqa and k.dim() >= 3 and q.shape[-3] != k.shape[-3]:
        if q.shape[-3] % k.shape[-3]:
            raise ValueError(f"scaled_dot_product_attention(enable_gqa=True): expected the query heads "
                             f"({q.shape[-3]}) to be a multiple of the key/value heads ({k.shape[-3]})")
        groups = q.shape[-3] // k.shape[-3]
        k, kt, v, vt = (_repeat_heads(t, groups) for t in (k, kt, v, vt))
    rate = None
    if dropout_p > 0:
        rate = torch.full((q.shape[0],), float(dropout_p), device=q.device, dtype=torch.float32)
    o, ot = ops.attention_dual(q, k, v, qt, kt, vt, attn_mask=attn_mask, is_causal=bool(is_causal), scale=scale,
                               dropout_rate=rate)
    return join_dual(o, ot)


@functools.lru_cache(maxsize=None)
def _multi_head_attention_forward_routed():
    """F.multi_head_attention_forward whose SDPA call goes through `sdpa_or_dual`.

    Why a copy of PyTorch's function: a TorchFunctionMode is switched off while its own handler runs, and this
    Python function hands itself to the active mode first thing (has_torch_function is true whenever a mode is
    on), so the SDPA call in its body would run outside the mode. The copy shares PyTorch's code object; only two
    names of its global namespace differ: `scaled_dot_product_attention` (the router) and `has_torch_function`
    (False: the mode already has this call in hand)."""
    original = F.multi_head_attention_forward
    namespace = dict(original.__globals__, scaled_dot_product_attention=sdpa_or_dual,
                     has_torch_function=lambda args: False)
    routed = types.FunctionType(original.__code__, namespace, original.__name__, original.__defaults__,
                                original.__closure__)
    routed.__kwdefaults__ = original.__kwdefaults__
    return routed
