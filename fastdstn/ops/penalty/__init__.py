"""The weight-sized passes of the tuned L2 penalty ‖W_g + diag(s)·W_r‖² (docs/METHOD.md §6), which
`fastdstn.nn.weight_penalty` differentiates:

    penalty_row_sums(g, r)                  -> (3, rows): ‖g_k‖², ⟨g_k, r_k⟩, ‖r_k‖² for each row k
    penalty_row_combination(a, g, b, r)     -> a_k·g_k + b_k·r_k for each row k, in g's shape

g and r: weights of one shape, their rows (output units) along dim 0; a and b: one coefficient per row. Neither
op is differentiable itself: the penalty's gradient is a row combination, and the penalty's autograd Function
(fastdstn/nn/groups.py) calls the second op in its backward.

Backends (`dispatch` picks): `reference` (ATen expressions, any device and dtype) and `cpp` (CPU, float32 and
float64: each op one pass over the weights, csrc/penalty/).
"""
from __future__ import annotations

import torch

from .. import checks
from ..dispatch import resolve

Tensor = torch.Tensor

__all__ = ["penalty_row_sums", "penalty_row_combination"]


def _check_weights(g: Tensor, r: Tensor) -> None:
    checks.require_tensor("g", g)
    if g.dim() < 1:
        raise ValueError(f"g: expected a weight with its rows (output units) along dim 0, received {checks.describe(g)}")
    checks.require_tensor("r", r)
    checks.require_shape("r", r, g.shape, "the shape of g")
    checks.require_same_kind("g", g, r=r)


def _check_rows(name: str, c: Tensor, g: Tensor) -> None:
    checks.require_tensor(name, c, ndim=1)
    checks.require_shape(name, c, (g.shape[0],), "one coefficient per row of g")
    if c.device != g.device:
        raise ValueError(f"{name}: expected device {g.device} (the device of g), received {c.device}")


def penalty_row_sums(g: Tensor, r: Tensor) -> Tensor:
    _check_weights(g, r)
    return resolve("penalty_row_sums", g)(g, r)


def penalty_row_combination(a: Tensor, g: Tensor, b: Tensor, r: Tensor) -> Tensor:
    _check_weights(g, r)
    _check_rows("a", a, g)
    _check_rows("b", b, g)
    return resolve("penalty_row_combination", g)(a, g, b, r)
