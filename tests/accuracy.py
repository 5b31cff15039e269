"""The one accuracy rule of the op and kernel tests: a result computed in a low precision is compared, element by
element, with the float64 truth on the same inputs, within the forward-error bound of a sum of products.

For a value computed as a sum of products of inputs, in any order, with unit roundoff u (half the machine
epsilon) and n roundings along its longest chain of operations (Higham, *Accuracy and Stability of Numerical
Algorithms*, 2nd ed., §3.1 and Lemma 3.1):

    |fl(Σ aᵢbᵢ) − Σ aᵢbᵢ| ≤ γ_n · Σ |aᵢ||bᵢ|,      γ_n = n·u / (1 − n·u).

The bound holds for every summation order, blocking or fused multiply-add, so it does not depend on how lucky
another library's GEMM is on the same inputs (MKL takes different paths on Intel and AMD CPUs). The magnitude
Σ|aᵢ||bᵢ| of each element is the float64 reference evaluated on the absolute values of the inputs (and, for
gradients, of the cotangent): for ops built from products and sums alone, that is exactly the sum of the absolute
values of the terms (`magnitude`). n counts the reduction lengths the element goes through plus the elementwise
operations around them; each test states its count.

The float64 truth carries its own error, γ_n(u_float64)·magnitude, which the bound adds (it matters only for
results computed in float64 themselves).

Values rounded to a narrower format than the accumulation (fp16/bf16 intermediates and outputs; the operands of
a TF32 product on a GPU) add one u of that format per rounding along the chain: the bound becomes
(Σ k·u_format + γ_n(u_accumulate))·magnitude (`rounding`, built with `roundings`).

Pointwise ops with transcendental functions (the LSTM cell) have no reduction and are not sums of products; their
magnitude is the scale of the result, max(max|exact|, 1), and n counts their roundings with each sigmoid/tanh
taken as a few ulps (typical-case use of the same bound, stated where used).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch

Tensor = torch.Tensor
Values = Union[Tensor, None, Sequence]


def unit_roundoff(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps / 2


def gamma(n: int, dtype: torch.dtype = torch.float32) -> float:
    """γ_n = n·u/(1 − n·u) of the accumulation dtype."""
    nu = n * unit_roundoff(dtype)
    assert nu < 1, f"γ_n undefined for n = {n} in {dtype}"
    return nu / (1 - nu)


def _flat(values: Values) -> list:
    if isinstance(values, (torch.Tensor, int, float)) or values is None:
        return [values]
    return [leaf for v in values for leaf in _flat(v)]


def magnitude(fn: Callable, args: Sequence, cotangents: Optional[Sequence] = None) -> list:
    """Σ|terms| of each output of `fn` (or, with `cotangents`, of each input gradient of Σ output·cotangent):
    fn evaluated in float64 on the absolute values of its tensor arguments. Valid for ops made of products and
    sums (the dense, embedding and dropout ops and their backward). `cotangents` pair with the outputs by
    position; a None output or cotangent takes no part."""
    leaves = [None if not isinstance(a, torch.Tensor) else
              a.detach().double().abs().requires_grad_(a.requires_grad and cotangents is not None) for a in args]
    with torch.enable_grad():
        outputs = fn(*leaves)
        outputs = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
        if cotangents is None:
            return [None if o is None else o.detach() for o in outputs]
        pairs = [(o, c) for o, c in zip(outputs, cotangents) if o is not None and c is not None and o.requires_grad]
        loss = sum((o * c.detach().double().abs()).sum() for o, c in pairs)
        wanted = [t for t in leaves if t is not None and t.requires_grad]
        grads = iter(torch.autograd.grad(loss, wanted, allow_unused=True) if wanted else ())
    result = []
    for t in leaves:
        if t is None or not t.requires_grad:
            result.append(None)
            continue
        g = next(grads)
        result.append(torch.zeros_like(t) if g is None else g)
    return result


def roundings(count: int, fmt: Union[torch.dtype, str]) -> float:
    """count·u of a storage format: a torch dtype, or "tf32" (10 explicit mantissa bits, u = 2⁻¹¹)."""
    return count * (2.0 ** -11 if fmt == "tf32" else unit_roundoff(fmt))


def tf32_roundings(kind: str, device: Union[str, torch.device]) -> float:
    """The operand roundings of one product when CUDA runs float32 `kind` ("matmul" or "conv") in TF32 (torch's
    allow_tf32 flags: off for matmul, on for cuDNN convolutions by default), else 0."""
    if torch.device(device).type != "cuda":
        return 0.0
    allowed = torch.backends.cuda.matmul.allow_tf32 if kind == "matmul" else torch.backends.cudnn.allow_tf32
    return roundings(2, "tf32") if allowed else 0.0


def assert_within_bound(name: str, got: Values, exact: Values, mag: Values, n: int,
                        accumulate: torch.dtype = torch.float32, rounding: float = 0.0) -> None:
    """|got − exact| ≤ (rounding + γ_n(u_accumulate) + γ_n(u_float64))·mag, element by element, for each pair of
    (nested) tensors. mag is a tensor of magnitudes (see `magnitude`) or a number (a scale, for pointwise ops);
    rounding is the relative error of roundings to narrower formats (see `roundings`). An `exact` of None accepts
    a None or all-zero result (a fused backward may return zeros for an unused gradient)."""
    factor = gamma(n, accumulate) + gamma(n, torch.float64) + rounding
    exact = _flat(exact)
    mags = [mag] * len(exact) if isinstance(mag, (int, float)) else _flat(mag)
    for i, (g, e, m) in enumerate(zip(_flat(got), exact, mags)):
        if e is None:
            assert g is None or not g.detach().abs().max().item(), f"{name}[{i}]: expected None or zeros"
            continue
        assert g is not None, f"{name}[{i}]: expected a tensor, received None"
        assert g.shape == e.shape, f"{name}[{i}]: shape {tuple(g.shape)} != {tuple(e.shape)}"
        if not e.numel():
            continue
        err = (g.detach().double().cpu() - e.detach().double().cpu()).abs()
        bound = factor * (m.detach().double().cpu() if isinstance(m, torch.Tensor) else torch.tensor(float(m)))
        worst = int(torch.argmax(err - bound))
        ratio = (err / bound.clamp_min(torch.finfo(torch.float64).tiny)).max().item()
        print(f"{name}[{i}]: max |err| {err.max().item():.3g}, worst element {err.flatten()[worst].item():.3g} "
              f"against its bound {bound.expand_as(err).flatten()[worst].item():.3g} (n = {n}, err/bound {ratio:.3g})")
        assert bool((err <= bound).all()), (
            f"{name}[{i}]: element {worst} off by {err.flatten()[worst].item():.3g}, over its bound "
            f"{bound.expand_as(err).flatten()[worst].item():.3g} (γ_{n} · magnitude)")


# ----------------------------------------------------------------------------- n of each op family
def dense_terms(x, Wg, V, geometry=None):
    """n for the dense ops on input x, weights Wg, projection V (linear when geometry is None, else conv, with
    geometry = (stride, padding, dilation, ...)): the sum of every reduction length of the
    op and its backward — the forward's inner length, H, the batch (times the output positions for conv, whose
    per-example products also sum over them), the output width four times (∂x through W_g and W_r, ∂ε through
    both halves of V) — plus 8 elementwise roundings."""
    if geometry is None:
        return x.shape[1] + V.shape[1] + x.shape[0] + 4 * Wg.shape[0] + 8
    stride, padding, dilation = geometry[:3]
    positions = 1
    for d in (0, 1):
        positions *= (x.shape[2 + d] + 2 * padding[d] - dilation[d] * (Wg.shape[2 + d] - 1) - 1) // stride[d] + 1
    taps = Wg.shape[2] * Wg.shape[3]
    return (Wg.shape[1] * taps + V.shape[1] + x.shape[0] * positions + positions + x.shape[0]
            + 4 * Wg.shape[0] * taps + 8)


# The LSTM cell is pointwise: no reduction, about a dozen roundings along ḣ's longest chain
# (c' → tanh → 1 − tanh² → products), each sigmoid/tanh within a few ulps; 32 covers them. Its magnitude is
# each result's scale, max(max|exact|, 1) (see the module docstring).
LSTM_TERMS = 32


def scale_of(values):
    """max(max|v|, 1) of each tensor (None stays None): the magnitude of a pointwise op's results."""
    return [None if v is None else max(v.detach().abs().max().item() if v.numel() else 0.0, 1.0) for v in values]


# ----------------------------------------------------------------------------- attention
def attention_terms(q, k, v) -> int:
    """n for softmax attention and its tangent/backward: every reduction length along the longest chains (QKᵀ and
    Q̇Kᵀ + QK̇ᵀ over d, twice; the row sums and P·V over the keys, three times; ∂S·K and ∂Sᵀ·Q over keys and
    queries; G·Vᵀ over dv) plus 8 elementwise roundings (mask add, max subtraction, exp, division, the tangent's
    differences)."""
    return 2 * q.shape[-1] + v.shape[-1] + q.shape[-2] + 3 * k.shape[-2] + 8


def attention_magnitudes(q, k, v, tangents, cotangent, attn_mask=None, is_causal=False, scale=None,
                         dropout_rate=None, seed=0):
    """Magnitudes of attention's results for `assert_within_bound`, in float64: [O, Ȯ, ∂q-side, ∂k-side, ∂v-side].

    Softmax attention is not a sum of products, so the bound is derived. Row i's scores are sums of products of
    magnitude A_ij = s·(|Q||K|ᵀ)_ij + |M_ij|, computed with an error of at most γ_n·A_ij; softmax turns an error
    dS into dP = P ⊙ (dS − Σ_j P dS), a relative error of at most 2γ_n·κ_i with κ_i = max_j A_ij over the keys row i
    attends. So every term that carries P gets the factor (1 + 2κ_i) (P' = P scaled by row), and the terms
    themselves are sums of products whose magnitudes are their absolute values, as in `magnitude`
    (D: the scaled dropout keep mask, the kernel's own; G: the cotangent of the output whose gradients are taken):
        O:       (P'⊙D)·|V|
        Ȯ:       (P'⊙D)·|V̇| + (P'⊙(Ṡm + rm)⊙D)·|V|,   Ṡm = s·(|Q̇||K|ᵀ + |Q||K̇|ᵀ), rm_i = Σ_j P'_ij Ṡm_ij
        ∂ of an output (P⊙D)·X' (the primal O for attention's ∂q, ∂k, ∂v; Ȯ's coefficients are the same, so
        attention_dual's ∂q̇, ∂k̇, ∂v̇ follow the same formulas with X' = V):
                 ∂V-side: (P'⊙D)ᵀ·|G|,   ∂Sm = P'⊙((|G||V|ᵀ)⊙D + δm), δm_i = Σ_j (P'⊙D⊙|G||V|ᵀ)_ij,
                 ∂Q-side: s·∂Sm·|K|,     ∂K-side: s·∂Smᵀ·|Q|
    A missing tangent counts as zero."""
    from fastdstn.ops.attention import reference

    q, k, v = (t.detach().double() for t in (q, k, v))
    mask = None if attn_mask is None or attn_mask.dtype == torch.bool else attn_mask.detach().double()
    problem = reference._Problem(q, k, v, attn_mask if mask is None else mask, is_causal, scale, dropout_rate, seed)
    rows = slice(0, q.shape[-2])
    scores = problem.scores(problem.q, rows)
    p = problem.softmax(scores, rows)
    keep = problem.keep(rows)
    stop = scores.shape[-1]
    kk, vv = k[..., :stop, :], v[..., :stop, :]
    size = (q.abs() @ kk.abs().transpose(-1, -2)) * problem.scale
    if problem.mask is not None:
        mask_rows = problem.mask if problem.mask.shape[-2] == 1 else problem.mask[..., rows, :]
        size = size + mask_rows[..., :stop].abs()
    kappa = torch.where(torch.isfinite(scores), size, torch.zeros_like(size)).amax(-1, keepdim=True)
    pp = p * (1 + 2 * kappa)
    pd = pp if keep is None else pp * keep
    qt, kt, vt = (None if t is None else t.detach().double() for t in tangents)
    zero = torch.zeros_like
    s_t = problem.scale * ((zero(q) if qt is None else qt.abs()) @ kk.abs().transpose(-1, -2)
                           + q.abs() @ (zero(kk) if kt is None else kt[..., :stop, :].abs()).transpose(-1, -2))
    r_t = (pp * s_t).sum(-1, keepdim=True)
    out = pd @ vv.abs()
    out_t = (0 if vt is None else pd @ vt[..., :stop, :].abs()) + (pd * (s_t + r_t)) @ vv.abs()
    g = cotangent.detach().double().abs()
    gv = g @ vv.abs().transpose(-1, -2)
    weighted = pd * gv
    ds = pp * ((gv if keep is None else gv * keep) + weighted.sum(-1, keepdim=True))
    pad = k.shape[-2] - stop                # causal rows past the last query attend no key beyond it
    grad_v = torch.nn.functional.pad(pd.transpose(-1, -2) @ g, (0, 0, 0, pad))
    grad_k = torch.nn.functional.pad(problem.scale * ds.transpose(-1, -2) @ q.abs(), (0, 0, 0, pad))
    grad_q = problem.scale * ds @ kk.abs()
    return [out, out_t, grad_q, grad_k, grad_v]
