"""A converted (or hand-built) STN model back as plain torch modules: what a tuned network deploys.

Each STN module becomes the torch module it stands for, holding its general weights, so that the result's
`state_dict` has the original architecture's keys and shapes:

    StnLinear      -> the class convert replaced (nn.Linear, a subclass keeping its forward, Hugging Face Conv1D
                      with its (in, out) weight transposed back); nn.Linear when built by hand
    StnConv2d      -> nn.Conv2d (or the replaced subclass)          StnEmbedding -> nn.Embedding (or subclass)
    StnLSTM        -> nn.LSTM: bias_ih the summed bias, bias_hh zero (nn.LSTM adds the two)
    StnMultiheadAttention -> nn.MultiheadAttention (packed in_proj_weight when kdim = vdim = embed_dim)
    WindowAttention -> torchvision's ShiftedWindowAttention
    ExplicitTransformerEncoderLayer -> nn.TransformerEncoderLayer;  Hardsigmoid, GLU, MaxPool2d -> their torch.nn classes
    StnDropout, StnLockedDropout -> nn.Dropout;  StnDropout2d -> nn.Dropout2d   (at the tuned rate)
    tuned attention-weight dropout -> the attention module's own rate;  Hugging Face attention -> the
                      implementation the model had before convert

`h` (unconstrained, (H,)) evaluates each layer's best-response there and folds it into the weights: the layer
y = x·W_gᵀ + b_g + s ⊙ (x·W_rᵀ) + t ⊙ b_r with [s | t] = h·Vᵀ is the plain layer with W = W_g + diag(s)·W_r and
b = b_g + t ⊙ b_r (for an embedding, s scales columns). STN deploys at h = λ; centered STN and Δ-STN at h = 0
(h = None: the general weights as they are, tied weights still one Parameter).
"""
from __future__ import annotations

import copy
import sys
import warnings
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import nn

from . import huggingface
from .activations import GLU, Hardsigmoid
from .pooling import MaxPool2d
from .base import StnLayer
from .conv import StnConv2d
from .dropout import StnDropout, StnDropout2d
from .embedding import StnEmbedding
from .linear import StnLinear
from .lstm import StnLSTM
from .multihead import StnMultiheadAttention
from .swin import WindowAttention
from .transformer import ExplicitTransformerEncoderLayer, explicit

Tensor = torch.Tensor
Rate = Callable[[str], float]       # hyperparameter name -> its tuned value
# The attributes a Hugging Face attention module keeps its attention dropout in: a module (GPT-2's attn_dropout)
# or a float (the attention_dropout of Llama-style modules).
HF_DROPOUT_ATTRIBUTES = ("attn_dropout", "attention_dropout")


def _folded(layer: StnLayer, h: Optional[Tensor]) -> Tuple[nn.Parameter, Optional[nn.Parameter]]:
    """(weight, bias) of the plain layer: the general Parameters themselves at h = None, else the best-response
    at h folded into new Parameters."""
    bias = getattr(layer, "bias", None)
    if h is None:
        return layer.weight, bias
    with torch.no_grad():
        scales = h.to(layer.hyper_proj) @ layer.hyper_proj.t()
        s = scales[: layer.scale_count()]
        if isinstance(layer, StnEmbedding):
            weight = layer.weight + layer.response_weight * s
        else:
            weight = layer.weight + layer.response_weight * s.view(-1, *[1] * (layer.weight.dim() - 1))
        if bias is not None:
            bias = nn.Parameter(bias + scales[layer.scale_count():] * layer.response_bias)
    return nn.Parameter(weight), bias


def _origin(m: nn.Module, base: type) -> type:
    """The class convert replaced by m (recorded as `converted_from`), or `base` for a module built by hand."""
    origin = getattr(m, "converted_from", base)
    return origin if issubclass(origin, base) else base


def _as_class(module: nn.Module, cls: type) -> nn.Module:
    """module as cls, a subclass of its class that keeps its forward (what convert accepted)."""
    if cls is not type(module):
        module.__class__ = cls
    return module


def _linear(m: StnLinear, h: Optional[Tensor]) -> nn.Module:
    weight, bias = _folded(m, h)
    conv1d, origin = huggingface.conv1d_type(), getattr(m, "converted_from", nn.Linear)
    if conv1d is not None and issubclass(origin, conv1d):
        with torch.device("meta"):
            new = origin(m.out_features, m.in_features)
        new.weight = nn.Parameter(weight.detach().t().contiguous(), requires_grad=weight.requires_grad)
        new.bias = bias
        return new
    with torch.device("meta"):
        new = nn.Linear(m.in_features, m.out_features, bias=bias is not None)
    new.weight, new.bias = weight, bias
    return _as_class(new, _origin(m, nn.Linear))


def _conv(m: StnConv2d, h: Optional[Tensor]) -> nn.Module:
    weight, bias = _folded(m, h)
    with torch.device("meta"):
        new = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride, padding=m.padding,
                        dilation=m.dilation, groups=m.groups, bias=bias is not None, padding_mode=m.padding_mode)
    new.weight, new.bias = weight, bias
    return _as_class(new, _origin(m, nn.Conv2d))


def _embedding(m: StnEmbedding, h: Optional[Tensor]) -> nn.Module:
    weight, _ = _folded(m, h)
    with torch.device("meta"):
        new = nn.Embedding(m.num_embeddings, m.embedding_dim, padding_idx=m.padding_idx)
    new.weight = weight
    return _as_class(new, _origin(m, nn.Embedding))


def _lstm(m: StnLSTM) -> nn.Module:
    """m's layers are plain nn.Linear and its layer dropout nn.Dropout by now (children are restored first)."""
    has_bias = m.ih[0].bias is not None
    dropout = m.layer_dropout.p if m.layer_dropout is not None else 0.0
    if m.dropconnect is not None:
        warnings.warn(f"export: StnLSTM's DropConnect ({m.dropconnect!r}) has no nn.LSTM counterpart; the exported "
                      f"nn.LSTM trains without it (evaluation is unaffected)", stacklevel=3)
    with torch.device("meta"):
        new = nn.LSTM(m.input_size, m.hidden_size, m.num_layers, bias=has_bias, batch_first=m.batch_first,
                      dropout=dropout if m.num_layers > 1 else 0.0)
    for layer, (ih, hh) in enumerate(zip(m.ih, m.hh)):
        setattr(new, f"weight_ih_l{layer}", ih.weight)
        setattr(new, f"weight_hh_l{layer}", hh.weight)
        if has_bias:
            setattr(new, f"bias_ih_l{layer}", ih.bias)
            setattr(new, f"bias_hh_l{layer}", nn.Parameter(torch.zeros_like(ih.bias)))
    return new


def _joined(parts) -> nn.Parameter:
    return nn.Parameter(torch.cat([p.detach() for p in parts]), requires_grad=parts[0].requires_grad)


def _multihead(m: StnMultiheadAttention, rate: Rate) -> nn.Module:
    projections = (m.q_proj, m.k_proj, m.v_proj)
    has_bias = m.q_proj.bias is not None
    dropout = rate(m.dropout_hyper) if m.dropout_hyper is not None else m.dropout
    with torch.device("meta"):
        new = nn.MultiheadAttention(m.embed_dim, m.num_heads, dropout=dropout, bias=has_bias, kdim=m.kdim,
                                    vdim=m.vdim, batch_first=m.batch_first)
    if new._qkv_same_embed_dim:
        new.in_proj_weight = _joined([p.weight for p in projections])
    else:
        new.q_proj_weight, new.k_proj_weight, new.v_proj_weight = (p.weight for p in projections)
    if has_bias:
        new.in_proj_bias = _joined([p.bias for p in projections])
    new.out_proj.weight, new.out_proj.bias = m.out_proj.weight, m.out_proj.bias
    return new


def _window_attention(m: WindowAttention, rate: Rate) -> nn.Module:
    module = sys.modules.get("torchvision.models.swin_transformer")
    dim = m.qkv.in_features
    attention_dropout = rate(m.dropout_hyper) if m.dropout_hyper is not None else m.attention_dropout
    with torch.device("meta"):
        new = module.ShiftedWindowAttention(dim, m.window_size, m.shift_size, m.num_heads,
                                            qkv_bias=m.qkv.bias is not None, proj_bias=m.proj.bias is not None,
                                            attention_dropout=attention_dropout, dropout=m.dropout)
    new.qkv, new.proj = m.qkv, m.proj
    new.relative_position_bias_table = m.relative_position_bias_table
    new.relative_position_index = m.relative_position_index
    return new


def _dropout(m: StnDropout, rate: Rate) -> nn.Module:
    return (nn.Dropout2d if isinstance(m, StnDropout2d) else nn.Dropout)(rate(m.hyper))


def _hugging_face_attention(m: nn.Module, rate: Rate) -> nn.Module:
    """A Hugging Face attention module whose attention dropout was tuned: that rate in its own attribute."""
    value = rate(getattr(m, huggingface.DROPOUT_ATTRIBUTE))
    delattr(m, huggingface.DROPOUT_ATTRIBUTE)
    for attribute in HF_DROPOUT_ATTRIBUTES:
        current = getattr(m, attribute, None)
        if isinstance(current, nn.Dropout):
            current.p = value
            return m
        if isinstance(current, float):
            setattr(m, attribute, value)
            return m
    warnings.warn(f"export: {type(m).__name__} keeps its attention dropout in none of {HF_DROPOUT_ATTRIBUTES}; "
                  f"the exported module keeps its configured rate, not the tuned {value:.4g}", stacklevel=3)
    return m


def _restore(m: nn.Module, rate: Rate, h: Optional[Tensor]) -> nn.Module:
    """The plain module for m (m itself when it is plain), its children already restored."""
    if isinstance(m, StnLinear):
        return _linear(m, h)
    if isinstance(m, StnConv2d):
        return _conv(m, h)
    if isinstance(m, StnEmbedding):
        return _embedding(m, h)
    if isinstance(m, StnLSTM):
        return _lstm(m)
    if isinstance(m, StnMultiheadAttention):
        return _multihead(m, rate)
    if isinstance(m, WindowAttention):
        return _window_attention(m, rate)
    if isinstance(m, StnDropout):
        return _dropout(m, rate)
    if type(m) is ExplicitTransformerEncoderLayer:
        return explicit(m, nn.TransformerEncoderLayer)
    if type(m) is Hardsigmoid:
        return nn.Hardsigmoid(m.inplace)
    if type(m) is GLU:
        return nn.GLU(m.dim)
    if type(m) is MaxPool2d:
        return nn.MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation, m.return_indices, m.ceil_mode)
    if isinstance(m, StnLayer):
        raise TypeError(f"export: no plain torch module is known for {type(m).__name__}")
    if hasattr(m, huggingface.DROPOUT_ATTRIBUTE):
        return _hugging_face_attention(m, rate)
    m.__dict__.pop("stn_conversion", None)
    original = m.__dict__.pop(huggingface.ORIGINAL_IMPLEMENTATION, None)
    if original is not None:
        m.set_attn_implementation(original)
    return m


def _restore_tree(m: nn.Module, rate: Rate, h: Optional[Tensor], done: Dict[int, nn.Module]) -> nn.Module:
    """m with every module inside it restored, bottom-up (a parent reads its restored children); a module that
    appears at several places becomes one plain module."""
    if id(m) in done:
        return done[id(m)]
    for name, child in list(m.named_children()):
        new = _restore_tree(child, rate, h, done)
        if new is not child:
            setattr(m, name, new)
    new = _restore(m, rate, h)
    new.train(m.training)
    done[id(m)] = new
    return new


def plain_model(model: nn.Module, rate: Rate, h: Optional[Tensor] = None) -> nn.Module:
    """A copy of `model` made of plain torch modules (see the module docstring), in eval mode. rate(name): the
    tuned value of a hyperparameter that a dropout site reads; h: where to evaluate the best-response."""
    return _restore_tree(copy.deepcopy(model), rate, h, {}).eval()
