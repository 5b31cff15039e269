"""The LSTM cell with tangents (docs/METHOD.md §5): one pointwise step on the gate pre-activations.

    lstm_cell_dual(gates, gates_t, c, c_t) -> (h, ḣ, c, ċ)

Backends: reference.py (the formula), cpp.py (csrc/lstm_cell/), triton.py.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .. import checks
from ..autocast import cast
from ..dispatch import resolve

Tensor = torch.Tensor

__all__ = ["lstm_cell_dual"]


def lstm_cell_dual(gates: Tensor, gates_t: Optional[Tensor], c: Tensor,
                   c_t: Optional[Tensor]) -> Tuple[Tensor, Optional[Tensor], Tensor, Optional[Tensor]]:
    gates, gates_t, c, c_t = cast("lstm_cell_dual", gates, gates_t, c, c_t)  # float32 under autocast
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
