"""Triton kernels of lstm_cell_dual: the pointwise LSTM step with tangents, forward and backward.

gates (N, 4·hidden) in order i, f, g, o; one program reads the four gates of a block of (row, unit) pairs, the
state and the tangents, and writes h', c' and their tangents. The backward is one pointwise kernel too: it
recomputes the cell from the saved inputs (cheaper than saving the activations: 4 reads of gates-sized data
instead of 4 writes and 4 reads) and writes only the gradients asked for.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from .. import checks, triton_config

Tensor = torch.Tensor

# The backward keeps ~20 values per element live: at 4 warps (8 elements per thread) it spilled 16 bytes
# on sm_80 (compile_check); 8 warps halve the elements per thread.
LSTM_BWD_WARPS = 8


@triton.jit
def _sigmoid(v):
    return 1.0 / (1.0 + tl.exp(-v))


@triton.jit
def _tanh(v):
    # tanh(v) = 2σ(2v) − 1: exact at the saturated ends, ~1e-7 absolute error near 0 in fp32.
    return 2.0 / (1.0 + tl.exp(-2.0 * v)) - 1.0


@triton.jit
def _four_gates(ptr, gate, valid, HIDDEN):
    """The input, forget, cell and output entries (as fp32) of (N, 4H) gate rows at the offsets `gate`."""
    a_i = tl.load(ptr + gate, mask=valid, other=0.0).to(tl.float32)
    a_f = tl.load(ptr + gate + HIDDEN, mask=valid, other=0.0).to(tl.float32)
    a_g = tl.load(ptr + gate + 2 * HIDDEN, mask=valid, other=0.0).to(tl.float32)
    a_o = tl.load(ptr + gate + 3 * HIDDEN, mask=valid, other=0.0).to(tl.float32)
    return a_i, a_f, a_g, a_o


@triton.jit
def _cell_block(gates_ptr, c_ptr, numel, HIDDEN, BLOCK: tl.constexpr):
    """This program's block of (row, unit) elements: their offsets in c, which are valid, their offsets of gate i,
    the activated gates i, f, g, o and the cell c, in float32."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < numel
    gate = (offs // HIDDEN) * (4 * HIDDEN) + offs % HIDDEN
    a_i, a_f, a_g, a_o = _four_gates(gates_ptr, gate, valid, HIDDEN)
    c = tl.load(c_ptr + offs, mask=valid, other=0.0).to(tl.float32)
    return offs, valid, gate, _sigmoid(a_i), _sigmoid(a_f), _tanh(a_g), _sigmoid(a_o), c


@triton.jit
def _lstm_cell_dual_kernel(gates_ptr, gates_t_ptr, c_ptr, c_t_ptr, h_ptr, h_t_ptr, c_new_ptr, c_new_t_ptr,
                           numel, HIDDEN,
                           HAS_GT: tl.constexpr, HAS_CT: tl.constexpr, BLOCK: tl.constexpr):
    offs, valid, gate, i, f, g, o, c = _cell_block(gates_ptr, c_ptr, numel, HIDDEN, BLOCK)
    c_new = f * c + i * g
    tanh_c = _tanh(c_new)
    tl.store(c_new_ptr + offs, c_new.to(c_new_ptr.dtype.element_ty), mask=valid)
    tl.store(h_ptr + offs, (o * tanh_c).to(h_ptr.dtype.element_ty), mask=valid)
    if HAS_GT or HAS_CT:
        c_new_t = tl.zeros((BLOCK,), dtype=tl.float32)
        if HAS_CT:
            c_new_t += f * tl.load(c_t_ptr + offs, mask=valid, other=0.0).to(tl.float32)
        if HAS_GT:
            it, ft, gt, ot = _four_gates(gates_t_ptr, gate, valid, HIDDEN)
            c_new_t += f * (1 - f) * ft * c + i * (1 - i) * it * g + i * (1 - g * g) * gt
            h_t = o * (1 - o) * ot * tanh_c + o * (1 - tanh_c * tanh_c) * c_new_t
        else:
            h_t = o * (1 - tanh_c * tanh_c) * c_new_t
        tl.store(c_new_t_ptr + offs, c_new_t.to(c_new_t_ptr.dtype.element_ty), mask=valid)
        tl.store(h_t_ptr + offs, h_t.to(h_t_ptr.dtype.element_ty), mask=valid)


@triton.jit
def _lstm_cell_dual_bwd_kernel(gates_ptr, gates_t_ptr, c_ptr, c_t_ptr, dh_ptr, dh_t_ptr, dc_ptr, dc_t_ptr,
                               dgates_ptr, dgates_t_ptr, dcin_ptr, dcin_t_ptr, numel, HIDDEN,
                               HAS_GT: tl.constexpr, HAS_CT: tl.constexpr, NEED_DG: tl.constexpr,
                               NEED_DGT: tl.constexpr, NEED_DC: tl.constexpr, NEED_DCT: tl.constexpr,
                               BLOCK: tl.constexpr):
    """Backward of `_lstm_cell_dual_kernel`, recomputing the cell (pre-activations a_i, a_f, a_g, a_o).

    With i' = i(1−i), f' = f(1−f), g' = 1−g², o' = o(1−o), T = tanh(c'), ρ = 1−T² and the cotangents
    Gh, Gḣ, Gc, Gċ of h', ḣ', c', ċ':
        Gċ* = Gċ + Gḣ·o·ρ                      (total cotangent of ċ')
        G_T = Gh·o + Gḣ·(o'·ȧ_o − 2·o·T·ċ')     (of T)
        Gc* = Gc + G_T·ρ                        (of c')
        ∂a_o = Gh·o'·T + Gḣ·(o'(1−2o)·ȧ_o·T + o'·ρ·ċ')
        ∂a_i = Gc*·i'·g + Gċ*·(i'(1−2i)·ȧ_i·g + i'·g'·ȧ_g)
        ∂a_f = Gc*·f'·c + Gċ*·(f'·ċ + f'(1−2f)·ȧ_f·c)
        ∂a_g = Gc*·i·g' + Gċ*·(i'·ȧ_i·g' − 2·i·g·g'·ȧ_g)
        ∂c = Gc*·f + Gċ*·f'·ȧ_f,   ∂ċ = Gċ*·f
        ∂ȧ_i = Gċ*·i'·g,  ∂ȧ_f = Gċ*·f'·c,  ∂ȧ_g = Gċ*·i·g',  ∂ȧ_o = Gḣ·o'·T
    """
    offs, valid, gate, i, f, g, o, c = _cell_block(gates_ptr, c_ptr, numel, HIDDEN, BLOCK)
    i1 = i * (1 - i)
    f1 = f * (1 - f)
    g1 = 1 - g * g
    o1 = o * (1 - o)
    T = _tanh(f * c + i * g)
    rho = 1 - T * T
    gh = tl.load(dh_ptr + offs, mask=valid, other=0.0).to(tl.float32)
    gc = tl.load(dc_ptr + offs, mask=valid, other=0.0).to(tl.float32)
    if HAS_GT or HAS_CT:
        ght = tl.load(dh_t_ptr + offs, mask=valid, other=0.0).to(tl.float32)
        gct = tl.load(dc_t_ptr + offs, mask=valid, other=0.0).to(tl.float32)
        c_new_t = tl.zeros((BLOCK,), dtype=tl.float32)
        if HAS_CT:
            ct = tl.load(c_t_ptr + offs, mask=valid, other=0.0).to(tl.float32)
            c_new_t += f * ct
        if HAS_GT:
            it, ft, gt, ot = _four_gates(gates_t_ptr, gate, valid, HIDDEN)
            c_new_t += f1 * ft * c + i1 * it * g + i * g1 * gt
        gct_total = gct + ght * o * rho
        g_T = gh * o - ght * 2 * o * T * c_new_t
        d_ao = gh * o1 * T + ght * o1 * rho * c_new_t
        if HAS_GT:
            g_T += ght * o1 * ot
            d_ao += ght * o1 * (1 - 2 * o) * ot * T
    else:
        g_T = gh * o
        d_ao = gh * o1 * T
    gc_total = gc + g_T * rho
    d_ai = gc_total * i1 * g
    d_af = gc_total * f1 * c
    d_ag = gc_total * i * g1
    d_c = gc_total * f
    if HAS_CT:
        d_af += gct_total * f1 * ct
        if NEED_DCT:
            tl.store(dcin_t_ptr + offs, (gct_total * f).to(dcin_t_ptr.dtype.element_ty), mask=valid)
    if HAS_GT:
        d_ai += gct_total * (i1 * (1 - 2 * i) * it * g + i1 * g1 * gt)
        d_af += gct_total * f1 * (1 - 2 * f) * ft * c
        d_ag += gct_total * (i1 * it * g1 - 2 * i * g * g1 * gt)
        d_c += gct_total * f1 * ft
        if NEED_DGT:
            ty = dgates_t_ptr.dtype.element_ty
            tl.store(dgates_t_ptr + gate, (gct_total * i1 * g).to(ty), mask=valid)
            tl.store(dgates_t_ptr + gate + HIDDEN, (gct_total * f1 * c).to(ty), mask=valid)
            tl.store(dgates_t_ptr + gate + 2 * HIDDEN, (gct_total * i * g1).to(ty), mask=valid)
            tl.store(dgates_t_ptr + gate + 3 * HIDDEN, (ght * o1 * T).to(ty), mask=valid)
    if NEED_DG:
        ty = dgates_ptr.dtype.element_ty
        tl.store(dgates_ptr + gate, d_ai.to(ty), mask=valid)
        tl.store(dgates_ptr + gate + HIDDEN, d_af.to(ty), mask=valid)
        tl.store(dgates_ptr + gate + 2 * HIDDEN, d_ag.to(ty), mask=valid)
        tl.store(dgates_ptr + gate + 3 * HIDDEN, d_ao.to(ty), mask=valid)
    if NEED_DC:
        tl.store(dcin_ptr + offs, d_c.to(dcin_ptr.dtype.element_ty), mask=valid)


@triton_op("fastdstn::lstm_cell_dual_triton", mutates_args=())
def _lstm_cell_dual_op(gates: Tensor, gates_t: Optional[Tensor], c: Tensor,
                       c_t: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(h', ḣ', c', ċ'); the tangents are empty tensors when neither gates_t nor c_t is given."""
    gates, c = gates.contiguous(), c.contiguous()
    gates_t = None if gates_t is None else gates_t.contiguous()
    c_t = None if c_t is None else c_t.contiguous()
    tangent = gates_t is not None or c_t is not None
    h, c_new = torch.empty_like(c), torch.empty_like(c)
    h_t = torch.empty_like(c) if tangent else c.new_empty((0,))
    c_new_t = torch.empty_like(c) if tangent else c.new_empty((0,))
    if c.numel() and not triton_config.skip_launch(c):
        wrap_triton(_lstm_cell_dual_kernel)[(triton.cdiv(c.numel(), triton_config.POINTWISE_BLOCK),)](
            gates, gates if gates_t is None else gates_t, c, c if c_t is None else c_t,
            h, h if not tangent else h_t, c_new, c_new if not tangent else c_new_t, c.numel(), c.shape[1],
            HAS_GT=gates_t is not None, HAS_CT=c_t is not None, BLOCK=triton_config.POINTWISE_BLOCK)
    return h, h_t, c_new, c_new_t


@triton_op("fastdstn::lstm_cell_dual_backward_triton", mutates_args=())
def _lstm_cell_dual_backward_op(gates: Tensor, gates_t: Optional[Tensor], c: Tensor, c_t: Optional[Tensor],
                                dh: Tensor, dh_t: Optional[Tensor], dc: Tensor, dc_t: Optional[Tensor],
                                needs: List[bool]) -> List[Tensor]:
    """(∂gates, ∂gates_t, ∂c, ∂c_t), an empty tensor where `needs` is False or the input is absent."""
    need_dg, need_dgt, need_dc, need_dct = needs
    need_dgt = need_dgt and gates_t is not None
    need_dct = need_dct and c_t is not None
    gates, c, dh, dc = gates.contiguous(), c.contiguous(), dh.contiguous(), dc.contiguous()
    tangent = gates_t is not None or c_t is not None
    if tangent:
        dh_t = torch.zeros_like(c) if dh_t is None else dh_t.contiguous()
        dc_t = torch.zeros_like(c) if dc_t is None else dc_t.contiguous()
    gates_t = None if gates_t is None else gates_t.contiguous()
    c_t = None if c_t is None else c_t.contiguous()
    dg = torch.empty_like(gates) if need_dg else c.new_empty((0,))
    dgt = torch.empty_like(gates) if need_dgt else c.new_empty((0,))
    dcin = torch.empty_like(c) if need_dc else c.new_empty((0,))
    dcin_t = torch.empty_like(c) if need_dct else c.new_empty((0,))
    if c.numel() and (need_dg or need_dgt or need_dc or need_dct) and not triton_config.skip_launch(c):
        def ptr(t, fallback):
            return fallback if t is None or t.numel() == 0 else t
        wrap_triton(_lstm_cell_dual_bwd_kernel)[(triton.cdiv(c.numel(), triton_config.POINTWISE_BLOCK),)](
            gates, ptr(gates_t, gates), c, ptr(c_t, c), dh, ptr(dh_t, dh), dc, ptr(dc_t, dc),
            ptr(dg, gates), ptr(dgt, gates), ptr(dcin, c), ptr(dcin_t, c), c.numel(), c.shape[1],
            HAS_GT=gates_t is not None, HAS_CT=c_t is not None, NEED_DG=need_dg, NEED_DGT=need_dgt,
            NEED_DC=need_dc, NEED_DCT=need_dct, BLOCK=triton_config.POINTWISE_BLOCK, num_warps=LSTM_BWD_WARPS)
    return [dg, dgt, dcin, dcin_t]


def _lstm_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _lstm_backward(ctx, dh, dh_t, dc, dc_t):
    checks.refuse_double_backward("fastdstn::lstm_cell_dual_triton")
    gates, gates_t, c, c_t = ctx.saved_tensors
    n = ctx.needs_input_grad
    needs = [n[0], n[1] and gates_t is not None, n[2], n[3] and c_t is not None]
    if gates_t is None and c_t is None:
        dh_t = dc_t = None  # the op returned empty tangents; their cotangents carry nothing
    dh = torch.zeros_like(c) if dh is None else dh
    dc = torch.zeros_like(c) if dc is None else dc
    grads = torch.ops.fastdstn.lstm_cell_dual_backward_triton(gates, gates_t, c, c_t, dh, dh_t, dc, dc_t, needs)
    return tuple(g if need else None for g, need in zip(grads, needs))


_lstm_cell_dual_op.register_autograd(_lstm_backward, setup_context=_lstm_setup)


def lstm_cell_dual(gates: Tensor, gates_t: Optional[Tensor], c: Tensor,
                   c_t: Optional[Tensor]) -> Tuple[Tensor, Optional[Tensor], Tensor, Optional[Tensor]]:
    """Pointwise LSTM step with tangents (see `fastdstn.ops.lstm_cell.reference.lstm_cell_dual`), one kernel."""
    triton_config.check_device(gates, gates_t, c, c_t)
    h, h_t, c_new, c_new_t = torch.ops.fastdstn.lstm_cell_dual_triton(gates, gates_t, c, c_t)
    if gates_t is None and c_t is None:
        return h, None, c_new, None
    return h, h_t, c_new, c_new_t
