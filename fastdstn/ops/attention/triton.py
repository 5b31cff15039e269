"""Flash-style Triton kernels for `fastdstn.ops.attention`: the dual forward (O and Ȯ in one pass) and the
attention backward, registered with torch.library as

    fastdstn::attention_dual_triton(q, k, v, qt?, kt?, vt?, mask?, is_causal, scale, rate?, seed) -> (O, Ȯ, lse)
    fastdstn::attention_triton(q, k, v, mask?, is_causal, scale, rate?, seed)              -> (O, lse)
    fastdstn::attention_backward_triton(q, k, v, o, lse, grad, mask?, is_causal, scale, rate?, seed, needs)
                                                                                           -> (dq, dk, dv)

(the C++ library defines the `fastdstn` namespace and only the CPU keep mask of attention; these are a Python
fragment of it).

Forward (`_attention_fwd_kernel`), one program per (block of BLOCK_M query rows, example × head), looping over
blocks of keys with flash attention's online softmax: the running row maximum m and normaliser l rescale
three accumulators by exp(m_old − m_new) whenever m grows,
    acc   = Σ_j e_ij D_ij V_j                       -> O = acc / l
    acc_t = Σ_j e_ij D_ij (Ṡ_ij V_j + V̇_j)          -> Ȯ = acc_t / l − r·O
    r_acc = Σ_j e_ij Ṡ_ij                          -> r = r_acc / l
with e_ij = exp(S_ij − m), D the scaled keep mask and Ṡ = scale·(Q̇Kᵀ + QK̇ᵀ) computed per tile (docs/attention.md
derives Ȯ = acc_t/l − r·O). P is never stored: O(T) memory. The per-row log-sum-exp m + log l is saved
(+inf for a row that attends no key: P = 0 there, as torch's SDPA gives).

Backward: Ȯ is linear in (Q̇, K̇, V̇) with the coefficients of O in (Q, K, V), so the gradients of the tangents
for a cotangent G of Ȯ are the ordinary attention backward at the primal point with G in place of ∂O:
δ_i = G_i·O_i (O the primal output), dS = P ⊙ ((G·Vᵀ) ⊙ D − δ), ∂Q̇ = scale·dS·K, ∂K̇ = scale·dSᵀ·Q,
∂V̇ = (P ⊙ D)ᵀ·G. P is recomputed blockwise from the saved log-sum-exp: `_attention_bwd_dkdv_kernel`
(one program per key block, looping over query blocks) and `_attention_bwd_dq_kernel` (one per query
block, looping over keys) — no atomics, so the gradients are bitwise reproducible. The same backward serves
`attention`'s (q, k, v). Gradients w.r.t. the primal q, k, v of attention_dual and w.r.t. a mask are refused
with a clear error (Δ-STN freezes them; the reference backend has them).

Dropout: the keep decision of element (n, i, j) is tl.philox(seed, j, i, n, 0) (n = example·heads + head),
drawn again by the backward; `fastdstn.ops.attention.reference.philox_uniform` draws the same numbers.
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from .. import triton_config

Tensor = torch.Tensor

DEVICE_TYPES = ("cuda",)

# (BLOCK_M, BLOCK_N, num_warps, num_stages) per kernel; BLOCK_M tiles the queries, BLOCK_N the keys.
# Chosen from the register report of `python -m fastdstn.ops.compile_check --arch 90 --dtype bf16
# --all-configs --only attention` (sm_90 cubins built here without a GPU) over the causal, masked and dropout
# variants. Head size 64: none spills, except fwd 64x64 w4 (40-152 bytes of stack with a mask or dropout),
# kept for the plain case. Head size 128 (the forward keeps two output accumulators and the q, q̇ tiles:
# twice flash attention's live state): only fwd 32x32 w8, dkdv 32x32 w4 and dq 32x64 / 64x32 w8 are free of
# spills; the others spill 16-1600 bytes. None was timed: no GPU was lent while they were chosen; the
# autotuner picks among them on the GPU.
CONFIGS = {
    "fwd": [(64, 32, 4, 2), (128, 32, 8, 2), (64, 64, 4, 2), (32, 32, 8, 2)],
    "dkdv": [(64, 32, 4, 2), (32, 32, 4, 2), (32, 64, 4, 2), (64, 64, 8, 2), (32, 128, 8, 2)],
    "dq": [(64, 64, 8, 2), (64, 32, 4, 2), (32, 64, 4, 2), (128, 32, 8, 2), (32, 64, 8, 2), (64, 32, 8, 2)],
}
# FASTDSTN_TRITON_PIN=1 on a GPU (tests): per kernel, a config free of spills in bf16 at head sizes 64 and 128
# on sm_80 and sm_90 (`compile_check --only attention`; with fp32 storage the forward spills 48-216 bytes at 128).
PINNED_GPU = {"fwd": (32, 32, 8, 2), "dkdv": (32, 32, 4, 2), "dq": (32, 64, 8, 2)}
# Under the interpreter (~4 ms per program × key step): 16-row tiles let small test shapes span several tiles.
PINNED_INTERPRETER = (16, 16, 4, 1)


def _configs(kind: str) -> List[Tuple[int, int, int, int]]:
    """The (BLOCK_M, BLOCK_N, num_warps, num_stages) the autotuner of a kernel ("fwd", "dkdv", "dq") tries:
    one when pinned (interpreter, FASTDSTN_TRITON_PIN=1)."""
    if triton_config.interpreting():
        return [PINNED_INTERPRETER]
    if triton_config.pinned():
        return [PINNED_GPU[kind]]
    return CONFIGS[kind]


def _tuned(kind: str, key: List[str], kernel):
    configs = [triton.Config(dict(BLOCK_M=m, BLOCK_N=n), num_warps=w, num_stages=s) for m, n, w, s in _configs(kind)]
    return triton.autotune(configs=configs, key=["D", "DV", "HAS_MASK", "CAUSAL", "DROPOUT"] + key)(kernel)


# ----------------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------------

@triton.jit
def _keep_scale(rate_ptr, example, row, col, batch_head, seed, ACC: tl.constexpr):
    """The scaled keep mask 1/(1 − p) or 0 of the (row, col) tile of attention weights of head `batch_head`
    (example·heads + head)."""
    p = tl.load(rate_ptr + example)
    zero = tl.zeros(row.shape, dtype=tl.uint32) + tl.zeros(col.shape, dtype=tl.uint32)
    c0 = zero + col.to(tl.uint32)
    c1 = zero + row.to(tl.uint32)
    c2 = zero + batch_head.to(tl.uint32)
    draw, _, _, _ = tl.philox(seed, c0, c1, c2, zero)
    # Drawn against the float32 rate, scaled in the accumulator dtype (as the reference backend does).
    keep = tl.uint_to_uniform_float(draw) >= p.to(tl.float32)
    return tl.where(keep, 1.0 / (1.0 - p.to(ACC)), 0.0)


@triton.jit
def _scores(q, kT, mask_ptr, sm_q, sm_k, rows, cols, TQ, TK, scale,
            HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr):
    """S = scale·q·kᵀ + M for a (rows × cols) tile (either orientation: rows/cols are the tile's index vectors,
    already shaped to broadcast), −inf outside the matrix and above the causal diagonal."""
    s = tl.dot(q, kT, input_precision=PRECISION, out_dtype=ACC) * scale
    valid = (rows < TQ) & (cols < TK)
    if HAS_MASK:
        s += tl.load(mask_ptr + rows * sm_q + cols * sm_k, mask=valid, other=0.0).to(ACC)
    if CAUSAL:
        valid = valid & (cols <= rows)
    return tl.where(valid, s, float("-inf"))


@triton.jit
def _attention_fwd_kernel(
        q_ptr, k_ptr, v_ptr, qt_ptr, kt_ptr, vt_ptr, mask_ptr, rate_ptr, o_ptr, ot_ptr, lse_ptr,
        sq_b, sq_h, sq_seq, sk_b, sk_h, sk_seq, sv_b, sv_h, sv_seq,
        sqt_b, sqt_h, sqt_seq, skt_b, skt_h, skt_seq, svt_b, svt_h, svt_seq,
        sm_b, sm_h, sm_q, sm_k,
        heads, TQ, TK, D, DV, scale, seed,
        HAS_QT: tl.constexpr, HAS_KT: tl.constexpr, HAS_VT: tl.constexpr, HAS_MASK: tl.constexpr,
        CAUSAL: tl.constexpr, DROPOUT: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr,
        BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_m = tl.program_id(0)
    batch_head = tl.program_id(1)
    example = batch_head // heads
    head = batch_head % heads
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    row_ok = rows < TQ
    q_off = example.to(tl.int64) * sq_b + head.to(tl.int64) * sq_h + rows[:, None] * sq_seq + offs_d[None, :]
    q_mask = row_ok[:, None] & (offs_d[None, :] < D)
    q = tl.load(q_ptr + q_off, mask=q_mask, other=0.0)
    if HAS_QT:
        qt_off = example.to(tl.int64) * sqt_b + head.to(tl.int64) * sqt_h + rows[:, None] * sqt_seq + offs_d[None, :]
        qt = tl.load(qt_ptr + qt_off, mask=q_mask, other=0.0)
    k_base = k_ptr + example.to(tl.int64) * sk_b + head.to(tl.int64) * sk_h
    kt_base = kt_ptr + example.to(tl.int64) * skt_b + head.to(tl.int64) * skt_h
    v_base = v_ptr + example.to(tl.int64) * sv_b + head.to(tl.int64) * sv_h
    vt_base = vt_ptr + example.to(tl.int64) * svt_b + head.to(tl.int64) * svt_h
    m_base = mask_ptr + example.to(tl.int64) * sm_b + head.to(tl.int64) * sm_h

    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=ACC)
    l_i = tl.zeros((BLOCK_M,), dtype=ACC)
    acc = tl.zeros((BLOCK_M, BLOCK_DV), dtype=ACC)
    acc_t = tl.zeros((BLOCK_M, BLOCK_DV), dtype=ACC)
    r_acc = tl.zeros((BLOCK_M,), dtype=ACC)
    stop = TK
    if CAUSAL:
        stop = tl.minimum(TK, (pid_m + 1) * BLOCK_M)
    for start in range(0, stop, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < TK
        kT_mask = (offs_d[:, None] < D) & col_ok[None, :]
        kT = tl.load(k_base + cols[None, :] * sk_seq + offs_d[:, None], mask=kT_mask, other=0.0)
        s = _scores(q, kT, m_base, sm_q, sm_k, rows[:, None], cols[None, :], TQ, TK, scale,
                    HAS_MASK, CAUSAL, PRECISION, ACC)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)   # a row with no key yet: e = 0, no NaN
        alpha = tl.exp(m_i - m_use)
        e = tl.exp(s - m_use[:, None])
        l_i = l_i * alpha + tl.sum(e, 1)
        if DROPOUT:
            ed = e * _keep_scale(rate_ptr, example, rows[:, None], cols[None, :], batch_head, seed, ACC)
        else:
            ed = e
        v_mask = col_ok[:, None] & (offs_dv[None, :] < DV)
        v = tl.load(v_base + cols[:, None] * sv_seq + offs_dv[None, :], mask=v_mask, other=0.0)
        acc = acc * alpha[:, None] + tl.dot(ed.to(v.dtype), v, input_precision=PRECISION, out_dtype=ACC)
        if HAS_QT or HAS_KT or HAS_VT:
            acc_t = acc_t * alpha[:, None]
        if HAS_QT or HAS_KT:
            st = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
            if HAS_QT:
                st += tl.dot(qt, kT, input_precision=PRECISION, out_dtype=ACC)
            if HAS_KT:
                ktT = tl.load(kt_base + cols[None, :] * skt_seq + offs_d[:, None], mask=kT_mask, other=0.0)
                st += tl.dot(q, ktT, input_precision=PRECISION, out_dtype=ACC)
            st = st * scale
            r_acc = r_acc * alpha + tl.sum(e * st, 1)
            acc_t += tl.dot((ed * st).to(v.dtype), v, input_precision=PRECISION, out_dtype=ACC)
        if HAS_VT:
            vt = tl.load(vt_base + cols[:, None] * svt_seq + offs_dv[None, :], mask=v_mask, other=0.0)
            acc_t += tl.dot(ed.to(vt.dtype), vt, input_precision=PRECISION, out_dtype=ACC)
        m_i = m_new

    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    o = acc / l_safe[:, None]
    out_off = (batch_head.to(tl.int64) * TQ + rows[:, None]) * DV + offs_dv[None, :]
    out_mask = row_ok[:, None] & (offs_dv[None, :] < DV)
    tl.store(o_ptr + out_off, o.to(o_ptr.dtype.element_ty), mask=out_mask)
    if HAS_QT or HAS_KT or HAS_VT:
        ot = acc_t / l_safe[:, None]
        if HAS_QT or HAS_KT:
            ot -= (r_acc / l_safe)[:, None] * o
        tl.store(ot_ptr + out_off, ot.to(ot_ptr.dtype.element_ty), mask=out_mask)
    lse = tl.where(empty, float("inf"), m_i + tl.log(l_safe))
    tl.store(lse_ptr + batch_head.to(tl.int64) * TQ + rows, lse.to(lse_ptr.dtype.element_ty), mask=row_ok)


@triton.jit
def _attention_bwd_dkdv_kernel(
        q_ptr, k_ptr, v_ptr, g_ptr, lse_ptr, delta_ptr, mask_ptr, rate_ptr, dk_ptr, dv_ptr,
        sq_b, sq_h, sq_seq, sk_b, sk_h, sk_seq, sv_b, sv_h, sv_seq,
        sm_b, sm_h, sm_q, sm_k,
        heads, TQ, TK, D, DV, scale, seed,
        NEED_DK: tl.constexpr, NEED_DV: tl.constexpr, HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr,
        DROPOUT: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr,
        BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """∂K and ∂V of one block of keys: a loop over the query blocks, in transposed (key × query) tiles."""
    pid_n = tl.program_id(0)
    batch_head = tl.program_id(1)
    example = batch_head // heads
    head = batch_head % heads
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    col_ok = cols < TK
    k_mask = col_ok[:, None] & (offs_d[None, :] < D)
    v_mask = col_ok[:, None] & (offs_dv[None, :] < DV)
    k = tl.load(k_ptr + example.to(tl.int64) * sk_b + head.to(tl.int64) * sk_h
                + cols[:, None] * sk_seq + offs_d[None, :],
                mask=k_mask, other=0.0)
    v = tl.load(v_ptr + example.to(tl.int64) * sv_b + head.to(tl.int64) * sv_h
                + cols[:, None] * sv_seq + offs_dv[None, :],
                mask=v_mask, other=0.0)
    q_base = q_ptr + example.to(tl.int64) * sq_b + head.to(tl.int64) * sq_h
    g_base = g_ptr + batch_head.to(tl.int64) * TQ * DV
    m_base = mask_ptr + example.to(tl.int64) * sm_b + head.to(tl.int64) * sm_h
    dk = tl.zeros((BLOCK_N, BLOCK_D), dtype=ACC)
    dv = tl.zeros((BLOCK_N, BLOCK_DV), dtype=ACC)
    # Causal: query rows before this block's first key give it no weight.
    first = 0
    if CAUSAL:
        first = (pid_n * BLOCK_N // BLOCK_M) * BLOCK_M
    for start in range(first, TQ, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        row_ok = rows < TQ
        qT = tl.load(q_base + rows[None, :] * sq_seq + offs_d[:, None],
                     mask=(offs_d[:, None] < D) & row_ok[None, :], other=0.0)
        lse = tl.load(lse_ptr + batch_head.to(tl.int64) * TQ + rows, mask=row_ok, other=float("inf"))
        sT = _scores(k, qT, m_base, sm_q, sm_k, rows[None, :], cols[:, None], TQ, TK, scale,
                     HAS_MASK, CAUSAL, PRECISION, ACC)
        pT = tl.exp(sT - lse[None, :])
        if DROPOUT:
            keepT = _keep_scale(rate_ptr, example, rows[None, :], cols[:, None], batch_head, seed, ACC)
        g = tl.load(g_base + rows[:, None] * DV + offs_dv[None, :],
                    mask=row_ok[:, None] & (offs_dv[None, :] < DV), other=0.0)
        if NEED_DV:
            pdT = pT
            if DROPOUT:
                pdT = pT * keepT
            dv += tl.dot(pdT.to(g.dtype), g, input_precision=PRECISION, out_dtype=ACC)
        if NEED_DK:
            dpT = tl.dot(v, tl.trans(g), input_precision=PRECISION, out_dtype=ACC)
            if DROPOUT:
                dpT = dpT * keepT
            delta = tl.load(delta_ptr + batch_head.to(tl.int64) * TQ + rows, mask=row_ok, other=0.0)
            dsT = pT * (dpT - delta[None, :])
            dk += tl.dot(dsT.to(k.dtype), tl.trans(qT), input_precision=PRECISION, out_dtype=ACC)
    out_k = (batch_head.to(tl.int64) * TK + cols[:, None]) * D + offs_d[None, :]
    out_v = (batch_head.to(tl.int64) * TK + cols[:, None]) * DV + offs_dv[None, :]
    if NEED_DK:
        tl.store(dk_ptr + out_k, (dk * scale).to(dk_ptr.dtype.element_ty), mask=k_mask)
    if NEED_DV:
        tl.store(dv_ptr + out_v, dv.to(dv_ptr.dtype.element_ty), mask=v_mask)


@triton.jit
def _attention_bwd_dq_kernel(
        q_ptr, k_ptr, v_ptr, g_ptr, lse_ptr, delta_ptr, mask_ptr, rate_ptr, dq_ptr,
        sq_b, sq_h, sq_seq, sk_b, sk_h, sk_seq, sv_b, sv_h, sv_seq,
        sm_b, sm_h, sm_q, sm_k,
        heads, TQ, TK, D, DV, scale, seed,
        HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, DROPOUT: tl.constexpr, PRECISION: tl.constexpr,
        ACC: tl.constexpr,
        BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """∂Q of one block of query rows: a loop over the key blocks."""
    pid_m = tl.program_id(0)
    batch_head = tl.program_id(1)
    example = batch_head // heads
    head = batch_head % heads
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    row_ok = rows < TQ
    q_mask = row_ok[:, None] & (offs_d[None, :] < D)
    q = tl.load(q_ptr + example.to(tl.int64) * sq_b + head.to(tl.int64) * sq_h
                + rows[:, None] * sq_seq + offs_d[None, :],
                mask=q_mask, other=0.0)
    g = tl.load(g_ptr + (batch_head.to(tl.int64) * TQ + rows[:, None]) * DV + offs_dv[None, :],
                mask=row_ok[:, None] & (offs_dv[None, :] < DV), other=0.0)
    lse = tl.load(lse_ptr + batch_head.to(tl.int64) * TQ + rows, mask=row_ok, other=float("inf"))
    delta = tl.load(delta_ptr + batch_head.to(tl.int64) * TQ + rows, mask=row_ok, other=0.0)
    k_base = k_ptr + example.to(tl.int64) * sk_b + head.to(tl.int64) * sk_h
    v_base = v_ptr + example.to(tl.int64) * sv_b + head.to(tl.int64) * sv_h
    m_base = mask_ptr + example.to(tl.int64) * sm_b + head.to(tl.int64) * sm_h
    dq = tl.zeros((BLOCK_M, BLOCK_D), dtype=ACC)
    stop = TK
    if CAUSAL:
        stop = tl.minimum(TK, (pid_m + 1) * BLOCK_M)
    for start in range(0, stop, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < TK
        k = tl.load(k_base + cols[:, None] * sk_seq + offs_d[None, :], mask=col_ok[:, None] & (offs_d[None, :] < D),
                    other=0.0)
        s = _scores(q, tl.trans(k), m_base, sm_q, sm_k, rows[:, None], cols[None, :], TQ, TK, scale,
                    HAS_MASK, CAUSAL, PRECISION, ACC)
        p = tl.exp(s - lse[:, None])
        vT = tl.load(v_base + cols[None, :] * sv_seq + offs_dv[:, None],
                     mask=(offs_dv[:, None] < DV) & col_ok[None, :], other=0.0)
        dp = tl.dot(g, vT, input_precision=PRECISION, out_dtype=ACC)
        if DROPOUT:
            dp = dp * _keep_scale(rate_ptr, example, rows[:, None], cols[None, :], batch_head, seed, ACC)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION, out_dtype=ACC)
    tl.store(dq_ptr + (batch_head.to(tl.int64) * TQ + rows[:, None]) * D + offs_d[None, :],
             (dq * scale).to(dq_ptr.dtype.element_ty), mask=q_mask)


_attention_fwd = _tuned("fwd", ["HAS_QT", "HAS_KT", "HAS_VT"], _attention_fwd_kernel)
_attention_bwd_dkdv = _tuned("dkdv", ["NEED_DK", "NEED_DV"], _attention_bwd_dkdv_kernel)
_attention_bwd_dq = _tuned("dq", [], _attention_bwd_dq_kernel)


# ----------------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------------

def _as_4d(t: Tensor) -> Tensor:
    """(..., T, d) as (examples, heads, T, d) with unit stride along d (a view where the layout allows)."""
    if t.dim() == 2:
        t = t[None, None]
    elif t.dim() == 3:
        t = t[:, None]
    elif t.dim() > 4:
        t = t.reshape(t.shape[0], -1, *t.shape[-2:])
    return t if t.stride(-1) == 1 else t.contiguous()


def _mask_4d(mask: Optional[Tensor], q: Tensor, tk: int) -> Optional[Tensor]:
    """The mask as an additive (examples, heads, Tq, Tk) view; broadcast dims get stride 0."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, device=mask.device, dtype=torch.float32).masked_fill_(~mask, float("-inf"))
    mask = mask.expand(*q.shape[:-1], tk)
    if mask.dim() == 2:
        return mask[None, None]
    if mask.dim() == 3:
        return mask[:, None]
    return mask if mask.dim() == 4 else mask.reshape(mask.shape[0], -1, *mask.shape[-2:])


def _strides(t: Optional[Tensor]) -> Tuple[int, int, int]:
    return (0, 0, 0) if t is None else tuple(t.stride()[:3])


def _stat_dtype(dtype: torch.dtype) -> torch.dtype:
    """Row statistics (log-sum-exp, δ) in float32, float64 for float64 inputs (gradcheck)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _block(n: int) -> int:
    """A power-of-two tile width ≥ 16 (tl.dot's minimum) covering the head size n."""
    return max(16, triton.next_power_of_2(n))


def _forward(q: Tensor, k: Tensor, v: Tensor, qt: Optional[Tensor], kt: Optional[Tensor], vt: Optional[Tensor],
             mask: Optional[Tensor], is_causal: bool, scale: float, rate: Optional[Tensor],
             seed: int) -> Tuple[Tensor, Optional[Tensor], Tensor]:
    """(O, Ȯ or None, lse): O and Ȯ shaped like q with v's head size, lse (examples·heads, Tq) float32."""
    out_shape = (*q.shape[:-1], v.shape[-1])
    tangent = qt is not None or kt is not None or vt is not None
    o = torch.empty(out_shape, device=q.device, dtype=q.dtype)
    ot = torch.empty(out_shape, device=q.device, dtype=q.dtype) if tangent else None
    q4, k4, v4 = _as_4d(q), _as_4d(k), _as_4d(v)
    B, heads, TQ, D = q4.shape
    TK, DV = k4.shape[2], v4.shape[3]
    lse = torch.empty((B * heads, TQ), device=q.device, dtype=_stat_dtype(q.dtype))
    if o.numel() == 0 or triton_config.skip_launch(q):
        return o, ot, lse
    qt4, kt4, vt4 = (None if t is None else _as_4d(t) for t in (qt, kt, vt))
    m4 = _mask_4d(mask, q, TK)
    grid = lambda meta: (triton.cdiv(TQ, meta["BLOCK_M"]), B * heads)  # noqa: E731
    wrap_triton(_attention_fwd)[grid](
        q4, k4, v4, q4 if qt4 is None else qt4, k4 if kt4 is None else kt4, v4 if vt4 is None else vt4,
        q4 if m4 is None else m4, q4 if rate is None else rate, o, o if ot is None else ot, lse,
        *_strides(q4), *_strides(k4), *_strides(v4), *_strides(qt4), *_strides(kt4), *_strides(vt4),
        *((0, 0, 0, 0) if m4 is None else m4.stride()),
        heads, TQ, TK, D, DV, scale, seed,
        HAS_QT=qt is not None, HAS_KT=kt is not None, HAS_VT=vt is not None, HAS_MASK=m4 is not None,
        CAUSAL=is_causal, DROPOUT=rate is not None, PRECISION=triton_config.input_precision(q.dtype),
        ACC=triton_config.acc_dtype(q.dtype), BLOCK_D=_block(D), BLOCK_DV=_block(DV))
    return o, ot, lse


def _backward(q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, grad: Tensor, mask: Optional[Tensor],
              is_causal: bool, scale: float, rate: Optional[Tensor], seed: int,
              needs: List[bool]) -> List[Tensor]:
    """(dq, dk, dv) for the cotangent `grad` of an output (P ⊙ D)·X (see the module docstring); an empty
    tensor where `needs` is False. Shapes and dtypes of q, k, v."""
    need_q, need_k, need_v = needs
    dq = torch.empty_like(q, memory_format=torch.contiguous_format) if need_q else q.new_empty((0,))
    dk = torch.empty_like(k, memory_format=torch.contiguous_format) if need_k else k.new_empty((0,))
    dv = torch.empty_like(v, memory_format=torch.contiguous_format) if need_v else v.new_empty((0,))
    if not (need_q or need_k or need_v) or triton_config.skip_launch(q):
        return [dq, dk, dv]
    q4, k4, v4 = _as_4d(q), _as_4d(k), _as_4d(v)
    B, heads, TQ, D = q4.shape
    TK, DV = k4.shape[2], v4.shape[3]
    if q4.numel() == 0 or k4.numel() == 0:
        return [t.zero_() for t in (dq, dk, dv)]
    grad = grad.contiguous()
    delta = (grad.to(lse.dtype) * o.to(lse.dtype)).sum(-1).reshape(B * heads, TQ)
    m4 = _mask_4d(mask, q, TK)
    common = dict(HAS_MASK=m4 is not None, CAUSAL=is_causal, DROPOUT=rate is not None,
                  PRECISION=triton_config.input_precision(q.dtype), ACC=triton_config.acc_dtype(q.dtype),
                  BLOCK_D=_block(D), BLOCK_DV=_block(DV))
    operands = (q4, k4, v4, grad, lse, delta, q4 if m4 is None else m4, q4 if rate is None else rate)
    strides = (*_strides(q4), *_strides(k4), *_strides(v4), *((0, 0, 0, 0) if m4 is None else m4.stride()),
               heads, TQ, TK, D, DV, scale, seed)
    if need_k or need_v:
        grid = lambda meta: (triton.cdiv(TK, meta["BLOCK_N"]), B * heads)  # noqa: E731
        wrap_triton(_attention_bwd_dkdv)[grid](*operands, dk if need_k else k4, dv if need_v else v4, *strides,
                                               NEED_DK=need_k, NEED_DV=need_v, **common)
    if need_q:
        grid = lambda meta: (triton.cdiv(TQ, meta["BLOCK_M"]), B * heads)  # noqa: E731
        wrap_triton(_attention_bwd_dq)[grid](*operands, dq, *strides, **common)
    return [dq, dk, dv]


# ----------------------------------------------------------------------------------------------------
# Registered ops and their autograd
# ----------------------------------------------------------------------------------------------------

@triton_op("fastdstn::attention_backward_triton", mutates_args=())
def _attention_backward_op(q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, grad: Tensor,
                           mask: Optional[Tensor], is_causal: bool, scale: float, rate: Optional[Tensor],
                           seed: int, needs: List[bool]) -> List[Tensor]:
    return _backward(q, k, v, o, lse, grad, mask, is_causal, scale, rate, seed, needs)


@triton_op("fastdstn::attention_dual_triton", mutates_args=())
def _attention_dual_op(q: Tensor, k: Tensor, v: Tensor, qt: Optional[Tensor], kt: Optional[Tensor],
                       vt: Optional[Tensor], mask: Optional[Tensor], is_causal: bool, scale: float,
                       rate: Optional[Tensor], seed: int) -> Tuple[Tensor, Tensor, Tensor]:
    """(O, Ȯ, lse); Ȯ is zeros when no tangent is given."""
    o, ot, lse = _forward(q, k, v, qt, kt, vt, mask, is_causal, scale, rate, seed)
    return o, (torch.zeros_like(o) if ot is None else ot), lse


@triton_op("fastdstn::attention_triton", mutates_args=())
def _attention_op(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor], is_causal: bool, scale: float,
                  rate: Optional[Tensor], seed: int) -> Tuple[Tensor, Tensor]:
    """(O, lse)."""
    o, _, lse = _forward(q, k, v, None, None, None, mask, is_causal, scale, rate, seed)
    return o, lse


def _refuse(op: str, names, needs) -> None:
    wanted = [name for name, need in zip(names, needs) if need]
    if wanted:
        raise NotImplementedError(
            f"fastdstn.ops.{op} (triton backend): no gradient w.r.t. {', '.join(wanted)} (Δ-STN's steps freeze them); "
            f"run the op under fastdstn.ops.use_backend('reference') for these gradients")


def _dual_setup(ctx, inputs, output):
    q, k, v, qt, kt, vt, mask, is_causal, scale, rate, seed = inputs
    o, _, lse = output
    ctx.args = (is_causal, scale, seed)
    ctx.has = (qt is not None, kt is not None, vt is not None)
    ctx.save_for_backward(q, k, v, o, lse, mask, rate)


def _dual_backward(ctx, grad_o, grad_ot, grad_lse):
    n = ctx.needs_input_grad
    _refuse("attention_dual", ("q", "k", "v", "attn_mask"), (n[0], n[1], n[2], n[6]))
    q, k, v, o, lse, mask, rate = ctx.saved_tensors
    is_causal, scale, seed = ctx.args
    needs = [bool(n[3]) and ctx.has[0], bool(n[4]) and ctx.has[1], bool(n[5]) and ctx.has[2]]
    if grad_ot is None or not any(needs):
        return (None,) * 11
    dqt, dkt, dvt = torch.ops.fastdstn.attention_backward_triton(q, k, v, o, lse, grad_ot, mask, is_causal, scale, rate,
                                                          seed, needs)
    return (None, None, None, *(g if need else None for g, need in zip((dqt, dkt, dvt), needs)),
            None, None, None, None, None)


def _attention_setup(ctx, inputs, output):
    q, k, v, mask, is_causal, scale, rate, seed = inputs
    o, lse = output
    ctx.args = (is_causal, scale, seed)
    ctx.save_for_backward(q, k, v, o, lse, mask, rate)


def _attention_backward(ctx, grad_o, grad_lse):
    n = ctx.needs_input_grad
    _refuse("attention", ("attn_mask",), (n[3],))
    q, k, v, o, lse, mask, rate = ctx.saved_tensors
    is_causal, scale, seed = ctx.args
    needs = [bool(n[0]), bool(n[1]), bool(n[2])]
    if grad_o is None or not any(needs):
        return (None,) * 8
    grads = torch.ops.fastdstn.attention_backward_triton(q, k, v, o, lse, grad_o, mask, is_causal, scale, rate, seed, needs)
    return (*(g if need else None for g, need in zip(grads, needs)), None, None, None, None, None)


_attention_dual_op.register_autograd(_dual_backward, setup_context=_dual_setup)
_attention_op.register_autograd(_attention_backward, setup_context=_attention_setup)


# ----------------------------------------------------------------------------------------------------
# Backend entry points (the signatures of fastdstn.ops.attention.reference)
# ----------------------------------------------------------------------------------------------------

def _scale(q: Tensor, scale: Optional[float]) -> float:
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)


def _rate(rate: Optional[Tensor]) -> Optional[Tensor]:
    return None if rate is None else rate.detach().contiguous()


def attention_dual(q: Tensor, k: Tensor, v: Tensor, qt: Optional[Tensor], kt: Optional[Tensor],
                   vt: Optional[Tensor], attn_mask: Optional[Tensor] = None, is_causal: bool = False,
                   scale: Optional[float] = None, dropout_rate: Optional[Tensor] = None,
                   seed: int = 0) -> Tuple[Tensor, Tensor]:
    """(O, Ȯ) in one flash-style pass; see the module docstring."""
    triton_config.check_device(q, k, v, qt, kt, vt, attn_mask, dropout_rate)
    o, ot, _ = torch.ops.fastdstn.attention_dual_triton(q, k, v, qt, kt, vt, attn_mask, is_causal, _scale(q, scale),
                                                 _rate(dropout_rate), seed)
    return o, ot


def attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Optional[Tensor] = None, is_causal: bool = False,
              scale: Optional[float] = None, dropout_rate: Optional[Tensor] = None, seed: int = 0) -> Tensor:
    """O with per-example attention-weight dropout, flash-style forward and backward."""
    triton_config.check_device(q, k, v, attn_mask, dropout_rate)
    return torch.ops.fastdstn.attention_triton(q, k, v, attn_mask, is_causal, _scale(q, scale), _rate(dropout_rate),
                                        seed)[0]


def compile_variants(dtype: str, all_configs: bool):
    """(label, kernel, constexprs, pointer dtypes, launch options) of each attention kernel variant for
    `python -m fastdstn.ops.compile_check`: head size 64 and 128; causal without mask or dropout, with an
    additive mask, and with dropout; every tangent (forward) and gradient (backward) present."""
    precision = "tf32" if dtype == "fp32" else "ieee"
    pointers = {"*": dtype, "mask_ptr": "fp32", "rate_ptr": "fp32", "lse_ptr": "fp32", "delta_ptr": "fp32"}
    kernels = (("fwd", _attention_fwd_kernel, dict(HAS_QT=True, HAS_KT=True, HAS_VT=True)),
               ("dkdv", _attention_bwd_dkdv_kernel, dict(NEED_DK=True, NEED_DV=True)),
               ("dq", _attention_bwd_dq_kernel, {}))
    for head_size in (64, 128):
        for variant, mask, dropout in (("causal", False, False), ("mask", True, False), ("dropout", False, True)):
            flags = dict(HAS_MASK=mask, CAUSAL=not mask, DROPOUT=dropout, PRECISION=precision, ACC=tl.float32,
                         BLOCK_D=head_size, BLOCK_DV=head_size)
            for kind, kernel, extra in kernels:
                for m, n, warps, stages in (CONFIGS[kind] if all_configs else [PINNED_GPU[kind]]):
                    yield (f"attention_{kind} d{head_size} {variant} {dtype} {m}x{n} w{warps} s{stages}", kernel,
                           dict(flags, BLOCK_M=m, BLOCK_N=n, **extra), pointers,
                           dict(num_warps=warps, num_stages=stages))
