"""Pure-PyTorch reference of the LSTM cell with tangents (the dual pass of docs/METHOD.md §5)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch

Tensor = torch.Tensor


def lstm_cell_dual(gates: Tensor, gates_t: Optional[Tensor], c: Tensor,
                   c_t: Optional[Tensor]) -> Tuple[Tensor, Optional[Tensor], Tensor, Optional[Tensor]]:
    """Pointwise LSTM step on pre-activations `gates` (N, 4·hidden), order i, f, g, o.

    c' = σ(f)·c + σ(i)·tanh(g), h' = σ(o)·tanh(c'), with the tangents (ḣ', ċ') when either
    gates_t or c_t is given (a missing tangent is zero); otherwise the tangents are None.
    """
    i, f, g, o = gates.chunk(4, dim=1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c_new = f * c + i * g
    tanh_c = torch.tanh(c_new)
    h_new = o * tanh_c
    if gates_t is None and c_t is None:
        return h_new, None, c_new, None
    c_new_t = torch.zeros_like(c_new) if c_t is None else f * c_t
    if gates_t is not None:
        it, ft, gt, ot = gates_t.chunk(4, dim=1)
        c_new_t = c_new_t + (f * (1 - f) * ft) * c + (i * (1 - i) * it) * g + i * ((1 - g * g) * gt)
        h_new_t = (o * (1 - o) * ot) * tanh_c + o * ((1 - tanh_c * tanh_c) * c_new_t)
    else:
        h_new_t = o * ((1 - tanh_c * tanh_c) * c_new_t)
    return h_new, h_new_t, c_new, c_new_t
