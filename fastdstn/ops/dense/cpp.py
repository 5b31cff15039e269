"""The compiled dense ops (csrc/dense/): functions with the signatures of `reference.py`, each one op call, and
the ops' fake (meta) kernels.

Autograd (csrc/dense/dense_autograd.cpp). Every forward op returns auxiliary outputs, marked non-differentiable:
[s|t] = h·Vᵀ (which the backward op recomputes rather than keeps) and the response pre-activation
u = x·W_rᵀ or conv(x, W_r), which autograd saves for the backward. The backward op receives autograd's
needs_input_grad as a mask and computes only those gradients: in Δ-STN's response sub-step (x, W_g, b_g
frozen) the dual linear layer's backward runs two weight GEMMs, ∂ẋ = ∂ẏ·W_g and ∂W_r = (s⊙∂ẏ)ᵀ·x. When none
of x, W_g, b_g requires grad, the primal output y of a dual op is marked non-differentiable, so autograd does
not even carry a gradient along the primal chain. The formulas are C++ rather than
`torch.library.register_autograd` because the Python setup_context/backward cost ~110 µs per step, a third of
the whole step at (32, 256, 256).

The arguments were checked by `fastdstn.ops.dense` (the C++ ops check them again, with messages naming the
argument, for direct callers). The op overloads are bound once, at import, because `torch.ops.fastdstn.<op>`
costs an attribute walk. Import this module only when `fastdstn.ops.cpp.AVAILABLE`.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

from ..cpp import fake_grads

Tensor = torch.Tensor

_ops = torch.ops.fastdstn
_stn_linear, _stn_linear_dual = _ops.stn_linear.default, _ops.stn_linear_dual.default
_stn_conv2d, _stn_conv2d_dual = _ops.stn_conv2d.default, _ops.stn_conv2d_dual.default


def stn_linear(x: Tensor, h: Tensor, Wg: Tensor, bg: Optional[Tensor], Wr: Tensor, br: Optional[Tensor],
               V: Tensor) -> Tensor:
    return _stn_linear(x, h, Wg, bg, Wr, br, V)[0]


def stn_linear_dual(x: Tensor, xt: Optional[Tensor], eps: Tensor, Wg: Tensor, bg: Optional[Tensor], Wr: Tensor,
                    br: Optional[Tensor], V: Tensor) -> Tuple[Tensor, Tensor]:
    return _stn_linear_dual(x, xt, eps, Wg, bg, Wr, br, V)[:2]


def stn_conv2d(x: Tensor, h: Tensor, Wg: Tensor, bg: Optional[Tensor], Wr: Tensor, br: Optional[Tensor],
               V: Tensor, stride: Sequence[int] = (1, 1), padding: Sequence[int] = (0, 0),
               dilation: Sequence[int] = (1, 1), groups: int = 1) -> Tensor:
    return _stn_conv2d(x, h, Wg, bg, Wr, br, V, stride, padding, dilation, groups)[0]


def stn_conv2d_dual(x: Tensor, xt: Optional[Tensor], eps: Tensor, Wg: Tensor, bg: Optional[Tensor], Wr: Tensor,
                    br: Optional[Tensor], V: Tensor, stride: Sequence[int] = (1, 1), padding: Sequence[int] = (0, 0),
                    dilation: Sequence[int] = (1, 1), groups: int = 1) -> Tuple[Tensor, Tensor]:
    return _stn_conv2d_dual(x, xt, eps, Wg, bg, Wr, br, V, stride, padding, dilation, groups)[:2]


# ----------------------------------------------------------------------------- fake kernels
def _conv_out(x: Tensor, weight: Tensor, stride, padding, dilation) -> Tuple:
    def one(size, kernel, step, pad, spacing):
        return (size + 2 * pad - spacing * (kernel - 1) - 1) // step + 1
    return (one(x.shape[2], weight.shape[2], stride[0], padding[0], dilation[0]),
            one(x.shape[3], weight.shape[3], stride[1], padding[1], dilation[1]))


def _bias_like(Wg: Tensor, has_bg: bool) -> Optional[Tensor]:
    return Wg.new_empty(Wg.shape[0]) if has_bg else None


def _register_fakes() -> None:
    reg = torch.library.register_fake

    @reg("fastdstn::stn_linear")
    def _(x, h, Wg, bg, Wr, br, V):
        B, C = x.shape[0], Wg.shape[0]
        return x.new_empty(B, C), x.new_empty(B, V.shape[0]), x.new_empty(B, C)

    @reg("fastdstn::stn_linear_backward")
    def _(gy, x, h, Wg, Wr, br, V, u, has_bg, mask):
        return tuple(fake_grads(x, (x, h, Wg, _bias_like(Wg, has_bg), Wr, br, V), mask))

    @reg("fastdstn::stn_linear_dual")
    def _(x, xt, eps, Wg, bg, Wr, br, V):
        B, C = x.shape[0], Wg.shape[0]
        return x.new_empty(B, C), x.new_empty(B, C), x.new_empty(B, V.shape[0]), x.new_empty(B, C)

    @reg("fastdstn::stn_linear_dual_backward")
    def _(gy, gyt, x, xt, eps, Wg, Wr, br, V, u, has_bg, mask):
        return tuple(fake_grads(x, (x, xt, eps, Wg, _bias_like(Wg, has_bg), Wr, br, V), mask))

    @reg("fastdstn::stn_conv2d")
    def _(x, h, Wg, bg, Wr, br, V, stride, padding, dilation, groups):
        B, C = x.shape[0], Wg.shape[0]
        Ho, Wo = _conv_out(x, Wg, stride, padding, dilation)
        return x.new_empty(B, C, Ho, Wo), x.new_empty(B, V.shape[0]), x.new_empty(B, C, Ho, Wo)

    @reg("fastdstn::stn_conv2d_backward")
    def _(gy, x, h, Wg, Wr, br, V, u, stride, padding, dilation, groups, has_bg, mask):
        return tuple(fake_grads(x, (x, h, Wg, _bias_like(Wg, has_bg), Wr, br, V), mask))

    @reg("fastdstn::stn_conv2d_dual")
    def _(x, xt, eps, Wg, bg, Wr, br, V, stride, padding, dilation, groups):
        B, C = x.shape[0], Wg.shape[0]
        Ho, Wo = _conv_out(x, Wg, stride, padding, dilation)
        return (x.new_empty(B, C, Ho, Wo), x.new_empty(B, C, Ho, Wo), x.new_empty(B, V.shape[0]),
                x.new_empty(B, C, Ho, Wo))

    @reg("fastdstn::stn_conv2d_dual_backward")
    def _(gy, gyt, x, xt, eps, Wg, Wr, br, V, u, stride, padding, dilation, groups, has_bg, mask):
        return tuple(fake_grads(x, (x, xt, eps, Wg, _bias_like(Wg, has_bg), Wr, br, V), mask))

    @reg("fastdstn::_dense_mm")
    def _(a, b):
        return a.new_empty(a.shape[0], b.shape[1])

    @reg("fastdstn::_linear_products")
    def _(x, xt, Wg, Wr):
        B, C = x.shape[0], Wg.shape[0]
        return x.new_empty(B, C), x.new_empty(B, C), (x.new_empty(B, C) if xt is not None else x.new_empty(0))


_register_fakes()
