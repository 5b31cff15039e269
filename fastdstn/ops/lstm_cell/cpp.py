"""The compiled LSTM cell (csrc/lstm_cell/): a function with the signature of `reference.lstm_cell_dual`, one op
call, and the op's fake (meta) kernels. Import only when `fastdstn.ops.cpp.AVAILABLE`."""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..cpp import fake_grads

Tensor = torch.Tensor

_lstm_cell_dual = torch.ops.fastdstn.lstm_cell_dual.default


def lstm_cell_dual(gates: Tensor, gates_t: Optional[Tensor], c: Tensor,
                   c_t: Optional[Tensor]) -> Tuple[Tensor, Optional[Tensor], Tensor, Optional[Tensor]]:
    h, ht, c_new, ct = _lstm_cell_dual(gates, gates_t, c, c_t)
    if gates_t is None and c_t is None:
        return h, None, c_new, None
    return h, ht, c_new, ct


def _register_fakes() -> None:
    reg = torch.library.register_fake

    @reg("fastdstn::lstm_cell_dual")
    def _(gates, gates_t, c, c_t):
        dual = gates_t is not None or c_t is not None
        tangent = (lambda: c.new_empty(c.shape)) if dual else (lambda: c.new_empty(0))
        return c.new_empty(c.shape), tangent(), c.new_empty(c.shape), tangent()

    @reg("fastdstn::lstm_cell_dual_backward")
    def _(gh, ght, gc, gct, gates, gates_t, c, c_t, mask):
        return tuple(fake_grads(gates, (gates, gates_t, c, c_t), mask))


_register_fakes()
