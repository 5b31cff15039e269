"""Triton kernel of dropout_dual: per-example dropout with in-kernel Philox, the same mask on primal and tangent.

The keep mask is never materialized. Element e of x reads the uniform number tl.rand(seed, j) where j is e's
index in the *mask shape* (x's shape with each shared dim set to 1), so elements that share a draw (channel /
locked dropout) read the same Philox counter and agree by construction. The primal and the tangent are scaled in
the same pass (one read of x, ẋ and the rates, one write of y, ẏ: the fewest bytes). Dropout is linear in x with
a fixed mask, so its backward is the same kernel on (∂y, ∂ẏ) with the same seed: no mask is saved either.
The rates get no gradient: docs/METHOD.md §2 — rates consumed by regularizers are detached.
The random stream differs from `reference.dropout_keep_mask` (torch.Generator): the law is the same
(Bernoulli(1 − p_i)/(1 − p_i), one draw per mask element, a function of (seed, mask shape) only).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from .. import triton_config
from . import reference

Tensor = torch.Tensor


@triton.jit
def _dropout_dual_kernel(x_ptr, xt_ptr, rate_ptr, y_ptr, yt_ptr, numel, seed,
                         S1, S2, S3, M0, M1, M2, M3,
                         HAS_XT: tl.constexpr, BATCH: tl.constexpr, BLOCK: tl.constexpr):
    """x viewed as a contiguous (S0, S1, S2, S3) array; M_d is dim d's stride in the mask shape (0 when
    shared); BATCH is the dim holding the examples."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < numel
    i3 = offs % S3
    r = offs // S3
    i2 = r % S2
    r = r // S2
    i1 = r % S1
    i0 = r // S1
    j = i0 * M0 + i1 * M1 + i2 * M2 + i3 * M3
    if BATCH == 0:
        example = i0
    elif BATCH == 1:
        example = i1
    elif BATCH == 2:
        example = i2
    else:
        example = i3
    p = tl.load(rate_ptr + example, mask=valid, other=0.0).to(tl.float32)
    keep = tl.rand(seed, j) >= p
    scale = tl.where(keep, 1.0 / (1.0 - p), 0.0)
    x = tl.load(x_ptr + offs, mask=valid, other=0.0)
    tl.store(y_ptr + offs, (x.to(tl.float32) * scale).to(y_ptr.dtype.element_ty), mask=valid)
    if HAS_XT:
        xt = tl.load(xt_ptr + offs, mask=valid, other=0.0)
        tl.store(yt_ptr + offs, (xt.to(tl.float32) * scale).to(yt_ptr.dtype.element_ty), mask=valid)


def _dropout_geometry(shape: Sequence[int], batch_dim: int, shared: Sequence[int]):
    """Merge x's dims into at most 4 groups: (sizes, mask strides, batch group), or None if it cannot.

    Adjacent dims merge when both are shared or both are plain non-batch dims; the batch dim stays alone.
    """
    groups: List[List] = []  # [size, kind] with kind "b" (batch), "s" (shared), "k" (kept)
    for d, n in enumerate(shape):
        kind = "b" if d == batch_dim else ("s" if d in shared else "k")
        if groups and kind != "b" and groups[-1][1] == kind:
            groups[-1][0] *= n
        else:
            groups.append([n, kind])
    if len(groups) > 4:
        return None
    groups = [[1, "k"]] * (4 - len(groups)) + groups
    sizes = [g[0] for g in groups]
    strides = [0] * 4
    stride = 1
    for d in range(3, -1, -1):
        if groups[d][1] != "s":
            strides[d] = stride
            stride *= sizes[d]
    batch = next(d for d in range(4) if groups[d][1] == "b")
    return sizes, strides, batch


def _dropout_launch(x: Tensor, xt: Optional[Tensor], rate: Tensor, seed: int, geometry) -> Tuple[Tensor, Tensor]:
    y = torch.empty_like(x)
    yt = torch.empty_like(x) if xt is not None else x.new_empty((0,))
    if x.numel() == 0 or triton_config.skip_launch(x):
        return y, yt
    sizes, strides, batch = geometry
    grid = (triton.cdiv(x.numel(), triton_config.POINTWISE_BLOCK),)
    wrap_triton(_dropout_dual_kernel)[grid](
        x, y if xt is None else xt, rate, y, y if xt is None else yt, x.numel(), seed,
        sizes[1], sizes[2], sizes[3], *strides, HAS_XT=xt is not None, BATCH=batch, BLOCK=triton_config.POINTWISE_BLOCK)
    return y, yt


@triton_op("fastdstn::dropout_dual_triton", mutates_args=())
def _dropout_dual_op(x: Tensor, xt: Optional[Tensor], rate: Tensor, seed: int, batch_dim: int,
                     shared_dims: List[int]) -> Tuple[Tensor, Tensor]:
    """(y, ẏ); ẏ is an empty tensor when xt is None."""
    geometry = _dropout_geometry(x.shape, batch_dim, shared_dims)
    assert geometry is not None, "callers check _dropout_geometry first"
    return _dropout_launch(x.contiguous(), None if xt is None else xt.contiguous(), rate.contiguous(), seed,
                           geometry)


def _dropout_setup(ctx, inputs, output):
    x, xt, rate, seed, batch_dim, shared_dims = inputs
    ctx.args = (seed, batch_dim, list(shared_dims))
    ctx.has_xt = xt is not None
    ctx.save_for_backward(rate)


def _dropout_backward(ctx, dy, dyt):
    (rate,) = ctx.saved_tensors
    if dy is None:
        dy = torch.zeros_like(dyt)
    if ctx.has_xt and dyt is None:
        dyt = torch.zeros_like(dy)
    dx, dxt = torch.ops.fastdstn.dropout_dual_triton(dy, dyt if ctx.has_xt else None, rate, *ctx.args)
    return dx, (dxt if ctx.has_xt else None), None, None, None, None


_dropout_dual_op.register_autograd(_dropout_backward, setup_context=_dropout_setup)


def dropout_dual(x: Tensor, xt: Optional[Tensor], rate: Tensor, seed: int, batch_dim: int = 0,
                 shared_dims: Sequence[int] = ()) -> Tuple[Tensor, Optional[Tensor]]:
    """Per-example dropout, the same mask on primal and tangent (see the module docstring)."""
    triton_config.check_device(x, xt, rate)
    batch_dim %= max(x.dim(), 1)
    shared = sorted(d % x.dim() for d in shared_dims)
    if x.dim() == 0 or _dropout_geometry(x.shape, batch_dim, shared) is None:
        return reference.dropout_dual(x, xt, rate, seed, batch_dim, shared)
    y, yt = torch.ops.fastdstn.dropout_dual_triton(x, xt, rate.detach(), int(seed), batch_dim, shared)
    return y, (yt if xt is not None else None)
