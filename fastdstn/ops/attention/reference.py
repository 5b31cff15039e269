"""Softmax attention and its dual (tangent) pass in plain PyTorch: the reference backend of
`fastdstn.ops.attention`, any device and dtype. The formulas and their derivation: docs/attention.md.

    O = (P ⊙ D)·V,  P = softmax(S),  S = scale·Q·Kᵀ + M       D: the scaled dropout keep mask (1 without dropout)
    Ṡ = scale·(Q̇·Kᵀ + Q·K̇ᵀ),  r_i = Σ_j P_ij Ṡ_ij
    Ȯ = (P ⊙ (Ṡ − r) ⊙ D)·V + (P ⊙ D)·V̇

Shapes follow torch's scaled_dot_product_attention: q (..., Tq, d), k (..., Tk, d), v (..., Tk, dv), the
same leading dims (examples first); attn_mask broadcastable to (..., Tq, Tk), bool (True attends) or additive.

Memory: the work runs over blocks of `BLOCK_ROWS` query rows (all heads and examples at once), so no (Tq, Tk)
matrix ever exists: the temporaries are O(BLOCK_ROWS·Tk) per head. When no gradient is needed w.r.t. the
primal q, k, v or the mask (Δ-STN's steps: the primal is frozen), a custom autograd Function keeps only O
(beside the inputs) for the backward, which recomputes P blockwise: O(T·d) memory instead of forward-mode
AD's O(T²) per head. Otherwise autograd records the blockwise computation (differentiable w.r.t. everything).

Dropout: the keep mask of element (n, i, j) (n the flattened index of the leading dims) is a function of
(seed, n, i, j) alone: Philox4x32-10 with key `seed` and counter (j, i, n, 0), the same numbers Triton's
`tl.philox` draws, so this backend and the Triton kernel drop the same attention weights. A block's mask comes
from the `keep_mask` the entry points take: `philox_keep_mask` here, the compiled op with the same numbers on the
cpp backend (cpp.py), which is this module's algorithm otherwise.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Tuple

import torch

Tensor = torch.Tensor

# Query rows per block. Forward + tangent backward at T = 4096, batch 1, 2 heads, d = 64, 1 thread
# (`python benchmarks/bench_attention.py --threads 1 --block-sweep --rounds 7`, benchmarks/history/attention.md):
# 3260 / 2910 / 2701 / 2612 / 2598 ms with 32 / 64 / 128 / 256 / 512 rows, peak 24 / 26 / 34 / 50 / 82 MB.
# Thin blocks make thin, slow products; 128 rows are within 4% of the fastest at 40% of its memory.
BLOCK_ROWS = 128

# Philox4x32-10 constants (Salmon et al. 2011; the ones triton.language.random uses).
_M32 = 0xFFFFFFFF
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57
_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85
# tl.uint_to_uniform_float: the largest scale with (2^31 − 1)·scale < 1 in float32.
_UNIFORM_SCALE = 4.6566127342e-10


def _mul_hi_lo(x: Tensor, a: int) -> Tuple[Tensor, Tensor]:
    """High and low 32 bits of x·a for 32-bit x (held in int64) and a 32-bit constant a, without overflowing
    int64: a is split into 16-bit halves."""
    low = x * (a & 0xFFFF)
    mid = x * (a >> 16) + (low >> 16)
    return mid >> 16, ((mid & 0xFFFF) << 16) | (low & 0xFFFF)


def philox(seed: int, c0: Tensor, c1: Tensor, c2: Tensor, c3: Tensor) -> Tensor:
    """The first output word of Philox4x32-10 for the counter (c0, c1, c2, c3) under the 64-bit key `seed`
    (low word first), as int64 tensors holding 32-bit values, broadcast together: `tl.philox`'s first result."""
    k0, k1 = seed & _M32, (seed >> 32) & _M32
    c0, c1, c2, c3 = torch.broadcast_tensors(c0, c1, c2, c3)
    for _ in range(10):
        hi_b, lo_b = _mul_hi_lo(c2, _ROUND_B)
        hi_a, lo_a = _mul_hi_lo(c0, _ROUND_A)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0, k1 = (k0 + _KEY_A) & _M32, (k1 + _KEY_B) & _M32
    return c0


def philox_uniform(seed: int, c0: Tensor, c1: Tensor, c2: Tensor) -> Tensor:
    """Uniform float32 numbers in [0, 1) from the counter (c0, c1, c2, 0): `philox` mapped to a float as
    `tl.uint_to_uniform_float` does, so equal, number for number, to what the Triton kernel draws."""
    word = philox(seed, c0, c1, c2, torch.zeros((), dtype=torch.int64, device=c0.device))
    # Read as int32 and fold the negative half onto [0, 2^31): x if x < 2^31, else ~x = 2^32 − 1 − x.
    folded = torch.where(word >= 1 << 31, _M32 - word, word)
    return folded.to(torch.float32) * _UNIFORM_SCALE


def philox_keep_mask(seed: int, head_rate: Tensor, row_start: int, rows: int, keys: int,
                     dtype: torch.dtype) -> Tensor:
    """The scaled keep mask D (heads, rows, keys) of query rows row_start … row_start + rows − 1 and keys
    0 … keys − 1 of the flattened heads whose drop rates are head_rate (heads,): 1/(1 − p) where weight (n, i, j)
    is kept, 0 where dropped, weight (n, i, j) drawn by `philox_uniform` with counter (j, i, n, 0). Drawn
    against the float32 rate, scaled in `dtype`: what the Triton kernel does too. The compiled backend draws the
    same mask in C++ (fastdstn::attention_keep_mask, fastdstn/ops/attention/cpp.py)."""
    device = head_rate.device
    n = torch.arange(head_rate.shape[0], device=device, dtype=torch.int64)[:, None, None]
    i = torch.arange(row_start, row_start + rows, device=device, dtype=torch.int64)[:, None]
    j = torch.arange(keys, device=device, dtype=torch.int64)[None, :]
    uniform = philox_uniform(seed, j, i, n)
    rate = head_rate[:, None, None]
    p = rate.to(dtype)
    return torch.where(uniform >= rate.to(torch.float32), 1.0 / (1.0 - p), 0.0)


# What draws a block's keep mask: `philox_keep_mask`'s signature. The compiled backend passes its own.
KeepMask = Callable[[int, Tensor, int, int, int, torch.dtype], Tensor]


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Scores, softmax and accumulations run in float32 for half-precision inputs (as flash attention does)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class _Problem:
    """One attention call's fixed data: the operands in the working dtype, the mask, the scale and the dropout
    draw (`keep_mask` draws a block's keep mask); `scores`, `softmax` and `keep` give a block of query rows' S,
    P and D."""

    def __init__(self, q: Tensor, k: Tensor, v: Tensor, attn_mask: Optional[Tensor], is_causal: bool,
                 scale: Optional[float], dropout_rate: Optional[Tensor], seed: int,
                 keep_mask: KeepMask = philox_keep_mask) -> None:
        work = _work_dtype(q.dtype)
        self.q, self.k, self.v = q.to(work), k.to(work), v.to(work)
        self.work = work
        self.tq, self.tk = q.shape[-2], k.shape[-2]
        self.scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
        self.is_causal = is_causal
        self.mask = None
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                attn_mask = torch.zeros_like(attn_mask, dtype=work).masked_fill(~attn_mask, float("-inf"))
            self.mask = attn_mask.to(work).reshape((1,) * max(0, 2 - attn_mask.dim()) + attn_mask.shape)
        self.rate, self.seed, self.keep_mask = dropout_rate, seed, keep_mask
        self.lead = q.shape[:-2]
        if dropout_rate is not None:
            # The drop rate of each flattened head n (n indexes the leading dims: the Philox counter's third word).
            lead = self.lead
            self.head_rate = dropout_rate.detach().reshape(-1, *[1] * (len(lead) - 1)).expand(*lead).reshape(-1)

    def key_stop(self, rows: slice) -> int:
        """Keys past this one get no weight from these rows (causal attention: key j ≤ query row i)."""
        return min(rows.stop, self.tk) if self.is_causal else self.tk

    def scores(self, q_rows: Tensor, rows: slice) -> Tensor:
        """S for the query rows `rows` (q_rows = q[..., rows, :], which may carry autograd history)."""
        stop = self.key_stop(rows)
        s = (q_rows * self.scale) @ self.k[..., :stop, :].transpose(-1, -2)
        if self.mask is not None:
            s = s + self.mask[..., rows, :stop] if self.mask.shape[-2] != 1 else s + self.mask[..., :stop]
        if self.is_causal:
            i = torch.arange(rows.start, rows.stop, device=s.device)[:, None]
            j = torch.arange(stop, device=s.device)[None, :]
            s = s.masked_fill(j > i, float("-inf"))
        return s

    def softmax(self, s: Tensor, rows: slice) -> Tensor:
        """P of the block's scores. A row without any attended key (its mask all −inf) gets P = 0, as torch's
        SDPA gives (softmax alone would give NaN); causal rows always attend key 0."""
        p = torch.softmax(s, -1)
        if self.mask is not None:
            mask_rows = self.mask[..., rows, :] if self.mask.shape[-2] != 1 else self.mask
            empty = torch.isneginf(mask_rows).all(-1, keepdim=True)
            if bool(empty.any()):
                p = p.masked_fill(empty, 0.0)
        return p

    def keep(self, rows: slice) -> Optional[Tensor]:
        """The scaled keep mask D (1/(1 − p) where kept, 0 where dropped) of the block, or None without dropout."""
        if self.rate is None:
            return None
        mask = self.keep_mask(self.seed, self.head_rate, rows.start, rows.stop - rows.start, self.key_stop(rows),
                              self.work)
        return mask.reshape(*self.lead, *mask.shape[1:])

    def row_blocks(self) -> List[slice]:
        return [slice(start, min(start + BLOCK_ROWS, self.tq)) for start in range(0, self.tq, BLOCK_ROWS)]


def _dual_forward(pb: _Problem, qt: Optional[Tensor], kt: Optional[Tensor], vt: Optional[Tensor],
                  tangent: bool) -> Tuple[Tensor, Optional[Tensor]]:
    """(O, Ȯ or None) block by block, in the working dtype. The operands (pb.q, pb.k, pb.v and the tangents)
    may carry autograd history: this is also the differentiable path."""
    q, k, v = pb.q, pb.k, pb.v
    dv = v.shape[-1]
    # Ṡ = scale·(Q̇·Kᵀ + Q·K̇ᵀ) as one product with twice the inner size: [Q̇ | Q]·[K | K̇]ᵀ; and
    # (P⊙D)·[V | V̇] gives O and the V̇ term of Ȯ in one product.
    left = right = None
    if tangent and qt is not None and kt is not None:
        left, right = torch.cat([qt, q], -1) * pb.scale, torch.cat([k, kt], -1)
    elif tangent and qt is not None:
        left, right = qt * pb.scale, k
    elif tangent and kt is not None:
        left, right = q * pb.scale, kt
    values = torch.cat([v, vt], -1) if tangent and vt is not None else v
    outs, outs_t = [], []
    for rows in pb.row_blocks():
        stop = pb.key_stop(rows)
        p = pb.softmax(pb.scores(q[..., rows, :], rows), rows)
        keep = pb.keep(rows)
        pd = p if keep is None else p * keep
        pv = pd @ values[..., :stop, :]
        o = pv[..., :dv]
        outs.append(o)
        if not tangent:
            continue
        ot = pv[..., dv:] if vt is not None else torch.zeros_like(o)
        if left is not None:
            pst = p * (left[..., rows, :] @ right[..., :stop, :].transpose(-1, -2))
            r = pst.sum(-1, keepdim=True)
            # (P ⊙ (Ṡ − r) ⊙ D)·V = (P ⊙ Ṡ ⊙ D)·V − r·O
            ot = ot + (pst if keep is None else pst * keep) @ v[..., :stop, :] - r * o
        outs_t.append(ot)
    return torch.cat(outs, -2), (torch.cat(outs_t, -2) if tangent else None)


@torch.no_grad()
def _backward(pb: _Problem, o: Tensor, grad: Tensor, needs: Tuple[bool, bool, bool]) -> Tuple[Optional[Tensor], ...]:
    """The attention backward at the primal point, for the cotangent `grad` of an output that is (P ⊙ D)·X:
    X = V for the primal output O (gradients of q, k, v) and, because Ȯ is linear in (Q̇, K̇, V̇) with the same
    coefficients, X = V̇ for the tangent Ȯ (gradients of q̇, k̇, v̇). `o` is the primal output O.

        dX = (P ⊙ D)ᵀ·G,  dS = P ⊙ ((G·Vᵀ) ⊙ D − δ),  δ_i = G_i·O_i,  dQ = scale·dS·K,  dK = scale·dSᵀ·Q
    """
    need_q, need_k, need_v = needs
    grad = grad.to(pb.work)
    dq_blocks = []
    dk = torch.zeros_like(pb.k) if need_k else None
    dv = torch.zeros_like(pb.v) if need_v else None
    delta = (grad * o).sum(-1, keepdim=True)
    for rows in pb.row_blocks():
        stop = pb.key_stop(rows)
        q_rows, g_rows = pb.q[..., rows, :], grad[..., rows, :]
        p = pb.softmax(pb.scores(q_rows, rows), rows)
        keep = pb.keep(rows)
        if need_v:
            dv[..., :stop, :] += (p if keep is None else p * keep).transpose(-1, -2) @ g_rows
        if need_q or need_k:
            ds = g_rows @ pb.v[..., :stop, :].transpose(-1, -2)
            if keep is not None:
                ds.mul_(keep)
            ds.sub_(delta[..., rows, :]).mul_(p).mul_(pb.scale)
            if need_q:
                dq_blocks.append(ds @ pb.k[..., :stop, :])
            if need_k:
                dk[..., :stop, :] += ds.transpose(-1, -2) @ q_rows
    dq = torch.cat(dq_blocks, -2) if need_q else None
    return dq, dk, dv


class _TangentPath(torch.autograd.Function):
    """attention_dual when only the tangents need gradients: keeps O (and the inputs) for the backward, which
    recomputes P blockwise and returns the gradients of (q̇, k̇, v̇)."""

    @staticmethod
    def forward(ctx, q, k, v, qt, kt, vt, attn_mask, is_causal, scale, dropout_rate, seed, keep_mask):
        pb = _Problem(q, k, v, attn_mask, is_causal, scale, dropout_rate, seed, keep_mask)
        tangents = [None if t is None else t.to(pb.work) for t in (qt, kt, vt)]
        o, ot = _dual_forward(pb, *tangents, tangent=True)
        ctx.problem = pb
        ctx.dtypes = [None if t is None else t.dtype for t in (qt, kt, vt)]
        ctx.save_for_backward(o)
        out = o.to(q.dtype)
        ctx.mark_non_differentiable(out)
        return out, ot.to(q.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_o, grad_ot):
        (o,) = ctx.saved_tensors
        needs = tuple(bool(n) for n in ctx.needs_input_grad[3:6])
        grads = _backward(ctx.problem, o, grad_ot, needs) if any(needs) else (None, None, None)
        tangent_grads = [None if g is None else g.to(dtype) for g, dtype in zip(grads, ctx.dtypes)]
        return (None, None, None, *tangent_grads, None, None, None, None, None, None)


class _Attention(torch.autograd.Function):
    """attention (primal only) when the mask needs no gradient: keeps O in the working dtype (the second output)
    for the blockwise backward of (q, k, v). Its jvp is attention_dual's tangent, so forward-mode AD and
    torch.func.jvp run through it (the check of Δ-STN's dual pass against torch.func.jvp does)."""

    @staticmethod
    def forward(q, k, v, attn_mask, is_causal, scale, dropout_rate, seed, keep_mask):
        pb = _Problem(q, k, v, attn_mask, is_causal, scale, dropout_rate, seed, keep_mask)
        o, _ = _dual_forward(pb, None, None, None, tangent=False)
        return o.to(q.dtype), o.detach()     # two tensors, also when the dtypes agree and .to returns o itself

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.problem = _Problem(*inputs)
        ctx.dtypes = tuple(t.dtype for t in inputs[:3])
        ctx.save_for_backward(output[1])
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_o, _):
        (o,) = ctx.saved_tensors
        grads = _backward(ctx.problem, o, grad_o, tuple(bool(n) for n in ctx.needs_input_grad[:3]))
        return (*[None if g is None else g.to(dtype) for g, dtype in zip(grads, ctx.dtypes)],
                None, None, None, None, None, None)

    @staticmethod
    def jvp(ctx, qt, kt, vt, *_):
        pb = ctx.problem
        _, ot = _dual_forward(pb, *[None if t is None else t.to(pb.work) for t in (qt, kt, vt)], tangent=True)
        return ot.to(ctx.dtypes[0]), None


def _needs_graph(*tensors: Optional[Tensor]) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def attention_dual(q: Tensor, k: Tensor, v: Tensor, qt: Optional[Tensor], kt: Optional[Tensor],
                   vt: Optional[Tensor], attn_mask: Optional[Tensor] = None, is_causal: bool = False,
                   scale: Optional[float] = None, dropout_rate: Optional[Tensor] = None,
                   seed: int = 0, *, keep_mask: KeepMask = philox_keep_mask) -> Tuple[Tensor, Tensor]:
    """(O, Ȯ): attention and its tangent along (q̇, k̇, v̇) (None: zero), in the dtype of q; `keep_mask` draws
    the dropout mask of each block of query rows."""
    if not _needs_graph(q, k, v, attn_mask):
        return _TangentPath.apply(q, k, v, qt, kt, vt, attn_mask, is_causal, scale, dropout_rate, seed, keep_mask)
    pb = _Problem(q, k, v, attn_mask, is_causal, scale, dropout_rate, seed, keep_mask)
    tangents = [None if t is None else t.to(pb.work) for t in (qt, kt, vt)]
    o, ot = _dual_forward(pb, *tangents, tangent=True)
    return o.to(q.dtype), ot.to(q.dtype)


def attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Optional[Tensor] = None, is_causal: bool = False,
              scale: Optional[float] = None, dropout_rate: Optional[Tensor] = None, seed: int = 0, *,
              keep_mask: KeepMask = philox_keep_mask) -> Tensor:
    """O = (softmax(S) ⊙ D)·V with per-example attention-weight dropout, in the dtype of q; `keep_mask` draws
    the dropout mask of each block of query rows."""
    if not _needs_graph(attn_mask):
        return _Attention.apply(q, k, v, attn_mask, is_causal, scale, dropout_rate, seed, keep_mask)[0]
    pb = _Problem(q, k, v, attn_mask, is_causal, scale, dropout_rate, seed, keep_mask)
    return _dual_forward(pb, None, None, None, tangent=False)[0].to(q.dtype)
