"""Activations whose forward-mode rule PyTorch cannot differentiate, with one that it can.

Δ-STN's response sub-step back-propagates through the tangents of its dual pass, i.e. through each op's
forward-mode rule. For every activation of torch.nn that rule is differentiable except two (torch 2.14, float32
and float64, tests/nn/test_activations.py enumerates them all):

    Hardsigmoid  ẏ = hardsigmoid_backward(ẋ, x):  "derivative for aten::hardsigmoid_backward is not implemented"
    GLU          ẏ = glu_jvp(...):                 "derivative for aten::glu_jvp is not implemented"

`hardsigmoid` and `glu` below compute the primal with PyTorch's op and the tangent with differentiable ops;
outside a dual pass they are PyTorch's functions. `convert` puts the modules in place of nn.Hardsigmoid and nn.GLU
(MobileNetV3's squeeze-excitation uses Hardsigmoid); model code that calls F.hardsigmoid or F.glu directly calls
these instead.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import join_dual, split_dual

Tensor = torch.Tensor


def hardsigmoid(x: Tensor, inplace: bool = False) -> Tensor:
    """F.hardsigmoid (relu6(x + 3) / 6), with ẏ = ẋ/6 where −3 < x < 3 and 0 elsewhere."""
    primal, tangent = split_dual(x)
    if tangent is None:
        return F.hardsigmoid(x, inplace)
    slope = ((primal > -3) & (primal < 3)).to(primal.dtype) / 6
    return join_dual(F.hardsigmoid(primal), tangent * slope)


def glu(x: Tensor, dim: int = -1) -> Tensor:
    """F.glu: a ⊙ σ(b) for the halves (a, b) of x along dim, with ẏ = ȧ ⊙ σ(b) + a ⊙ σ(b)(1 − σ(b)) ⊙ ḃ."""
    primal, tangent = split_dual(x)
    if tangent is None:
        return F.glu(x, dim)
    a, b = primal.chunk(2, dim)
    a_t, b_t = tangent.chunk(2, dim)
    gate = torch.sigmoid(b)
    return join_dual(a * gate, a_t * gate + a * (gate * (1 - gate)) * b_t)


class Hardsigmoid(nn.Hardsigmoid):
    """nn.Hardsigmoid with a differentiable tangent (see the module docstring)."""

    def forward(self, x: Tensor) -> Tensor:
        return hardsigmoid(x, self.inplace)


class GLU(nn.GLU):
    """nn.GLU with a differentiable tangent (see the module docstring)."""

    def forward(self, x: Tensor) -> Tensor:
        return glu(x, self.dim)
