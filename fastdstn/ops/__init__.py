"""Functional STN ops: check the arguments, then run the selected backend (see `backends`).

    stn_linear(x, h, Wg, bg, Wr, br, V)                     -> y
    stn_linear_dual(x, xt, eps, Wg, bg, Wr, br, V)          -> (y, ẏ)
    stn_conv2d(x, h, Wg, bg, Wr, br, V, stride, padding, dilation, groups)          -> y
    stn_conv2d_dual(x, xt, eps, Wg, bg, Wr, br, V, stride, padding, dilation, groups) -> (y, ẏ)
    stn_embedding(tokens, h, Eg, Er, V) / stn_embedding_dual(tokens, eps, Eg, Er, V)
    lstm_cell_dual(gates, gates_t, c, c_t)                  -> (h, ḣ, c, ċ)
    dropout_dual(x, xt, rate, seed, batch_dim, shared_dims) -> (y, ẏ)
    attention_dual(q, k, v, qt, kt, vt, attn_mask, is_causal, scale, dropout_rate, seed) -> (O, Ȯ)
    attention_with_dropout(q, k, v, attn_mask, is_causal, scale, dropout_rate, seed)    -> O

Shapes and formulas: `fastdstn.ops.reference` (attention: `fastdstn.ops.attention.reference`).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
from torch.nn.modules.utils import _pair

from . import checks, reference
from .attention import attention_dual, attention_with_dropout
from .backends import available, current_backend, resolve, use_backend

Tensor = torch.Tensor
IntPair = Union[int, Sequence[int]]

__all__ = ["stn_linear", "stn_linear_dual", "stn_conv2d", "stn_conv2d_dual", "stn_embedding",
           "stn_embedding_dual", "lstm_cell_dual", "dropout_dual", "attention_dual", "attention_with_dropout",
           "use_backend", "current_backend", "available", "reference"]


def stn_linear(x: Tensor, h: Tensor, Wg: Tensor, bg: Optional[Tensor], Wr: Tensor, br: Optional[Tensor],
               V: Tensor) -> Tensor:
    checks.check_dense(x, None, "h", h, Wg, bg, Wr, br, V, spatial=False)
    return resolve("stn_linear", x)(x, h, Wg, bg, Wr, br, V)


def stn_linear_dual(x: Tensor, xt: Optional[Tensor], eps: Tensor, Wg: Tensor, bg: Optional[Tensor], Wr: Tensor,
                    br: Optional[Tensor], V: Tensor) -> Tuple[Tensor, Tensor]:
    checks.check_dense(x, xt, "eps", eps, Wg, bg, Wr, br, V, spatial=False)
    return resolve("stn_linear_dual", x)(x, xt, eps, Wg, bg, Wr, br, V)


def _geometry(stride: IntPair, padding: IntPair, dilation: IntPair, groups: int):
    if isinstance(padding, str):
        raise ValueError(f"padding: expected an int or a pair of ints, received {padding!r}; "
                         f"StnConv2d resolves string padding before calling the op")
    return tuple(_pair(stride)), tuple(_pair(padding)), tuple(_pair(dilation)), int(groups)


def stn_conv2d(x: Tensor, h: Tensor, Wg: Tensor, bg: Optional[Tensor], Wr: Tensor, br: Optional[Tensor],
               V: Tensor, stride: IntPair = 1, padding: IntPair = 0, dilation: IntPair = 1,
               groups: int = 1) -> Tensor:
    checks.check_dense(x, None, "h", h, Wg, bg, Wr, br, V, spatial=True)
    checks.check_conv_geometry(x, Wg, groups)
    return resolve("stn_conv2d", x)(x, h, Wg, bg, Wr, br, V,
                                                *_geometry(stride, padding, dilation, groups))


def stn_conv2d_dual(x: Tensor, xt: Optional[Tensor], eps: Tensor, Wg: Tensor, bg: Optional[Tensor], Wr: Tensor,
                    br: Optional[Tensor], V: Tensor, stride: IntPair = 1, padding: IntPair = 0,
                    dilation: IntPair = 1, groups: int = 1) -> Tuple[Tensor, Tensor]:
    checks.check_dense(x, xt, "eps", eps, Wg, bg, Wr, br, V, spatial=True)
    checks.check_conv_geometry(x, Wg, groups)
    return resolve("stn_conv2d_dual", x)(x, xt, eps, Wg, bg, Wr, br, V,
                                                     *_geometry(stride, padding, dilation, groups))


def _check_embedding(tokens: Tensor, h_name: str, h: Tensor, Eg: Tensor, Er: Tensor, V: Tensor) -> None:
    checks.require_tensor("tokens", tokens, ndim=1, floating=False)
    checks.require_tensor("Eg", Eg, ndim=2)
    checks.require_shape("Er", Er, Eg.shape, "the shape of Eg")
    checks.check_hyper_projection(V, h_name, h, Eg.shape[1], has_bias=False)
    if h.shape[0] != tokens.shape[0]:
        raise ValueError(f"{h_name}: expected {tokens.shape[0]} rows (one per token), received shape {tuple(h.shape)}")
    checks.require_same_kind("Eg", Eg, Er=Er, V=V, **{h_name: h})


def stn_embedding(tokens: Tensor, h: Tensor, Eg: Tensor, Er: Tensor, V: Tensor) -> Tensor:
    _check_embedding(tokens, "h", h, Eg, Er, V)
    return resolve("stn_embedding", Eg)(tokens, h, Eg, Er, V)


def stn_embedding_dual(tokens: Tensor, eps: Tensor, Eg: Tensor, Er: Tensor, V: Tensor) -> Tuple[Tensor, Tensor]:
    _check_embedding(tokens, "eps", eps, Eg, Er, V)
    return resolve("stn_embedding_dual", Eg)(tokens, eps, Eg, Er, V)


def lstm_cell_dual(gates: Tensor, gates_t: Optional[Tensor], c: Tensor, c_t: Optional[Tensor]):
    checks.require_tensor("gates", gates, ndim=2)
    checks.require_tensor("c", c, ndim=2)
    if gates.shape[1] != 4 * c.shape[1] or gates.shape[0] != c.shape[0]:
        raise ValueError(f"gates: expected shape ({c.shape[0]}, {4 * c.shape[1]}) (4 gates per hidden unit of c), "
                         f"received {tuple(gates.shape)}")
    if gates_t is not None:
        checks.require_shape("gates_t", gates_t, gates.shape, "the shape of gates")
    if c_t is not None:
        checks.require_shape("c_t", c_t, c.shape, "the shape of c")
    checks.require_same_kind("gates", gates, gates_t=gates_t, c=c, c_t=c_t)
    return resolve("lstm_cell_dual", gates)(gates, gates_t, c, c_t)


def dropout_dual(x: Tensor, xt: Optional[Tensor], rate: Tensor, seed: int, batch_dim: int = 0,
                 shared_dims: Sequence[int] = ()) -> Tuple[Tensor, Optional[Tensor]]:
    checks.require_tensor("x", x)
    if not -x.dim() <= batch_dim < x.dim():
        raise ValueError(f"batch_dim: expected a dimension of x (shape {tuple(x.shape)}), received {batch_dim}")
    batch_dim %= x.dim()
    outside = [d for d in shared_dims if not -x.dim() <= d < x.dim()]
    if outside:
        raise ValueError(f"shared_dims: expected dimensions of x (shape {tuple(x.shape)}), received "
                         f"{tuple(shared_dims)}")
    shared = tuple(sorted(d % x.dim() for d in shared_dims))
    if batch_dim in shared:
        raise ValueError(f"shared_dims: must not contain the batch dimension {batch_dim}, received {tuple(shared_dims)}")
    checks.check_rate(rate, x.shape[batch_dim])
    if xt is not None:
        checks.require_shape("xt", xt, x.shape, "the shape of x")
    checks.require_same_kind("x", x, xt=xt)
    if rate.device != x.device:
        raise ValueError(f"rate: expected device {x.device} (the device of x), received {rate.device}")
    return resolve("dropout_dual", x)(x, xt, rate, int(seed), batch_dim, shared)
