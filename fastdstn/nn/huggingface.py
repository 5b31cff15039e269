"""Hugging Face transformers: its Conv1D layer and the attention function of converted models.

Nothing here imports transformers: a model that holds Hugging Face modules has imported it already.

Hugging Face attention modules compute attention through the function that their config's attention
implementation names, and pass it their attention dropout as a float (`dropout=self.attn_dropout.p`). A converted
model uses the implementation "fastdstn" (registered here through transformers' AttentionInterface, with the
boolean masks of "sdpa"): `fastdstn.nn.attention`, which runs PyTorch's SDPA when nothing is per-example and the
explicit path in Δ-STN's dual pass or with a per-example attention dropout. That dropout is mapped by naming the
attention module: `convert(..., dropout={"transformer.h.*.attn": "attn_drop"})` sets its `stn_attention_dropout`.
"""
from __future__ import annotations

import sys
from typing import Iterator, Optional, Tuple

import torch
from torch import nn

from .attention import attention
from .dropout import training_rate

Tensor = torch.Tensor
IMPLEMENTATION = "fastdstn"
DROPOUT_ATTRIBUTE = "stn_attention_dropout"
# Where a converted Hugging Face model keeps the attention implementation it had (fastdstn.nn.export restores it).
ORIGINAL_IMPLEMENTATION = "stn_original_attention"


def conv1d_type() -> Optional[type]:
    """transformers' Conv1D (a linear layer with a transposed (in, out) weight), when transformers is loaded."""
    module = sys.modules.get("transformers.pytorch_utils")
    return getattr(module, "Conv1D", None)


def pretrained_type() -> Optional[type]:
    module = sys.modules.get("transformers.modeling_utils")
    return getattr(module, "PreTrainedModel", None)


def is_attention_module(m: nn.Module) -> bool:
    """A Hugging Face module that computes attention through its config's attention implementation: a module of
    transformers with a config, not a whole model. (One that is not an attention module never reads the mapped
    dropout, which SelfTuning reports after its first training step.)"""
    pretrained = pretrained_type()
    return (type(m).__module__.startswith("transformers.") and hasattr(getattr(m, "config", None),
                                                                       "_attn_implementation")
            and not (pretrained is not None and isinstance(m, pretrained)))


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    if IMPLEMENTATION not in AttentionInterface._global_mapping:
        AttentionInterface.register(IMPLEMENTATION, hf_attention)
        ALL_MASK_ATTENTION_FUNCTIONS.register(IMPLEMENTATION, sdpa_mask)


def use_fastdstn_attention(model: nn.Module) -> Iterator[Tuple[str, nn.Module, bool]]:
    """Switch every outermost Hugging Face model inside `model` to the "fastdstn" attention implementation; yields
    (name, model, whether it could be switched)."""
    pretrained = pretrained_type()
    if pretrained is None:
        return
    inner = set()
    for name, m in model.named_modules():
        if isinstance(m, pretrained) and id(m) not in inner:
            inner.update(id(sub) for sub in m.modules())
            switched = m._can_set_attn_implementation()
            if switched:
                setattr(m, ORIGINAL_IMPLEMENTATION, m.config._attn_implementation)
                _register()
                m.set_attn_implementation(IMPLEMENTATION)
            yield name, m, switched


def hf_attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Optional[Tensor],
                 dropout: float = 0.0, scaling: Optional[float] = None, is_causal: Optional[bool] = None,
                 **kwargs):
    """transformers' attention-function interface: (B, heads, L, E) query, (B, kv_heads, S, E) key and value,
    a boolean mask (True = attend) or None; returns ((B, L, heads, E) output, None)."""
    for unsupported in ("softcap", "position_bias", "sinks", "s_aux"):
        if kwargs.get(unsupported) is not None:
            raise NotImplementedError(f"fastdstn attention: {type(module).__name__} passes {unsupported!r}, which "
                                      f"the converted attention does not implement; skip this model's attention "
                                      f"modules (convert(skip=...)) or use the 'eager' implementation")
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    is_causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    is_causal = query.shape[2] > 1 and attention_mask is None and is_causal
    hyper = getattr(module, DROPOUT_ATTRIBUTE, None)
    rate = (training_rate(module, hyper, query.shape[0], f"{type(module).__name__}({hyper!r})", query)
            if hyper is not None else dropout)
    out, _ = attention(query, key, value, attn_mask=attention_mask, is_causal=is_causal, scale=scaling,
                       dropout=rate)
    return out.transpose(1, 2).contiguous(), None
