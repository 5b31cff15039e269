"""STN convolutions in Triton: implicit-GEMM forward, ATen backward.

Forward: `triton._stn_fwd_kernel` with CONV=True. The GEMM rows are output pixels (n, oh, ow), the
reduction runs over (c, kh, kw) in W's memory order, and the A tile is gathered from NCHW x on the fly
(implicit im2col: no unfolded copy of x is written, which for a 5x5 kernel would be 25x the bytes of x).
The three accumulators, the ε·Vᵀ epilogue broadcast over each example's pixels and the first-layer
specialization are the linear kernel's. It covers groups = 1 with any stride, padding and dilation (the
CNNs of docs/METHOD.md §8: 3x3 and 5x5, stride 1); other geometries (grouped convs) run `reference.py`.

Backward: ATen's convolution_backward (cuDNN on a GPU) for the data and weight gradients. Everything
else comes from one pass over ∂ẏ (`_conv_bwd_planes_kernel`, one program per (example, channel) plane):
it writes g = s⊙∂ẏ (the cotangent of conv(x, W_r)) and reduces the plane to Σ ∂ẏ⊙u, Σ ∂ẏ and Σ ∂y,
from which ∂b_g, ∂b_r, ∂V and ∂ε are (N, C)-sized products. The unfused PyTorch sequence reads ∂ẏ three
times and writes ∂ẏ⊙u as a full-size temporary before reducing it; this kernel reads ∂ẏ, u and ∂y once and
writes only g. Only what needs_input_grad asks for is computed.
A Triton implicit-GEMM backward for the two convolution gradients is future work.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from .. import triton_config
from . import reference
from .triton import (ConvGeometry, both_cotangents, dual_needs, launch_forward, nonlinear_needs, save_inputs,
                     saved_inputs)

Tensor = torch.Tensor


def _out_size(size: int, k: int, stride: int, pad: int, dil: int) -> int:
    return (size + 2 * pad - dil * (k - 1) - 1) // stride + 1


def _forward(x: Tensor, xt: Optional[Tensor], eps: Tensor, Wg: Tensor, bg: Optional[Tensor], Wr: Tensor,
             br: Optional[Tensor], V: Tensor, stride: Sequence[int], padding: Sequence[int],
             dilation: Sequence[int], nonlinear: bool, save_u: bool) -> Tuple[Tensor, Tensor, Tensor]:
    x, eps, V = x.contiguous(), eps.contiguous(), V.contiguous()
    xt = None if xt is None else xt.contiguous()
    bg = None if bg is None else bg.contiguous()
    br = None if br is None else br.contiguous()
    n, c, ih, iw = x.shape
    cout, _, kh, kw = Wg.shape
    oh = _out_size(ih, kh, stride[0], padding[0], dilation[0])
    ow = _out_size(iw, kw, stride[1], padding[1], dilation[1])
    y = x.new_empty((n, cout, oh, ow))
    yt = x.new_empty((n, cout, oh, ow)) if not nonlinear else x.new_empty((0,))
    u = x.new_empty((n, cout, oh, ow)) if save_u else None
    geometry = ConvGeometry(c_in=c, ih=ih, iw=iw, ohw=oh * ow, ow=ow, khw=kh * kw, kw=kw, sh=stride[0], sw=stride[1],
                            ph=padding[0], pw=padding[1], dh=dilation[0], dw=dilation[1])
    launch_forward(x, xt, eps, Wg.reshape(cout, -1).contiguous(), bg, Wr.reshape(cout, -1).contiguous(), br, V,
                   y, None if nonlinear else yt, u, n * oh * ow, cout, c * kh * kw, nonlinear=nonlinear,
                   conv_geometry=geometry)
    return y, yt, (x.new_empty((0,)) if u is None else u)


@triton_op("fastdstn::stn_conv2d_dual_triton", mutates_args=())
def _conv2d_dual_op(x: Tensor, xt: Optional[Tensor], eps: Tensor, Wg: Tensor, bg: Optional[Tensor], Wr: Tensor,
                    br: Optional[Tensor], V: Tensor, stride: List[int], padding: List[int], dilation: List[int],
                    save_u: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """(y, ẏ, u) with u = conv(x, W_r) when save_u, else an empty tensor."""
    return _forward(x, xt, eps, Wg, bg, Wr, br, V, stride, padding, dilation, False, save_u)


@triton_op("fastdstn::stn_conv2d_triton", mutates_args=())
def _conv2d_op(x: Tensor, h: Tensor, Wg: Tensor, bg: Optional[Tensor], Wr: Tensor, br: Optional[Tensor],
               V: Tensor, stride: List[int], padding: List[int], dilation: List[int],
               save_u: bool) -> Tuple[Tensor, Tensor]:
    """(y, u): the nonlinear STN convolution."""
    y, _, u = _forward(x, None, h, Wg, bg, Wr, br, V, stride, padding, dilation, True, save_u)
    return y, u


@triton.jit
def _conv_bwd_planes_kernel(dy_ptr, dyt_ptr, u_ptr, eps_ptr, v_ptr, g_ptr, ds_ptr, dsum_ptr, dysum_ptr, C, P, H,
                            NEED_G: tl.constexpr, NEED_DS: tl.constexpr, NEED_DSUM: tl.constexpr,
                            NEED_DYSUM: tl.constexpr, ACC: tl.constexpr, HP: tl.constexpr, BLOCK: tl.constexpr):
    """One (example n, channel c) plane of P = OH·OW pixels: g = s[n, c]·∂ẏ, and the plane sums
    Σ ∂ẏ⊙u, Σ ∂ẏ, Σ ∂y written to (N, C) buffers at [n, c]."""
    plane = tl.program_id(0)
    n = plane // C
    c = plane % C
    base = plane.to(tl.int64) * P
    if NEED_G:
        hs = tl.arange(0, HP)
        e = tl.load(eps_ptr + n * H + hs, mask=hs < H, other=0.0).to(ACC)
        v = tl.load(v_ptr + c * H + hs, mask=hs < H, other=0.0).to(ACC)
        s = tl.sum(e * v, axis=0)
    acc_ds = tl.zeros((BLOCK,), dtype=ACC)
    acc_sum = tl.zeros((BLOCK,), dtype=ACC)
    acc_dy = tl.zeros((BLOCK,), dtype=ACC)
    for p0 in range(0, P, BLOCK):
        offs = p0 + tl.arange(0, BLOCK)
        m = offs < P
        dyt = tl.load(dyt_ptr + base + offs, mask=m, other=0.0).to(ACC)
        if NEED_G:
            tl.store(g_ptr + base + offs, (s * dyt).to(g_ptr.dtype.element_ty), mask=m)
        if NEED_DS:
            acc_ds += dyt * tl.load(u_ptr + base + offs, mask=m, other=0.0).to(ACC)
        if NEED_DSUM:
            acc_sum += dyt
        if NEED_DYSUM:
            acc_dy += tl.load(dy_ptr + base + offs, mask=m, other=0.0).to(ACC)
    if NEED_DS:
        tl.store(ds_ptr + plane, tl.sum(acc_ds, axis=0))
    if NEED_DSUM:
        tl.store(dsum_ptr + plane, tl.sum(acc_sum, axis=0))
    if NEED_DYSUM:
        tl.store(dysum_ptr + plane, tl.sum(acc_dy, axis=0))


PLANE_BLOCK = 64 if triton_config.interpreting() else 256


def _planes(dy: Tensor, dyt: Tensor, u: Optional[Tensor], eps: Tensor, V: Tensor, need_g: bool, need_ds: bool,
            need_dsum: bool, need_dysum: bool):
    """(g, Σ∂ẏ⊙u, Σ∂ẏ, Σ∂y) per plane, None where not asked for."""
    n, c, oh, ow = dyt.shape
    dy, dyt, eps, V = dy.contiguous(), dyt.contiguous(), eps.contiguous(), V.contiguous()
    u = None if u is None else u.contiguous()
    acc_dtype = torch.float64 if dyt.dtype == torch.float64 else torch.float32
    g = torch.empty_like(dyt) if need_g else None
    sums = [torch.empty((n, c), device=dyt.device, dtype=acc_dtype) if need else None
            for need in (need_ds, need_dsum, need_dysum)]
    if n * c and not triton_config.skip_launch(dyt):
        H = eps.shape[1]
        dummy = dyt
        wrap_triton(_conv_bwd_planes_kernel)[(n * c,)](
            dy, dyt, dummy if u is None else u, eps, V, dummy if g is None else g,
            *(dummy if t is None else t for t in sums), c, oh * ow, H,
            NEED_G=need_g, NEED_DS=need_ds, NEED_DSUM=need_dsum, NEED_DYSUM=need_dysum,
            ACC=triton_config.acc_dtype(dyt.dtype), HP=max(triton.next_power_of_2(H), 1), BLOCK=PLANE_BLOCK)
    return (g, *sums)


def conv_backward(dy: Tensor, dyt: Tensor, x: Tensor, xt: Optional[Tensor], eps: Tensor, Wg: Tensor,
                  Wr: Tensor, br: Optional[Tensor], V: Tensor, u: Optional[Tensor], stride, padding, dilation,
                  needs: Sequence[bool]) -> List[Optional[Tensor]]:
    """(∂x, ∂ẋ, ∂ε, ∂W_g, ∂b_g, ∂W_r, ∂b_r, ∂V) of the dual conv, None where `needs` is False."""
    need_dx, need_dxt, need_deps, need_dwg, need_dbg, need_dwr, need_dbr, need_dv = needs
    cout = Wg.shape[0]
    geo = dict(stride=list(stride), padding=list(padding), dilation=list(dilation), transposed=False,
               output_padding=[0, 0], groups=1, bias_sizes=None)

    def conv_bw(grad, inp, weight, need_input, need_weight):
        if not (need_input or need_weight):
            return None, None
        gi, gw, _ = torch.ops.aten.convolution_backward(grad, inp, weight, output_mask=[need_input, need_weight,
                                                                                        False], **geo)
        return gi, gw

    def add(a, b):
        return b if a is None else (a if b is None else a + b)

    need_dst = need_deps or need_dv
    g, ds, dsum, dysum = _planes(dy, dyt, u, eps, V, need_g=need_dx or need_dwr, need_ds=need_dst,
                                 need_dsum=need_dbr or (need_dst and br is not None), need_dysum=need_dbg)
    dx = dwg = dwr = dxt = None
    if need_dx or need_dwr:
        dx, dwr = conv_bw(g, x, Wr, need_dx, need_dwr)
    if need_dx or need_dwg:
        dx_g, dwg = conv_bw(dy, x, Wg, need_dx, need_dwg)
        dx = add(dx, dx_g)
    if xt is not None and (need_dxt or need_dwg):
        dxt, dwg_t = conv_bw(dyt, xt, Wg, need_dxt, need_dwg)
        dwg = add(dwg, dwg_t)
    dbg = dysum.sum(0).to(Wg.dtype) if need_dbg else None
    dbr = deps = dv = None
    if need_dbr:
        shift = eps.to(dsum.dtype) @ V[cout:].to(dsum.dtype).t()
        dbr = (shift * dsum).sum(0).to(br.dtype)
    if need_dst:
        dst = ds if br is None else torch.cat([ds, dsum * br.to(dsum.dtype)], dim=1)
        deps = (dst @ V.to(dst.dtype)).to(eps.dtype) if need_deps else None
        dv = (dst.t() @ eps.to(dst.dtype)).to(V.dtype) if need_dv else None
    return [dx, dxt if need_dxt else None, deps, dwg, dbg, dwr, dbr, dv]


def _dual_setup(ctx, inputs, output):
    x, xt, eps, Wg, bg, Wr, br, V, stride, padding, dilation, save_u = inputs
    ctx.geometry = (stride, padding, dilation)
    save_inputs(ctx, (x, xt, eps, Wg, Wr, br, V), bg, output[2] if save_u else None)


def _dual_backward(ctx, dy, dyt, du):
    x, xt, eps, Wg, Wr, br, V, u = saved_inputs(ctx, "fastdstn::stn_conv2d_dual_triton")
    if dy is None and dyt is None:
        return (None,) * 12
    dy, dyt = both_cotangents(dy, dyt)
    grads = conv_backward(dy, dyt, x, xt, eps, Wg, Wr, br, V, u, *ctx.geometry, dual_needs(ctx, xt, br))
    return (*grads, None, None, None, None)


def _conv_setup(ctx, inputs, output):
    x, h, Wg, bg, Wr, br, V, stride, padding, dilation, save_u = inputs
    ctx.geometry = (stride, padding, dilation)
    save_inputs(ctx, (x, h, Wg, Wr, br, V), bg, output[1] if save_u else None)


def _conv_backward(ctx, dy, du):
    x, h, Wg, Wr, br, V, u = saved_inputs(ctx, "fastdstn::stn_conv2d_triton")
    needs = nonlinear_needs(ctx, br)
    dx, _, dh, dwg, dbg, dwr, dbr, dv = conv_backward(dy, dy, x, None, h, Wg, Wr, br, V, u, *ctx.geometry, needs)
    return dx, dh, dwg, dbg, dwr, dbr, dv, None, None, None, None


_conv2d_dual_op.register_autograd(_dual_backward, setup_context=_dual_setup)
_conv2d_op.register_autograd(_conv_backward, setup_context=_conv_setup)


def covered(groups: int) -> bool:
    """Geometries the implicit-GEMM kernel handles (every stride/padding/dilation, ungrouped)."""
    return groups == 1


def _needs_u(*tensors: Optional[Tensor]) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def stn_conv2d_dual(x: Tensor, xt: Optional[Tensor], eps: Tensor, Wg: Tensor, bg: Optional[Tensor], Wr: Tensor,
                    br: Optional[Tensor], V: Tensor, stride: Sequence[int] = (1, 1),
                    padding: Sequence[int] = (0, 0), dilation: Sequence[int] = (1, 1),
                    groups: int = 1) -> Tuple[Tensor, Tensor]:
    """The conv analogue of `stn_linear_dual`: y = conv(x, W_g) + b_g, ẏ = conv(ẋ, W_g) + s⊙conv(x, W_r) + t⊙b_r."""
    if not covered(groups):
        return reference.stn_conv2d_dual(x, xt, eps, Wg, bg, Wr, br, V, stride, padding, dilation, groups)
    triton_config.check_device(x, xt, eps, Wg, bg, Wr, br, V)
    y, yt, _ = torch.ops.fastdstn.stn_conv2d_dual_triton(x, xt, eps, Wg, bg, Wr, br, V, list(stride), list(padding),
                                                     list(dilation), _needs_u(eps, V))
    return y, yt


def stn_conv2d(x: Tensor, h: Tensor, Wg: Tensor, bg: Optional[Tensor], Wr: Tensor, br: Optional[Tensor],
               V: Tensor, stride: Sequence[int] = (1, 1), padding: Sequence[int] = (0, 0),
               dilation: Sequence[int] = (1, 1), groups: int = 1) -> Tensor:
    """y = conv(x, W_g) + b_g + s⊙conv(x, W_r) + t⊙b_r, [s|t] = h·Vᵀ per example and channel (one kernel)."""
    if not covered(groups):
        return reference.stn_conv2d(x, h, Wg, bg, Wr, br, V, stride, padding, dilation, groups)
    triton_config.check_device(x, h, Wg, bg, Wr, br, V)
    y, _ = torch.ops.fastdstn.stn_conv2d_triton(x, h, Wg, bg, Wr, br, V, list(stride), list(padding), list(dilation),
                                            _needs_u(h, V))
    return y
