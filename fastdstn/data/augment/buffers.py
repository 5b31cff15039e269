"""Tensors kept between calls: scratch buffers by role, and cached constant tensors."""
from __future__ import annotations

import math
from typing import Dict, Sequence, Tuple

import torch

Tensor = torch.Tensor


class _Fresh:
    """Scratch tensors by role: new ones on every request (the public functions, which keep no state)."""

    def get(self, name: str, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> Tensor:
        return torch.empty(tuple(shape), dtype=dtype, device=device)


class _Kept(_Fresh):
    """Scratch tensors kept between calls, one per role, grown when a call needs more. A fresh 1.5 MB CPU
    buffer costs page faults whenever glibc has handed the memory back to the OS (it trims freed memory at the
    top of the heap): up to ≈1000 faults per Augmenter call were counted right after the per-image loops of
    benchmarks/bench_augment.py, none with kept buffers. Only the result is then a new tensor. Callers must
    not use two tensors of the same role at once."""

    def __init__(self) -> None:
        self._held: Dict[str, Tensor] = {}  # role → flat buffer
        self._last: Dict[str, Tuple[Tuple[object, ...], Tensor]] = {}  # role → (request, view) of the last get

    def get(self, name: str, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> Tensor:
        request = (tuple(shape), dtype, device)
        last = self._last.get(name)
        if last is not None and last[0] == request:  # the common case: the same request as last time
            return last[1]
        need = math.prod(request[0])
        buf = self._held.get(name)
        if buf is None or buf.numel() < need or buf.dtype != dtype or buf.device != device:
            buf = self._held[name] = torch.empty(need, dtype=dtype, device=device)
        view = buf[:need].view(request[0])
        self._last[name] = (request, view)
        return view


_FRESH = _Fresh()


_CONSTANTS: Dict[Tuple[Tuple[float, ...], torch.device, torch.dtype], Tensor] = {}


def _constant(values: Tuple[float, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    """A cached (1, len(values), 1, 1) tensor: building it is a host-to-tensor copy (≈5 µs) per call."""
    key = (values, device, dtype)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = torch.tensor(values, device=device, dtype=dtype).view(1, -1, 1, 1)
    return _CONSTANTS[key]
