"""STN linear layers in Triton: the dual (linearized, docs/METHOD.md §5) and the nonlinear (docs/METHOD.md §3) op.

Forward, one kernel per output tile (`_stn_fwd_kernel`): one K loop, three fp32 accumulators
    acc_g = x·W_gᵀ,  acc_r = x·W_rᵀ,  acc_t = ẋ·W_gᵀ
so each x tile is loaded once for two GEMMs and each W_g tile once for two. The epilogue forms
[s | t] = ε·Vᵀ for the tile as an outer product over H (a runtime loop: tl.dot needs dims ≥ 16 and H is
1-30), adds the biases and writes
    dual:       y = acc_g + b_g,   ẏ = acc_t + s⊙acc_r + t⊙b_r
    nonlinear:  y = acc_g + b_g + s⊙acc_r + t⊙b_r
The first layer of a network has no ẋ: HAS_XT is a constexpr, so that case compiles to a two-GEMM
kernel, not a kernel multiplying zeros. The same kernel serves the convolution (`triton_conv.py`): only the
A-tile addresses (implicit im2col) and the output layout change, behind the CONV constexpr.

What the backward needs from the forward: u = x·W_rᵀ, for ∂s = ∂ẏ⊙u (∂V, ∂ε). Saving it costs one extra
write and read of N·out elements; recomputing it costs a second pass over x and all of W_r (out·in
elements, 8x more bytes than u at the (128, 1024, 1024) benchmark shape, see benchmarks/ROOFLINE.md).
So u is saved, and only when ε or V needs a gradient (the response sub-step's ∂V does; the general
sub-step never builds the op with grad on V).

Backward (`linear_backward`), gradients of the dual op (the nonlinear op is the special case ∂y = ∂ẏ,
no ẋ, because its y equals the dual's y + ẏ):
    ∂x  = ∂y·W_g + (s⊙∂ẏ)·W_r        ∂ẋ  = ∂ẏ·W_g             -> `_stn_bwd_dx_kernel`, shares each W_g tile
    ∂W_g = ∂yᵀ·x + ∂ẏᵀ·ẋ              ∂W_r = (s⊙∂ẏ)ᵀ·x          -> `_stn_bwd_dw_kernel`, shares each x tile
    ∂b_g = Σ ∂y,  ∂b_r = Σ t⊙∂ẏ,  ∂s = ∂ẏ⊙u,  ∂t = ∂ẏ⊙b_r,
    ∂V = [∂s|∂t]ᵀ·ε,  ∂ε = [∂s|∂t]·V                          -> `_stn_bwd_rows_kernel`, atomics over tiles
Only what `needs_input_grad` asks for is computed: the response sub-step (x, W_g, b_g frozen) runs the
rows kernel, ∂ẏ·W_g and (s⊙∂ẏ)ᵀ·x: 2 weight GEMMs, as docs/METHOD.md §5 counts. The rows kernel's atomics add
in a run-dependent order on a GPU: ∂b_g, ∂b_r, ∂V and ∂ε are not bitwise reproducible there (the GEMM
gradients are).
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from .. import checks, triton_config

Tensor = torch.Tensor


# ----------------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------------

@triton.jit
def _grouped_tile(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """Program id -> (tile row, tile column), GROUP_M row tiles at a time so W tiles stay in L2."""
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = tl.minimum(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + (pid % num_pid_in_group) % group_size_m
    pid_n = (pid % num_pid_in_group) // group_size_m
    return pid_m, pid_n


@triton.jit
def _stn_fwd_kernel(
        x_ptr, xt_ptr, eps_ptr, wg_ptr, bg_ptr, wr_ptr, br_ptr, v_ptr, y_ptr, yt_ptr, u_ptr,
        M, N, K, H,
        C_IN, IH, IW, OHW, OW, KHW, KW, SH, SW, PH, PW, DH, DW,
        HAS_XT: tl.constexpr, HAS_BG: tl.constexpr, HAS_BR: tl.constexpr, NONLINEAR: tl.constexpr,
        SAVE_U: tl.constexpr, CONV: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    """One (BLOCK_M rows) x (BLOCK_N output units) tile of y and ẏ (or of the nonlinear y).

    Linear: rows are examples, x is (M, K). Conv (implicit GEMM): rows are output pixels
    m = (n·OH + oh)·OW + ow, K runs over (c, kh, kw) in W's memory order, x is NCHW.
    """
    pid_m, pid_n = _grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    # Rows/columns past the edge are wrapped onto valid ones (the standard Triton GEMM trick: loads need no
    # row/column mask, only the K tail does; the wrapped results are never stored). Pointers advance by
    # BLOCK_K each step instead of recomputing 2-D offsets, which keeps the index tiles out of registers.
    rows = offs_m % M
    cols = offs_n % N
    if CONV:
        # Implicit im2col, separable: the address of x[n, c, oh·SH − PH + kh·DH, ow·SW − PW + kw·DW] is
        # row_base[m] + col_off[k], so each K step builds one 2-D add (plus the padding mask) from two
        # vectors instead of 2-D index arithmetic, which spilled registers on sm_80/sm_90 (compile_check).
        example = rows // OHW
        pixel = rows % OHW
        ih0 = (pixel // OW) * SH - PH
        iw0 = (pixel % OW) * SW - PW
        row_base = example.to(tl.int64) * (C_IN * IH * IW) + ih0 * IW + iw0
    else:
        example = rows
    offs_k = tl.arange(0, BLOCK_K)
    w_off = (cols.to(tl.int64) * K)[None, :] + offs_k[:, None]
    wg_ptrs = wg_ptr + w_off
    wr_ptrs = wr_ptr + w_off
    if not CONV:
        a_off = (rows.to(tl.int64) * K)[:, None] + offs_k[None, :]
        x_ptrs = x_ptr + a_off
        xt_ptrs = xt_ptr + a_off

    acc_g = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    acc_r = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    acc_t = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for k0 in range(0, K, BLOCK_K):
        k_left = K - k0
        w_mask = offs_k[:, None] < k_left
        if CONV:
            kg = k0 + offs_k
            c = kg // KHW
            kk = kg % KHW
            dh = (kk // KW) * DH
            dw = (kk % KW) * DW
            a_off = row_base[:, None] + (c * (IH * IW) + dh * IW + dw)[None, :]
            # One unsigned compare per bound pair: a negative row/column wraps to a huge unsigned value.
            ih = (ih0[:, None] + dh[None, :]).to(tl.uint32, bitcast=True)
            iw = (iw0[:, None] + dw[None, :]).to(tl.uint32, bitcast=True)
            a_mask = (kg < K)[None, :] & (ih < IH) & (iw < IW)
            a = tl.load(x_ptr + a_off, mask=a_mask, other=0.0)
            if HAS_XT:
                at = tl.load(xt_ptr + a_off, mask=a_mask, other=0.0)
        else:
            a_mask = offs_k[None, :] < k_left
            a = tl.load(x_ptrs, mask=a_mask, other=0.0)
            if HAS_XT:
                at = tl.load(xt_ptrs, mask=a_mask, other=0.0)
            x_ptrs += BLOCK_K
            xt_ptrs += BLOCK_K
        wg = tl.load(wg_ptrs, mask=w_mask, other=0.0)
        wr = tl.load(wr_ptrs, mask=w_mask, other=0.0)
        wg_ptrs += BLOCK_K
        wr_ptrs += BLOCK_K
        acc_g = tl.dot(a, wg, acc_g, input_precision=PRECISION, out_dtype=ACC)
        acc_r = tl.dot(a, wr, acc_r, input_precision=PRECISION, out_dtype=ACC)
        if HAS_XT:
            acc_t = tl.dot(at, wg, acc_t, input_precision=PRECISION, out_dtype=ACC)

    # Epilogue. Register budget: the K loop holds three BLOCK_M x BLOCK_N fp32 tiles, and the epilogue
    # never holds more. The dual y is stored first (acc_g dies); s = ε·V_sᵀ is built by an outer product
    # over H (tl.dot needs dims >= 16; H is 1-30) and multiplies acc_r (which then dies); the bias gate
    # t⊙b_r = Σ_j ε_j (V_t,j ⊙ b_r) is accumulated straight into the output, so no t tile ever exists.
    if CONV:
        out_off = (example.to(tl.int64) * N * OHW + pixel)[:, None] + (offs_n * OHW)[None, :]
    else:
        out_off = (offs_m.to(tl.int64) * N)[:, None] + offs_n[None, :]
    out_mask = mask_m[:, None] & mask_n[None, :]

    if SAVE_U:
        tl.store(u_ptr + out_off, acc_r.to(u_ptr.dtype.element_ty), mask=out_mask)
    out = acc_g
    if HAS_BG:
        out += tl.load(bg_ptr + offs_n, mask=mask_n, other=0.0).to(ACC)[None, :]
    if not NONLINEAR:
        tl.store(y_ptr + out_off, out.to(y_ptr.dtype.element_ty), mask=out_mask)
        out = acc_t  # zeros when HAS_XT is False (the first layer)

    s = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for j in range(H):
        e = tl.load(eps_ptr + example * H + j, mask=mask_m, other=0.0).to(ACC)
        v_scale = tl.load(v_ptr + offs_n * H + j, mask=mask_n, other=0.0).to(ACC)
        s += e[:, None] * v_scale[None, :]
    out += s * acc_r
    if HAS_BR:
        br = tl.load(br_ptr + offs_n, mask=mask_n, other=0.0).to(ACC)
        for j in range(H):
            e = tl.load(eps_ptr + example * H + j, mask=mask_m, other=0.0).to(ACC)
            v_shift = tl.load(v_ptr + (N + offs_n) * H + j, mask=mask_n, other=0.0).to(ACC)
            out += e[:, None] * (v_shift * br)[None, :]
    if NONLINEAR:
        tl.store(y_ptr + out_off, out.to(y_ptr.dtype.element_ty), mask=out_mask)
    else:
        tl.store(yt_ptr + out_off, out.to(yt_ptr.dtype.element_ty), mask=out_mask)


@triton.jit
def _stn_bwd_rows_kernel(
        dy_ptr, dyt_ptr, u_ptr, eps_ptr, v_ptr, br_ptr, g_ptr, dbg_ptr, dbr_ptr, dv_ptr, deps_ptr,
        M, N, H,
        HAS_BR: tl.constexpr, NEED_G: tl.constexpr, NEED_DBG: tl.constexpr, NEED_DBR: tl.constexpr,
        NEED_DST: tl.constexpr, NEED_COL: tl.constexpr, NEED_DV: tl.constexpr, NEED_DEPS: tl.constexpr,
        ACC: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The small, per-(row, unit) part of the backward for one (BLOCK_M x BLOCK_N) tile.

    Writes g = s⊙∂ẏ (an operand of the two weight-sized GEMMs that follow) and adds this tile's share of
    ∂b_g, ∂b_r, ∂V and ∂ε into fp32 buffers with atomics: the column sums (over rows) and the H-wide
    products are too thin for tl.dot, and a second pass over ∂ẏ would cost more bytes than the atomics.
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    mask = mask_m[:, None] & mask_n[None, :]
    off = (offs_m.to(tl.int64) * N)[:, None] + offs_n[None, :]
    dyt = tl.load(dyt_ptr + off, mask=mask, other=0.0).to(ACC)
    if NEED_DST:
        ds = dyt * tl.load(u_ptr + off, mask=mask, other=0.0).to(ACC)
    if HAS_BR:
        br = tl.load(br_ptr + offs_n, mask=mask_n, other=0.0).to(ACC)

    # Live tiles: ∂ẏ, ∂s = ∂ẏ⊙u and s (the register budget of the forward). No ∂t or t tile is formed:
    # with col_j = Σ_rows ε_j ∂ẏ (a column vector), ∂V_t[:, j] = b_r ⊙ col_j and ∂b_r = Σ_j V_t[:, j] ⊙ col_j,
    # and ∂t's share of ∂ε is the row sum of ∂ẏ ⊙ (b_r ⊙ V_t[:, j]).
    s = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    dbr = tl.zeros((BLOCK_N,), dtype=ACC)
    for j in range(H):
        e = tl.load(eps_ptr + offs_m * H + j, mask=mask_m, other=0.0).to(ACC)
        v_scale = tl.load(v_ptr + offs_n * H + j, mask=mask_n, other=0.0).to(ACC)
        if HAS_BR:
            v_shift = tl.load(v_ptr + (N + offs_n) * H + j, mask=mask_n, other=0.0).to(ACC)
        if NEED_G:
            s += e[:, None] * v_scale[None, :]
        if NEED_COL:
            col = tl.sum(dyt * e[:, None], axis=0)
            if NEED_DBR:
                dbr += v_shift * col
        if NEED_DV:
            tl.atomic_add(dv_ptr + offs_n * H + j, tl.sum(ds * e[:, None], axis=0), mask=mask_n)
            if HAS_BR:
                tl.atomic_add(dv_ptr + (N + offs_n) * H + j, br * col, mask=mask_n)
        if NEED_DEPS:
            de = tl.sum(ds * v_scale[None, :], axis=1)
            if HAS_BR:
                de += tl.sum(dyt * (br * v_shift)[None, :], axis=1)
            tl.atomic_add(deps_ptr + offs_m * H + j, de, mask=mask_m)

    if NEED_G:
        tl.store(g_ptr + off, (s * dyt).to(g_ptr.dtype.element_ty), mask=mask)
    if NEED_DBR:
        tl.atomic_add(dbr_ptr + offs_n, dbr, mask=mask_n)
    if NEED_DBG:
        dy = tl.load(dy_ptr + off, mask=mask, other=0.0).to(ACC)
        tl.atomic_add(dbg_ptr + offs_n, tl.sum(dy, axis=0), mask=mask_n)


@triton.jit
def _stn_bwd_dx_kernel(
        dy_ptr, dyt_ptr, g_ptr, wg_ptr, wr_ptr, dx_ptr, dxt_ptr, M, N, K,
        NEED_DX: tl.constexpr, NEED_DXT: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    """∂ẋ = ∂ẏ·W_g and ∂x = ∂y·W_g + g·W_r for a (BLOCK_M rows) x (BLOCK_N inputs) tile.

    Here N is the layer's input width `in` (the tile's columns) and K its output width `out` (reduced).
    """
    pid_m, pid_n = _grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    row = (offs_m.to(tl.int64) * K)[:, None]
    acc_x = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    acc_t = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        a_off = row + offs_k[None, :]
        a_mask = mask_m[:, None] & mask_k[None, :]
        w_off = (offs_k.to(tl.int64) * N)[:, None] + offs_n[None, :]
        w_mask = mask_k[:, None] & mask_n[None, :]
        wg = tl.load(wg_ptr + w_off, mask=w_mask, other=0.0)
        if NEED_DXT:
            dyt = tl.load(dyt_ptr + a_off, mask=a_mask, other=0.0)
            acc_t = tl.dot(dyt, wg, acc_t, input_precision=PRECISION, out_dtype=ACC)
        if NEED_DX:
            dy = tl.load(dy_ptr + a_off, mask=a_mask, other=0.0)
            g = tl.load(g_ptr + a_off, mask=a_mask, other=0.0)
            wr = tl.load(wr_ptr + w_off, mask=w_mask, other=0.0)
            acc_x = tl.dot(dy, wg, acc_x, input_precision=PRECISION, out_dtype=ACC)
            acc_x = tl.dot(g, wr, acc_x, input_precision=PRECISION, out_dtype=ACC)
    out_off = (offs_m.to(tl.int64) * N)[:, None] + offs_n[None, :]
    out_mask = mask_m[:, None] & mask_n[None, :]
    if NEED_DXT:
        tl.store(dxt_ptr + out_off, acc_t.to(dxt_ptr.dtype.element_ty), mask=out_mask)
    if NEED_DX:
        tl.store(dx_ptr + out_off, acc_x.to(dx_ptr.dtype.element_ty), mask=out_mask)


@triton.jit
def _stn_bwd_dw_kernel(
        dy_ptr, dyt_ptr, g_ptr, x_ptr, xt_ptr, dwg_ptr, dwr_ptr, M, N, K,
        HAS_XT: tl.constexpr, NEED_DWG: tl.constexpr, NEED_DWR: tl.constexpr, PRECISION: tl.constexpr,
        ACC: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    """∂W_g = ∂yᵀ·x + ∂ẏᵀ·ẋ and ∂W_r = gᵀ·x for an (BLOCK_M outputs) x (BLOCK_N inputs) tile.

    Here M is `out`, N is `in` and K the number of rows (reduced). Each x tile feeds both gradients.
    """
    pid_m, pid_n = _grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    acc_g = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    acc_r = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        # Transposed (out x rows) views of the row-major (rows x out) cotangents.
        c_off = offs_m[:, None] + (offs_k.to(tl.int64) * M)[None, :]
        c_mask = mask_m[:, None] & mask_k[None, :]
        x_off = (offs_k.to(tl.int64) * N)[:, None] + offs_n[None, :]
        x_mask = mask_k[:, None] & mask_n[None, :]
        x = tl.load(x_ptr + x_off, mask=x_mask, other=0.0)
        if NEED_DWG:
            dy = tl.load(dy_ptr + c_off, mask=c_mask, other=0.0)
            acc_g = tl.dot(dy, x, acc_g, input_precision=PRECISION, out_dtype=ACC)
            if HAS_XT:
                dyt = tl.load(dyt_ptr + c_off, mask=c_mask, other=0.0)
                xt = tl.load(xt_ptr + x_off, mask=x_mask, other=0.0)
                acc_g = tl.dot(dyt, xt, acc_g, input_precision=PRECISION, out_dtype=ACC)
        if NEED_DWR:
            g = tl.load(g_ptr + c_off, mask=c_mask, other=0.0)
            acc_r = tl.dot(g, x, acc_r, input_precision=PRECISION, out_dtype=ACC)
    out_off = (offs_m.to(tl.int64) * N)[:, None] + offs_n[None, :]
    out_mask = mask_m[:, None] & mask_n[None, :]
    if NEED_DWG:
        tl.store(dwg_ptr + out_off, acc_g.to(dwg_ptr.dtype.element_ty), mask=out_mask)
    if NEED_DWR:
        tl.store(dwr_ptr + out_off, acc_r.to(dwr_ptr.dtype.element_ty), mask=out_mask)


_KEY = ["M", "N", "K"]


def _tuned(kind: str, extra_key: List[str], kernel):
    return triton.autotune(configs=triton_config.gemm_configs(kind), key=_KEY + extra_key)(kernel)


# One jit function, two autotuned launchers: the conv gather needs its own (wider-warp) configs.
_stn_fwd = _tuned("fwd", ["HAS_XT", "NONLINEAR"], _stn_fwd_kernel)
_stn_conv_fwd = _tuned("conv", ["HAS_XT", "NONLINEAR", "C_IN", "IW", "KHW"], _stn_fwd_kernel)
_stn_bwd_dx = _tuned("bwd", ["NEED_DX", "NEED_DXT"], _stn_bwd_dx_kernel)
_stn_bwd_dw = _tuned("bwd", ["NEED_DWG", "NEED_DWR"], _stn_bwd_dw_kernel)

# The rows kernel accumulates with atomics: autotuning would re-run it into the same buffers, so it has one
# config (it is bandwidth-bound; 64x64 keeps the H loop's loads coalesced).
# 8 warps: at 4 the three live 64x64 fp32 tiles plus the H loop's temporaries spill on sm_80 and sm_90
# (144-240 bytes of stack, `python -m fastdstn.ops.compile_check`).
ROWS_BLOCK = dict(BLOCK_M=32, BLOCK_N=32) if triton_config.interpreting() else dict(BLOCK_M=64, BLOCK_N=64)
ROWS_WARPS = 8


def _gemm_grid(M: int, N: int):
    return lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)


# ----------------------------------------------------------------------------------------------------
# Launchers (shared with conv.py)
# ----------------------------------------------------------------------------------------------------

class ConvGeometry(NamedTuple):
    """The implicit-im2col addressing of `_stn_fwd_kernel` with CONV=True: input channels and image size, the
    output's pixels per image and width, the kernel's taps and width, stride, padding and dilation."""
    c_in: int
    ih: int
    iw: int
    ohw: int
    ow: int
    khw: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    dh: int
    dw: int


# What the linear kernel (CONV=False, which never reads them) passes: a 1x1 "convolution" of stride 1.
NO_CONV = ConvGeometry(c_in=1, ih=1, iw=1, ohw=1, ow=1, khw=1, kw=1, sh=1, sw=1, ph=0, pw=0, dh=1, dw=1)


def launch_forward(x: Tensor, xt: Optional[Tensor], eps: Tensor, Wg: Tensor, bg: Optional[Tensor], Wr: Tensor,
                   br: Optional[Tensor], V: Tensor, y: Tensor, yt: Optional[Tensor], u: Optional[Tensor],
                   M: int, N: int, K: int, nonlinear: bool, conv_geometry: Optional[ConvGeometry] = None) -> None:
    """Run `_stn_fwd_kernel` into preallocated y, ẏ (dual only) and u (when saved). All inputs contiguous."""
    if M == 0 or N == 0 or triton_config.skip_launch(x):
        return
    dummy = y
    kernel = _stn_fwd if conv_geometry is None else _stn_conv_fwd
    wrap_triton(kernel)[_gemm_grid(M, N)](
        x, dummy if xt is None else xt, eps, Wg, dummy if bg is None else bg, Wr, dummy if br is None else br, V,
        y, dummy if yt is None else yt, dummy if u is None else u,
        M, N, K, eps.shape[1], *(conv_geometry or NO_CONV),
        HAS_XT=xt is not None, HAS_BG=bg is not None, HAS_BR=br is not None, NONLINEAR=nonlinear,
        SAVE_U=u is not None, CONV=conv_geometry is not None, PRECISION=triton_config.input_precision(x.dtype),
        ACC=triton_config.acc_dtype(x.dtype))


def _empty(like: Tensor) -> Tensor:
    return like.new_empty((0,))


def linear_backward(dy: Tensor, dyt: Tensor, x: Tensor, xt: Optional[Tensor], eps: Tensor, Wg: Tensor,
                    Wr: Tensor, br: Optional[Tensor], V: Tensor, u: Optional[Tensor],
                    needs: Sequence[bool]) -> List[Tensor]:
    """Gradients (∂x, ∂ẋ, ∂ε, ∂W_g, ∂b_g, ∂W_r, ∂b_r, ∂V) of the dual op; an empty tensor where not needed.

    needs: the same eight flags. The nonlinear op calls this with dyt = dy and xt = None.
    """
    need_dx, need_dxt, need_deps, need_dwg, need_dbg, need_dwr, need_dbr, need_dv = (bool(n) for n in needs)
    need_dxt = need_dxt and xt is not None
    need_dbr = need_dbr and br is not None
    M, K = x.shape
    N = Wg.shape[0]
    H = eps.shape[1]
    acc = triton_config.acc_dtype(x.dtype)
    f32 = dict(device=x.device, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
    need_g = need_dx or need_dwr
    need_dst = need_deps or need_dv
    if need_dst and u is None:
        raise RuntimeError("fastdstn.ops (triton backend): the backward needs u = x·W_rᵀ, which the forward did not "
                           "save")
    g = torch.empty((M, N), device=x.device, dtype=x.dtype) if need_g else None
    dbg = torch.zeros((N,), **f32) if need_dbg else None
    dbr = torch.zeros((N,), **f32) if need_dbr else None
    dv = torch.zeros(V.shape, **f32) if need_dv else None
    deps = torch.zeros(eps.shape, **f32) if need_deps else None
    if triton_config.skip_launch(x):
        pass
    elif (need_g or need_dbg or need_dbr or need_dst) and M > 0 and N > 0:
        grid = (triton.cdiv(M, ROWS_BLOCK["BLOCK_M"]), triton.cdiv(N, ROWS_BLOCK["BLOCK_N"]))
        dummy = dyt
        wrap_triton(_stn_bwd_rows_kernel)[grid](
            dy, dyt, dummy if u is None else u, eps, V, dummy if br is None else br,
            dummy if g is None else g, dummy if dbg is None else dbg, dummy if dbr is None else dbr,
            dummy if dv is None else dv, dummy if deps is None else deps, M, N, H,
            HAS_BR=br is not None, NEED_G=need_g, NEED_DBG=need_dbg, NEED_DBR=need_dbr, NEED_DST=need_dst,
            NEED_COL=br is not None and (need_dbr or need_dv),
            NEED_DV=need_dv, NEED_DEPS=need_deps, ACC=acc, num_warps=ROWS_WARPS, **ROWS_BLOCK)

    precision = triton_config.input_precision(x.dtype)
    dx = torch.empty_like(x) if need_dx else None
    dxt = torch.empty_like(xt) if need_dxt else None
    if (need_dx or need_dxt) and M > 0 and K > 0 and not triton_config.skip_launch(x):
        if N == 0:
            for t_ in (dx, dxt):
                if t_ is not None:
                    t_.zero_()
        else:
            dummy = dyt
            wrap_triton(_stn_bwd_dx)[_gemm_grid(M, K)](
                dy, dyt, dummy if g is None else g, Wg, Wr, dummy if dx is None else dx,
                dummy if dxt is None else dxt, M, K, N, NEED_DX=need_dx, NEED_DXT=need_dxt, PRECISION=precision,
                ACC=acc)

    dwg = torch.empty_like(Wg) if need_dwg else None
    dwr = torch.empty_like(Wr) if need_dwr else None
    if (need_dwg or need_dwr) and N > 0 and K > 0 and not triton_config.skip_launch(x):
        if M == 0:
            for t_ in (dwg, dwr):
                if t_ is not None:
                    t_.zero_()
        else:
            dummy = dyt
            wrap_triton(_stn_bwd_dw)[_gemm_grid(N, K)](
                dy, dyt, dummy if g is None else g, x, dummy if xt is None else xt,
                dummy if dwg is None else dwg, dummy if dwr is None else dwr, N, K, M,
                HAS_XT=xt is not None, NEED_DWG=need_dwg, NEED_DWR=need_dwr, PRECISION=precision,
                ACC=acc)

    def out(t_: Optional[Tensor], dtype: torch.dtype) -> Tensor:
        return _empty(x) if t_ is None else t_.to(dtype)

    return [out(dx, x.dtype), out(dxt, x.dtype), out(deps, eps.dtype), out(dwg, Wg.dtype),
            out(dbg, Wg.dtype), out(dwr, Wr.dtype), out(dbr, Wr.dtype if br is None else br.dtype),
            out(dv, V.dtype)]


# ----------------------------------------------------------------------------------------------------
# Registered ops: fastdstn::stn_linear_dual_triton, ::linear, ::linear_backward
# ----------------------------------------------------------------------------------------------------

def _c(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.contiguous()


@triton_op("fastdstn::stn_linear_backward_triton", mutates_args=())
def _linear_backward_op(dy: Tensor, dyt: Tensor, x: Tensor, xt: Optional[Tensor], eps: Tensor, Wg: Tensor,
                        Wr: Tensor, br: Optional[Tensor], V: Tensor, u: Optional[Tensor],
                        needs: List[bool]) -> List[Tensor]:
    return linear_backward(dy.contiguous(), dyt.contiguous(), x.contiguous(), _c(xt), eps.contiguous(),
                           Wg.contiguous(), Wr.contiguous(), _c(br), V.contiguous(), _c(u), needs)


@triton_op("fastdstn::stn_linear_dual_triton", mutates_args=())
def _linear_dual_op(x: Tensor, xt: Optional[Tensor], eps: Tensor, Wg: Tensor, bg: Optional[Tensor], Wr: Tensor,
                    br: Optional[Tensor], V: Tensor, save_u: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """(y, ẏ, u): u = x·W_rᵀ when save_u (for the backward), else an empty tensor."""
    x, xt, eps, Wg, bg, Wr, br, V = (_c(t) for t in (x, xt, eps, Wg, bg, Wr, br, V))
    M, K = x.shape
    N = Wg.shape[0]
    y = x.new_empty((M, N))
    yt = x.new_empty((M, N))
    u = x.new_empty((M, N)) if save_u else None
    launch_forward(x, xt, eps, Wg, bg, Wr, br, V, y, yt, u, M, N, K, nonlinear=False)
    return y, yt, (_empty(x) if u is None else u)


@triton_op("fastdstn::stn_linear_triton", mutates_args=())
def _linear_op(x: Tensor, h: Tensor, Wg: Tensor, bg: Optional[Tensor], Wr: Tensor, br: Optional[Tensor],
               V: Tensor, save_u: bool) -> Tuple[Tensor, Tensor]:
    """(y, u): the nonlinear STN linear layer, u as in `linear_dual`."""
    x, h, Wg, bg, Wr, br, V = (_c(t) for t in (x, h, Wg, bg, Wr, br, V))
    M, K = x.shape
    N = Wg.shape[0]
    y = x.new_empty((M, N))
    u = x.new_empty((M, N)) if save_u else None
    launch_forward(x, None, h, Wg, bg, Wr, br, V, y, None, u, M, N, K, nonlinear=True)
    return y, (_empty(x) if u is None else u)


def _none_if_empty(grads: List[Tensor], needs: Sequence[bool]) -> List[Optional[Tensor]]:
    return [g if n else None for g, n in zip(grads, needs)]


def dual_needs(ctx, xt: Optional[Tensor], br: Optional[Tensor]) -> List[bool]:
    """A dual op's needs_input_grad in the backward's order (x, xt, eps, Wg, bg, Wr, br, V), False for an absent
    input; the setup_context stored ctx.has_bg."""
    n = ctx.needs_input_grad
    return [n[0], n[1] and xt is not None, n[2], n[3], n[4] and ctx.has_bg, n[5], n[6] and br is not None, n[7]]


def nonlinear_needs(ctx, br: Optional[Tensor]) -> List[bool]:
    """The same for a nonlinear op (x, h, Wg, bg, Wr, br, V): its y is the dual's y + ẏ with ẋ = 0, so its
    backward is the dual's with ∂y = ∂ẏ = ∂out and no ẋ."""
    n = ctx.needs_input_grad
    return [n[0], False, n[1], n[2], n[3] and ctx.has_bg, n[4], n[5] and br is not None, n[6]]


def both_cotangents(dy: Optional[Tensor], dyt: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """(∂y, ∂ẏ) with a missing one (not all of a dual op's outputs were used) as zeros; one must be given."""
    return (torch.zeros_like(dyt) if dy is None else dy), (torch.zeros_like(dy) if dyt is None else dyt)


def save_inputs(ctx, tensors, bg: Optional[Tensor], u: Optional[Tensor]) -> None:
    """What a dense op's backward reads: its tensor inputs but b_g (∂b_g needs only ∂y; has_bg says whether it
    was given) and u = x·W_rᵀ (None where the forward did not keep it)."""
    ctx.has_bg = bg is not None
    ctx.save_for_backward(*tensors, u)


def saved_inputs(ctx, op: str):
    """The tensors save_inputs kept, once a backward that would build a graph was refused (the backward has no
    derivative of its own)."""
    checks.refuse_double_backward(op)
    return ctx.saved_tensors


def _dual_setup(ctx, inputs, output):
    x, xt, eps, Wg, bg, Wr, br, V, save_u = inputs
    save_inputs(ctx, (x, xt, eps, Wg, Wr, br, V), bg, output[2] if save_u else None)


def _dual_backward(ctx, dy, dyt, du):
    x, xt, eps, Wg, Wr, br, V, u = saved_inputs(ctx, "fastdstn::stn_linear_dual_triton")
    if dy is None and dyt is None:
        return (None,) * 9
    needs = dual_needs(ctx, xt, br)
    dy, dyt = both_cotangents(dy, dyt)
    grads = _none_if_empty(torch.ops.fastdstn.stn_linear_backward_triton(
        dy, dyt, x, xt, eps, Wg, Wr, br, V, u, needs), needs)
    dx, dxt, deps, dwg, dbg, dwr, dbr, dv = grads
    return dx, dxt, deps, dwg, dbg, dwr, dbr, dv, None


def _linear_setup(ctx, inputs, output):
    x, h, Wg, bg, Wr, br, V, save_u = inputs
    save_inputs(ctx, (x, h, Wg, Wr, br, V), bg, output[1] if save_u else None)


def _linear_backward(ctx, dy, du):
    x, h, Wg, Wr, br, V, u = saved_inputs(ctx, "fastdstn::stn_linear_triton")
    needs = nonlinear_needs(ctx, br)
    grads = _none_if_empty(torch.ops.fastdstn.stn_linear_backward_triton(
        dy, dy, x, None, h, Wg, Wr, br, V, u, needs), needs)
    dx, _, dh, dwg, dbg, dwr, dbr, dv = grads
    return dx, dh, dwg, dbg, dwr, dbr, dv, None


_linear_dual_op.register_autograd(_dual_backward, setup_context=_dual_setup)
_linear_op.register_autograd(_linear_backward, setup_context=_linear_setup)


def _needs_u(*tensors: Optional[Tensor]) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


# ----------------------------------------------------------------------------------------------------
# The backend's functions (signatures of fastdstn.ops.dense.reference)
# ----------------------------------------------------------------------------------------------------

def stn_linear_dual(x: Tensor, xt: Optional[Tensor], eps: Tensor, Wg: Tensor, bg: Optional[Tensor], Wr: Tensor,
                    br: Optional[Tensor], V: Tensor) -> Tuple[Tensor, Tensor]:
    """Primal y = x·W_gᵀ + b_g and tangent ẏ = ẋ·W_gᵀ + s⊙(x·W_rᵀ) + t⊙b_r, [s|t] = ε·Vᵀ (one kernel)."""
    triton_config.check_device(x, xt, eps, Wg, bg, Wr, br, V)
    y, yt, _ = torch.ops.fastdstn.stn_linear_dual_triton(x, xt, eps, Wg, bg, Wr, br, V, _needs_u(eps, V))
    return y, yt


def stn_linear(x: Tensor, h: Tensor, Wg: Tensor, bg: Optional[Tensor], Wr: Tensor, br: Optional[Tensor],
               V: Tensor) -> Tensor:
    """y = x·W_gᵀ + b_g + s⊙(x·W_rᵀ) + t⊙b_r, [s|t] = h·Vᵀ (one kernel)."""
    triton_config.check_device(x, h, Wg, bg, Wr, br, V)
    y, _ = torch.ops.fastdstn.stn_linear_triton(x, h, Wg, bg, Wr, br, V, _needs_u(h, V))
    return y
