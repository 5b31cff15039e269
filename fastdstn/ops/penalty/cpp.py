"""The compiled penalty passes (csrc/penalty/): functions with the signatures of reference.py, one op call each,
and the ops' fake (meta) kernels. Import only when `fastdstn.ops.cpp.AVAILABLE`.

CPU only (DEVICE_TYPES): no CUDA kernel was written, so on a GPU the reference's ATen kernels run these passes.
On a CPU each of their passes was a trip to memory for weights that do not stay in cache (ResNet-18's penalty and
gradient: 31.7 ms with ATen's expressions, 16.8 ms compiled, 2 threads: `python benchmarks/bench_ops_cpp.py
--only penalty`).
"""
from __future__ import annotations

import torch

Tensor = torch.Tensor

DEVICE_TYPES = ("cpu",)

_row_sums = torch.ops.fastdstn.penalty_row_sums.default
_row_combination = torch.ops.fastdstn.penalty_row_combination.default


def penalty_row_sums(g: Tensor, r: Tensor) -> Tensor:
    return _row_sums(g, r)


def penalty_row_combination(a: Tensor, g: Tensor, b: Tensor, r: Tensor) -> Tensor:
    return _row_combination(a, g, b, r)


@torch.library.register_fake("fastdstn::penalty_row_sums")
def _(g, r):
    return g.new_empty((3, g.shape[0]))


@torch.library.register_fake("fastdstn::penalty_row_combination")
def _(a, g, b, r):
    return torch.empty(g.shape, dtype=g.dtype, device=g.device)
