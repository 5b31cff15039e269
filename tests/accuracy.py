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
