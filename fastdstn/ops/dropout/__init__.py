"""Per-example dropout with a tangent (docs/METHOD.md §6): one keep mask on primal and tangent.

    dropout_dual(x, xt, rate, seed, batch_dim, shared_dims) -> (y, ẏ)

Backends: reference.py (the mask from torch.Generator), cpp.py (csrc/dropout/), triton.py (in-kernel Philox).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

from ...untraced import untraced
from .. import checks
from ..autocast import cast
from ..dispatch import resolve

Tensor = torch.Tensor

__all__ = ["dropout_dual"]


# Not traced by torch.compile: its checks read the rates' values (graph breaks), and every frame resumed after one
# would be guarded on the fresh mask seed of each call and recompiled each step (tests/method/test_compile.py).
@untraced
def dropout_dual(x: Tensor, xt: Optional[Tensor], rate: Tensor, seed: int, batch_dim: int = 0,
                 shared_dims: Sequence[int] = ()) -> Tuple[Tensor, Optional[Tensor]]:
    x, xt = cast("dropout_dual", x, xt)  # under autocast the tangent takes x's dtype
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
