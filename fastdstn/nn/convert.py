"""convert(): turn the linear, conv, embedding and LSTM layers of any model into STN layers."""
from __future__ import annotations

import copy
from typing import Callable, Mapping, Optional

import torch
from torch import nn

from .conv import StnConv2d
from .dropout import StnDropout, StnDropout2d
from .embedding import StnEmbedding
from .linear import StnLinear
from .lstm import StnLSTM


def _linear(m: nn.Linear, num_hypers: int) -> StnLinear:
    return StnLinear(m.in_features, m.out_features, num_hypers, bias=m.bias is not None,
                     device=m.weight.device, dtype=m.weight.dtype)


def _conv(m: nn.Conv2d, num_hypers: int) -> StnConv2d:
    return StnConv2d(m.in_channels, m.out_channels, m.kernel_size, num_hypers, stride=m.stride, padding=m.padding,
                     dilation=m.dilation, groups=m.groups, bias=m.bias is not None, padding_mode=m.padding_mode,
                     device=m.weight.device, dtype=m.weight.dtype)


def _embedding(m: nn.Embedding, num_hypers: int) -> StnEmbedding:
    if m.max_norm is not None or m.sparse:
        raise ValueError(f"convert: nn.Embedding with max_norm or sparse=True is not supported, received {m}")
    return StnEmbedding(m.num_embeddings, m.embedding_dim, num_hypers, padding_idx=m.padding_idx,
                        device=m.weight.device, dtype=m.weight.dtype)


def _lstm(m: nn.LSTM, num_hypers: int) -> StnLSTM:
    if m.bidirectional or m.proj_size or m.dropout:
        raise ValueError(f"convert: nn.LSTM with bidirectional, proj_size or dropout is not supported "
                         f"(map dropout sites to StnLockedDropout instead), received {m}")
    new = StnLSTM(m.input_size, m.hidden_size, num_hypers, num_layers=m.num_layers, bias=m.bias,
                  batch_first=m.batch_first).to(device=m.weight_ih_l0.device, dtype=m.weight_ih_l0.dtype)
    with torch.no_grad():
        for layer in range(m.num_layers):
            new.ih[layer].weight.copy_(getattr(m, f"weight_ih_l{layer}"))
            new.hh[layer].weight.copy_(getattr(m, f"weight_hh_l{layer}"))
            if m.bias:
                new.ih[layer].bias.copy_(getattr(m, f"bias_ih_l{layer}") + getattr(m, f"bias_hh_l{layer}"))
    return new


BUILDERS: Mapping[type, Callable[[nn.Module, int], nn.Module]] = {
    nn.Linear: _linear, nn.Conv2d: _conv, nn.Embedding: _embedding, nn.LSTM: _lstm}


def _copy_general(old: nn.Module, new: nn.Module) -> None:
    if isinstance(old, nn.LSTM):
        return
    with torch.no_grad():
        new.weight.copy_(old.weight)
        if getattr(old, "bias", None) is not None:
            new.bias.copy_(old.bias)


def convert(model: nn.Module, space_or_num_hypers, dropout: Optional[Mapping[str, str]] = None,
            skip: Callable[[str, nn.Module], bool] = lambda name, module: False, inplace: bool = False) -> nn.Module:
    """Replace nn.Linear, nn.Conv2d, nn.Embedding and nn.LSTM by STN layers whose general weights
    are the original weights (so the converted model at h = 0 computes exactly what the original
    did), and map dropout sites to hyperparameters.

    space_or_num_hypers: the HyperSpace (or its size H).
    dropout: module name (as in model.named_modules()) → hyperparameter name; nn.Dropout becomes
        StnDropout, nn.Dropout2d becomes StnDropout2d. Every name must exist and be a dropout module.
    skip(name, module): True keeps that layer as it is (e.g. the stem of a ResNet).
    """
    num_hypers = space_or_num_hypers if isinstance(space_or_num_hypers, int) else len(space_or_num_hypers)
    model = model if inplace else copy.deepcopy(model)
    dropout = dict(dropout or {})
    modules = dict(model.named_modules())
    for name, hyper in dropout.items():
        if name not in modules:
            raise KeyError(f"convert: dropout site {name!r} is not a module of the model")
        if not isinstance(modules[name], (nn.Dropout, nn.Dropout2d)):
            raise TypeError(f"convert: dropout site {name!r} is a {type(modules[name]).__name__}, "
                            f"expected nn.Dropout or nn.Dropout2d")
    if not isinstance(space_or_num_hypers, int):
        unknown = sorted(set(dropout.values()) - set(space_or_num_hypers.names))
        if unknown:
            raise KeyError(f"convert: dropout maps to unknown hyperparameters {unknown}; "
                           f"the space has {space_or_num_hypers.names}")
    for name, module in list(modules.items()):
        if not name:
            continue
        if name in dropout:
            new = (StnDropout2d if isinstance(module, nn.Dropout2d) else StnDropout)(dropout[name])
        elif type(module) in BUILDERS and not skip(name, module):
            new = BUILDERS[type(module)](module, num_hypers)
            _copy_general(module, new)
        else:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = modules[parent_name] if parent_name else model
        setattr(parent, child, new)
        new.train(module.training)
    return model
