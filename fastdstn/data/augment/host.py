"""Between the images and the host: tensors read into NumPy, random draws on the host, per-example flags
applied back to the batch. A NumPy op on 128 numbers costs ≈1 µs against 3–8 µs for a torch op, so the
per-example parameters are computed here (see the package docstring)."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

Tensor = torch.Tensor


def _host(t: Tensor) -> np.ndarray:
    """t as a NumPy array: no copy for a CPU tensor, one device-to-host read otherwise."""
    return t.detach().cpu().numpy()


def _uniform(shape: Sequence[int], generator: Optional[torch.Generator], device: torch.device) -> np.ndarray:
    """U[0, 1) float32 from `generator` (drawn on its device) or the global RNG of `device`, on the host."""
    where = generator.device if generator is not None else device
    return _host(torch.rand(tuple(shape), generator=generator, device=where))


def _integers(high: int, shape: Sequence[int], generator: Optional[torch.Generator],
              device: torch.device) -> np.ndarray:
    where = generator.device if generator is not None else device
    return _host(torch.randint(0, high, tuple(shape), generator=generator, device=where))


def _per_example(values: Tensor) -> Tensor:
    return values.view(-1, 1, 1, 1)


def _keep_inactive(out: Tensor, images: Tensor, active: np.ndarray) -> Tensor:
    """out where active (B,), else images, bit for bit. The common all-active case skips the select: a
    broadcast where costs 7x a multiply here (0.29 vs 0.04 ms, 128×3×32×32)."""
    if active.all():
        return out
    return torch.where(_per_example(torch.from_numpy(active).to(out.device)), out, images)
