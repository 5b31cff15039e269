"""The dense STN ops: linear and conv2d layers, nonlinear and dual (docs/METHOD.md §3, §5).

    stn_linear(x, h, Wg, bg, Wr, br, V)                     -> y
    stn_linear_dual(x, xt, eps, Wg, bg, Wr, br, V)          -> (y, ẏ)
    stn_conv2d(x, h, Wg, bg, Wr, br, V, stride, padding, dilation, groups)          -> y
    stn_conv2d_dual(x, xt, eps, Wg, bg, Wr, br, V, stride, padding, dilation, groups) -> (y, ẏ)

Each casts its arguments by its autocast rule (fastdstn.ops.autocast: the autocast dtype), checks them, then
runs the backend `dispatch` picks: reference.py (the formulas, shapes in its
docstring), cpp.py (csrc/dense/), triton.py (linear) and triton_conv.py (conv2d).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
from torch.nn.modules.utils import _pair

from .. import checks
from ..autocast import cast
from ..dispatch import resolve

Tensor = torch.Tensor
IntPair = Union[int, Sequence[int]]

__all__ = ["stn_linear", "stn_linear_dual", "stn_conv2d", "stn_conv2d_dual"]


def _check(x: Tensor, xt: Optional[Tensor], h_name: str, h: Tensor, Wg: Tensor, bg: Optional[Tensor],
           Wr: Tensor, br: Optional[Tensor], V: Tensor, spatial: bool) -> None:
    """Checks the arguments of stn_linear(_dual) (spatial=False) and stn_conv2d(_dual) (spatial=True)."""
    checks.require_tensor("x", x, ndim=4 if spatial else 2)
    checks.require_tensor("Wg", Wg, ndim=4 if spatial else 2)
    checks.require_tensor("Wr", Wr)
    checks.require_shape("Wr", Wr, Wg.shape, "the shape of Wg")
    out = Wg.shape[0]
    if not spatial and x.shape[1] != Wg.shape[1]:
        raise ValueError(f"x: expected {Wg.shape[1]} input features (Wg is {tuple(Wg.shape)}), "
                         f"received {checks.describe(x)}")
    if xt is not None:
        checks.require_tensor("xt", xt)
        checks.require_shape("xt", xt, x.shape, "the shape of x")
    for name, b in (("bg", bg), ("br", br)):
        if b is not None:
            checks.require_tensor(name, b, ndim=1)
            checks.require_shape(name, b, (out,), "one entry per output unit")
    checks.check_hyper_projection(V, h_name, h, out, br is not None)
    if h.shape[0] != x.shape[0]:
        raise ValueError(f"{h_name}: expected {x.shape[0]} rows (one per example of x), "
                         f"received {checks.describe(h)}")
    checks.require_same_kind("x", x, xt=xt, **{h_name: h}, Wg=Wg, bg=bg, Wr=Wr, br=br, V=V)


def _check_conv_geometry(x: Tensor, Wg: Tensor, groups: int) -> None:
    if x.shape[1] != Wg.shape[1] * groups:
        raise ValueError(f"x: expected {Wg.shape[1] * groups} input channels (Wg is {tuple(Wg.shape)}, "
                         f"groups={groups}), received {checks.describe(x)}")


def stn_linear(x: Tensor, h: Tensor, Wg: Tensor, bg: Optional[Tensor], Wr: Tensor, br: Optional[Tensor],
               V: Tensor) -> Tensor:
    x, h, Wg, bg, Wr, br, V = cast("stn_linear", x, h, Wg, bg, Wr, br, V)
    _check(x, None, "h", h, Wg, bg, Wr, br, V, spatial=False)
    return resolve("stn_linear", x)(x, h, Wg, bg, Wr, br, V)


def stn_linear_dual(x: Tensor, xt: Optional[Tensor], eps: Tensor, Wg: Tensor, bg: Optional[Tensor], Wr: Tensor,
                    br: Optional[Tensor], V: Tensor) -> Tuple[Tensor, Tensor]:
    x, xt, eps, Wg, bg, Wr, br, V = cast("stn_linear_dual", x, xt, eps, Wg, bg, Wr, br, V)
    _check(x, xt, "eps", eps, Wg, bg, Wr, br, V, spatial=False)
    return resolve("stn_linear_dual", x)(x, xt, eps, Wg, bg, Wr, br, V)


def _geometry(stride: IntPair, padding: IntPair, dilation: IntPair, groups: int):
    if isinstance(padding, str):
        raise ValueError(f"padding: expected an int or a pair of ints, received {padding!r}; "
                         f"StnConv2d resolves string padding before calling the op")
    return tuple(_pair(stride)), tuple(_pair(padding)), tuple(_pair(dilation)), int(groups)


def stn_conv2d(x: Tensor, h: Tensor, Wg: Tensor, bg: Optional[Tensor], Wr: Tensor, br: Optional[Tensor],
               V: Tensor, stride: IntPair = 1, padding: IntPair = 0, dilation: IntPair = 1,
               groups: int = 1) -> Tensor:
    x, h, Wg, bg, Wr, br, V = cast("stn_conv2d", x, h, Wg, bg, Wr, br, V)
    _check(x, None, "h", h, Wg, bg, Wr, br, V, spatial=True)
    _check_conv_geometry(x, Wg, groups)
    return resolve("stn_conv2d", x)(x, h, Wg, bg, Wr, br, V, *_geometry(stride, padding, dilation, groups))


def stn_conv2d_dual(x: Tensor, xt: Optional[Tensor], eps: Tensor, Wg: Tensor, bg: Optional[Tensor], Wr: Tensor,
                    br: Optional[Tensor], V: Tensor, stride: IntPair = 1, padding: IntPair = 0,
                    dilation: IntPair = 1, groups: int = 1) -> Tuple[Tensor, Tensor]:
    x, xt, eps, Wg, bg, Wr, br, V = cast("stn_conv2d_dual", x, xt, eps, Wg, bg, Wr, br, V)
    _check(x, xt, "eps", eps, Wg, bg, Wr, br, V, spatial=True)
    _check_conv_geometry(x, Wg, groups)
    return resolve("stn_conv2d_dual", x)(x, xt, eps, Wg, bg, Wr, br, V,
                                         *_geometry(stride, padding, dilation, groups))
