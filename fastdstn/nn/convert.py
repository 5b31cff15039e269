"""convert(): turn the linear maps of a model into STN layers, map its dropout sites to hyperparameters, and say
what it did (`fastdstn.nn.report.ConversionReport`, kept as `model.stn_conversion`). docs/CONVERT.md has the rules.

Modules are matched by what they are, walking the model from the top, so that a parent that reads its children's
weights itself (nn.MultiheadAttention's out_proj, Swin's window attention) is converted as a whole:

    nn.Linear and subclasses that keep its forward (NonDynamicallyQuantizableLinear, ...)  -> StnLinear
    Hugging Face Conv1D (a linear layer with an (in, out) weight)                        -> StnLinear
    nn.Conv2d (forward not overridden)                                                   -> StnConv2d
    nn.Embedding                                                                         -> StnEmbedding
    nn.LSTM                                                                              -> StnLSTM
    nn.MultiheadAttention (packed or separate q/k/v weights)                             -> StnMultiheadAttention
    torchvision ShiftedWindowAttention (Swin)                                            -> WindowAttention
    nn.TransformerEncoderLayer                                                           -> its explicit path only
    nn.TransformerEncoder                                                                -> nested-tensor path off
    Hugging Face models                                                                  -> attention "fastdstn"
    nn.Hardsigmoid, nn.GLU                                             -> versions with a differentiable tangent
    nn.MaxPool2d                                                       -> MaxPool2d (fastdstn's compiled pooling)

General weights are the original Parameters themselves, so weights tied in the original (an LM's input and
output embedding) stay one Parameter, and the converted model at h = 0 computes what the original did.
"""
from __future__ import annotations

import copy
import fnmatch
import sys
from typing import Callable, Dict, Mapping, Optional

import torch
from torch import nn

from . import huggingface
from .activations import GLU, Hardsigmoid
from .base import StnLayer
from .conv import StnConv2d
from .dropout import StnDropout, StnDropout2d
from .embedding import StnEmbedding
from .linear import StnLinear
from .lstm import StnLSTM
from .multihead import StnMultiheadAttention
from .pooling import MaxPool2d
from .report import ConversionReport, read_hypers
from .swin import WindowAttention
from .transformer import ExplicitTransformerEncoderLayer, explicit

NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.RMSNorm)
# Linear maps with no STN layer in fastdstn.nn: left as they are, and the report says the model is only partly tuned.
UNSUPPORTED = (nn.Conv1d, nn.Conv3d, nn.modules.conv._ConvTransposeNd, nn.Bilinear, nn.RNNBase, nn.RNNCellBase,
               nn.EmbeddingBag)
ALREADY_STN = (StnLayer, StnLSTM, StnDropout, StnMultiheadAttention, WindowAttention)


def _swin_types():
    """(torchvision's ShiftedWindowAttention, its V2), when torchvision's Swin module is loaded."""
    module = sys.modules.get("torchvision.models.swin_transformer")
    if module is None:
        return None, None
    return module.ShiftedWindowAttention, module.ShiftedWindowAttentionV2


def _keeps_forward(m: nn.Module, base: type) -> bool:
    return type(m).forward is base.forward


def _linear(m: nn.Linear, num_hypers: int) -> StnLinear:
    new = StnLinear(m.in_features, m.out_features, num_hypers, bias=m.bias is not None, device="meta",
                    dtype=m.weight.dtype)
    new.adopt(m.weight, m.bias)
    return new


def _conv1d(m: nn.Module, num_hypers: int) -> StnLinear:
    """Hugging Face Conv1D: y = x·W + b with W (in, out); its weight is transposed into a new Parameter."""
    weight = nn.Parameter(m.weight.detach().t().contiguous())
    new = StnLinear(weight.shape[1], weight.shape[0], num_hypers, bias=m.bias is not None, device="meta",
                    dtype=weight.dtype)
    new.adopt(weight, m.bias)
    return new


def _conv(m: nn.Conv2d, num_hypers: int) -> StnConv2d:
    new = StnConv2d(m.in_channels, m.out_channels, m.kernel_size, num_hypers, stride=m.stride, padding=m.padding,
                    dilation=m.dilation, groups=m.groups, bias=m.bias is not None, padding_mode=m.padding_mode,
                    device="meta", dtype=m.weight.dtype)
    new.adopt(m.weight, m.bias)
    return new


def _embedding(m: nn.Embedding, num_hypers: int) -> StnEmbedding:
    if m.max_norm is not None or m.sparse:
        raise ValueError(f"convert: nn.Embedding with max_norm or sparse=True is not supported (skip it with "
                         f"skip=...), received {m}")
    new = StnEmbedding(m.num_embeddings, m.embedding_dim, num_hypers, padding_idx=m.padding_idx, device="meta",
                       dtype=m.weight.dtype)
    new.adopt(m.weight, None)
    return new


def _lstm(m: nn.LSTM, num_hypers: int) -> StnLSTM:
    if m.bidirectional or m.proj_size or m.dropout:
        raise ValueError(f"convert: nn.LSTM with bidirectional, proj_size or dropout is not supported, received {m}; "
                         f"keep it as it is with skip=..., or build fastdstn.nn.StnLSTM(..., "
                         f"layer_dropout='<hyperparameter>') to tune the dropout between its layers")
    new = StnLSTM(m.input_size, m.hidden_size, num_hypers, num_layers=m.num_layers, bias=m.bias,
                  batch_first=m.batch_first).to(device=m.weight_ih_l0.device, dtype=m.weight_ih_l0.dtype)
    with torch.no_grad():
        for layer in range(m.num_layers):
            new.ih[layer].weight.copy_(getattr(m, f"weight_ih_l{layer}"))
            new.hh[layer].weight.copy_(getattr(m, f"weight_hh_l{layer}"))
            if m.bias:
                new.ih[layer].bias.copy_(getattr(m, f"bias_ih_l{layer}") + getattr(m, f"bias_hh_l{layer}"))
    return new


def _site_kind(m: nn.Module) -> Optional[str]:
    """What a dropout mapping to module m tunes, or None when m cannot be a site."""
    swin, _ = _swin_types()
    if isinstance(m, nn.Dropout2d):
        return "channel dropout"
    if isinstance(m, nn.Dropout):
        return "dropout"
    if isinstance(m, nn.MultiheadAttention) or (swin is not None and type(m) is swin) \
            or huggingface.is_attention_module(m):
        return "attention-weight dropout"
    return None


def _resolve_sites(modules: Mapping[str, nn.Module], dropout: Mapping[str, str]) -> Dict[str, str]:
    """Module name → hyperparameter for every name or pattern (fnmatch: *, ?, [...]) of the dropout mapping."""
    sites: Dict[str, str] = {}
    for key, hyper in dropout.items():
        names = fnmatch.filter(modules, key) if any(c in key for c in "*?[") else [n for n in (key,) if n in modules]
        if not names:
            raise KeyError(f"convert: dropout site {key!r} is not a module of the model")
        for name in names:
            if _site_kind(modules[name]) is None:
                raise TypeError(f"convert: dropout site {name!r} is a {type(modules[name]).__name__}, expected "
                                f"nn.Dropout, nn.Dropout2d or an attention module (nn.MultiheadAttention, "
                                f"torchvision's ShiftedWindowAttention, a Hugging Face attention module)")
            if sites.get(name, hyper) != hyper:
                raise ValueError(f"convert: dropout site {name!r} is mapped to both {sites[name]!r} and {hyper!r}")
            sites[name] = hyper
    return sites


class _Converter:
    def __init__(self, num_hypers: int, sites: Mapping[str, str], skip: Callable[[str, nn.Module], bool],
                 report: ConversionReport) -> None:
        self.num_hypers, self.sites, self.skip, self.report = num_hypers, sites, skip, report

    def children(self, parent: nn.Module, prefix: str) -> None:
        for child_name, child in list(parent.named_children()):
            new = self.module(f"{prefix}{child_name}", child)
            if new is not child:
                new.train(child.training)
                setattr(parent, child_name, new)

    def _converted(self, name: str, old: nn.Module, new: nn.Module) -> nn.Module:
        """new in place of old; `converted_from` is old's class, which fastdstn.nn.export builds again."""
        self.report.converted.append((name, type(old).__name__, type(new).__name__))
        new.converted_from = type(old)
        return new

    def _kept(self, name: str, m: nn.Module, why: str) -> nn.Module:
        self.report.kept.append((name, type(m).__name__, why))
        return m

    def module(self, name: str, m: nn.Module) -> nn.Module:
        """The replacement of m (m itself when it stays), its children converted."""
        H, hyper = self.num_hypers, self.sites.get(name)
        if self.skip(name, m):
            return self._kept(name, m, "skip() asked")
        if isinstance(m, ALREADY_STN):
            return self._kept(name, m, "already an STN module")
        if hyper is not None:
            self.report.dropout[name] = (hyper, _site_kind(m))
            if isinstance(m, nn.Dropout2d):
                return self._converted(name, m, StnDropout2d(hyper))
            if isinstance(m, nn.Dropout):
                return self._converted(name, m, StnDropout(hyper))
        swin, swin_v2 = _swin_types()
        if isinstance(m, nn.MultiheadAttention):
            return self._converted(name, m, StnMultiheadAttention.from_module(m, H, hyper))
        if swin is not None and type(m) is swin:
            new = WindowAttention.from_module(m, hyper)
            self.children(new, f"{name}.")
            return self._converted(name, m, new)
        if swin_v2 is not None and isinstance(m, swin_v2):
            self.report.unsupported.append((name, type(m).__name__, "Swin V2 cosine window attention reads its "
                                                                    "projection weights directly"))
            return m
        if hyper is not None:           # a Hugging Face attention module: its attention function reads this
            setattr(m, huggingface.DROPOUT_ATTRIBUTE, hyper)
        if type(m) is nn.TransformerEncoderLayer:
            new = explicit(m, ExplicitTransformerEncoderLayer)
            self.children(new, f"{name}.")
            return self._converted(name, m, new)
        if isinstance(m, nn.TransformerEncoder):
            m.use_nested_tensor = False
        new = self._layer(name, m)
        if new is not None:
            return new
        if isinstance(m, nn.modules.dropout._DropoutNd):
            return self._kept(name, m, f"fixed-rate dropout p={m.p}; map it with dropout= to tune it")
        self.children(m, f"{name}." if name else "")
        own = [n for n, _ in m.named_parameters(recurse=False)]
        if own:
            why = ("normalisation: general parameters only" if isinstance(m, NORMS) or type(m).__name__.endswith(
                "Norm") else f"uses its own parameters {own}: general only")
            self._kept(name, m, why)
        return m

    def _layer(self, name: str, m: nn.Module) -> Optional[nn.Module]:
        """The STN layer for a linear map (None when m is not one); unsupported maps are reported and kept."""
        H, conv1d = self.num_hypers, huggingface.conv1d_type()
        if isinstance(m, nn.modules.lazy.LazyModuleMixin) and m.has_uninitialized_params():
            raise ValueError(f"convert: {name!r} is a lazy module that has not been initialised; run one forward "
                             f"pass before converting")
        for base, build in ((nn.Linear, _linear), (nn.Conv2d, _conv), (nn.Embedding, _embedding)):
            if isinstance(m, base):
                if not _keeps_forward(m, base):
                    self.report.unsupported.append((name, type(m).__name__,
                                                    f"overrides {base.__name__}.forward, so its computation is "
                                                    f"unknown"))
                    return m
                return self._converted(name, m, build(m, H))
        if type(m) is nn.LSTM:
            return self._converted(name, m, _lstm(m, H))
        if conv1d is not None and isinstance(m, conv1d):
            return self._converted(name, m, _conv1d(m, H))
        if type(m) is nn.Hardsigmoid:
            return self._converted(name, m, Hardsigmoid(m.inplace))
        if type(m) is nn.GLU:
            return self._converted(name, m, GLU(m.dim))
        if type(m) is nn.MaxPool2d:
            return self._converted(name, m, MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation,
                                                      m.return_indices, m.ceil_mode))
        if isinstance(m, UNSUPPORTED):
            self.report.unsupported.append((name, type(m).__name__, f"no STN layer for {type(m).__name__}"))
            return m
        return None


def _tied_groups(model: nn.Module):
    by_weight: Dict[int, list] = {}
    for name, m in model.named_modules(remove_duplicate=False):
        if isinstance(m, StnLayer):
            by_weight.setdefault(id(m.weight), []).append(name or "(model)")
    return [tuple(dict.fromkeys(names)) for names in by_weight.values() if len(set(names)) > 1]


def convert(model: nn.Module, space_or_num_hypers, dropout: Optional[Mapping[str, str]] = None,
            skip: Callable[[str, nn.Module], bool] = lambda name, module: False, inplace: bool = False,
            verbose: bool = False) -> nn.Module:
    """The model with its linear maps as STN layers whose general weights are the original Parameters (so the
    converted model at h = 0 computes what the original did) and its dropout sites mapped to hyperparameters.

    space_or_num_hypers: the HyperSpace (or its size H).
    dropout: module name or fnmatch pattern (as in model.named_modules()) → hyperparameter name. An nn.Dropout
        becomes StnDropout, an nn.Dropout2d StnDropout2d; an attention module (nn.MultiheadAttention, torchvision's
        ShiftedWindowAttention, a Hugging Face attention module) gets that hyperparameter as the per-example drop
        probability of its attention weights. Every name must exist; every pattern must match.
    skip(name, module): True keeps that module and everything inside it as it is (e.g. the stem of a ResNet).
    verbose: print the report. The report is kept as `model.stn_conversion` (a ConversionReport).
    """
    num_hypers = space_or_num_hypers if isinstance(space_or_num_hypers, int) else len(space_or_num_hypers)
    model = model if inplace else copy.deepcopy(model)
    sites = _resolve_sites(dict(model.named_modules()), dict(dropout or {}))
    if not isinstance(space_or_num_hypers, int):
        unknown = sorted(set(sites.values()) - set(space_or_num_hypers.names))
        if unknown:
            raise KeyError(f"convert: dropout maps to unknown hyperparameters {unknown}; "
                           f"the space has {space_or_num_hypers.names}")
    report = ConversionReport()
    converter = _Converter(num_hypers, sites, skip, report)
    model = converter.module("", model)
    hidden = sorted(set(sites) - set(report.dropout))
    if hidden:
        raise ValueError(f"convert: dropout sites {hidden} lie inside modules that skip() keeps as they are")
    for name, m, switched in huggingface.use_fastdstn_attention(model):
        if switched:
            report.converted.append((name, f"{type(m).__name__} attention", repr(huggingface.IMPLEMENTATION)))
        else:
            report.kept.append((name, type(m).__name__, "its attention implementation cannot be switched to "
                                                        f"{huggingface.IMPLEMENTATION!r}"))
    report.tied = _tied_groups(model)
    if not isinstance(space_or_num_hypers, int):
        read = set().union(*(read_hypers(m) for m in model.modules()))
        report.unread = [n for n in space_or_num_hypers.names if n not in read]
    model.stn_conversion = report
    if verbose:
        print(report)
    return model
