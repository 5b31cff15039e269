"""Pure-PyTorch reference of per-example dropout with a tangent (docs/METHOD.md §6)."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

Tensor = torch.Tensor


def dropout_keep_mask(shape: Sequence[int], rate: Tensor, batch_dim: int, seed: int,
                      device: torch.device, dtype: torch.dtype) -> Tensor:
    """Scaled keep mask Bernoulli(1 − p_i)/(1 − p_i) of `shape`, example i's rate p_i = rate[i].

    Dimensions of `shape` equal to 1 share one draw (channel dropout: spatial dims are 1;
    locked dropout: the time dimension is 1). The draw depends only on (seed, shape, device).
    """
    generator = torch.Generator(device=device).manual_seed(seed)
    uniform = torch.rand(tuple(shape), generator=generator, device=device, dtype=dtype)
    view = [1] * len(shape)
    view[batch_dim] = rate.shape[0]
    p = rate.to(dtype).reshape(view)
    return (uniform >= p).to(dtype) / (1 - p)


def dropout_dual(x: Tensor, xt: Optional[Tensor], rate: Tensor, seed: int, batch_dim: int = 0,
                 shared_dims: Sequence[int] = ()) -> Tuple[Tensor, Optional[Tensor]]:
    """Per-example dropout with the same mask on primal and tangent.

    rate: (x.shape[batch_dim],) drop probabilities in [0, 1); shared_dims: dims of x over which one
    draw is shared (e.g. (2, 3) for channel dropout of images, (0,) for locked dropout of (T, B, D)).
    """
    shape = [1 if d in shared_dims else n for d, n in enumerate(x.shape)]
    mask = dropout_keep_mask(shape, rate, batch_dim, seed, x.device, x.dtype)
    return x * mask, (None if xt is None else xt * mask)
