"""The compiled dropout (csrc/dropout/): a function with the signature of `reference.dropout_dual`, one op call,
and the op's fake (meta) kernel. Import only when `fastdstn.ops.cpp.AVAILABLE`."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

Tensor = torch.Tensor

_dropout_dual = torch.ops.fastdstn.dropout_dual.default


def dropout_dual(x: Tensor, xt: Optional[Tensor], rate: Tensor, seed: int, batch_dim: int = 0,
                 shared_dims: Sequence[int] = ()) -> Tuple[Tensor, Optional[Tensor]]:
    y, yt = _dropout_dual(x, xt, rate, seed, batch_dim, shared_dims)
    return y, (None if xt is None else yt)


@torch.library.register_fake("fastdstn::dropout_dual")
def _(x, xt, rate, seed, batch_dim, shared_dims):
    return x.new_empty(x.shape), (x.new_empty(x.shape) if xt is not None else x.new_empty(0))
