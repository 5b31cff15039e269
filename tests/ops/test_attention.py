"""fastdstn.ops.attention_dual / attention on every backend that implements them (op_cases.backends: the public ops
on the reference backend, the Triton kernels on a GPU or under TRITON_INTERPRET=1), one set of tests parametrised
over backend and device, and the routing of SDPA calls in the dual pass (fastdstn.nn.dual_routes). The ground
truth is plain softmax attention written out here, differentiated forward by torch.func.jvp and backward by
autograd, in float64; results lie within accuracy.attention_magnitudes' bound of it."""
import importlib
import math

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from fastdstn import ops
from fastdstn.nn import dual_routes
from fastdstn.ops.attention import reference as R

from accuracy import assert_within_bound, attention_magnitudes, attention_terms, roundings
from op_cases import CPP_OPCHECK_UTILS, attention_args, backends, grads, needs_cpp, tensors

F64 = torch.float64
ATTENTION = backends(op="attention_dual")


def softmax_attention(q, k, v, attn_mask=None, is_causal=False, scale=None, keep=None):
    """O = (softmax(scale·QKᵀ + M) ⊙ keep)·V, written out."""
    s = (q @ k.transpose(-1, -2)) * (1 / math.sqrt(q.shape[-1]) if scale is None else scale)
    if attn_mask is not None:
        s = s + (torch.zeros(attn_mask.shape, dtype=s.dtype, device=s.device).masked_fill(~attn_mask, -math.inf)
                 if attn_mask.dtype == torch.bool else attn_mask)
    if is_causal:
        s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool, device=s.device).triu(1), -math.inf)
    p = torch.softmax(s, -1)
    return (p if keep is None else p * keep) @ v


def operands(lead=(2, 3), tq=13, tk=11, d=8, dv=6, dtype=F64, requires_grad=False):
    return attention_args(lead, tq, tk, d, dv, dtype=dtype, grads="q k v qt kt vt".split() if requires_grad else ())


def mask_kwargs(name, lead, tq, tk, device="cpu"):
    """The keyword arguments of a mask (or dropout) setting."""
    g = torch.Generator().manual_seed(1)
    rate = torch.tensor([0.25, 0.6][:lead[0]] + [0.5] * (lead[0] - 2), device=device)
    return {
        "none": lambda: {},
        "causal": lambda: dict(is_causal=True),
        "bool-padding": lambda: dict(attn_mask=(torch.arange(tk).expand(lead[0], 1, 1, tk)
                                                < torch.tensor([tk, tk - 4])[:, None, None, None]).to(device)),
        "bool-full": lambda: dict(attn_mask=(torch.rand((*lead, tq, tk), generator=g) > 0.3).to(device)),
        "additive": lambda: dict(attn_mask=torch.randn(tq, tk, generator=g, dtype=F64).to(device)),
        "dropout": lambda: dict(dropout_rate=rate, seed=1234),
        "causal-dropout": lambda: dict(is_causal=True, dropout_rate=rate, seed=1234),
    }[name]()


MASKS = ["none", "causal", "bool-padding", "bool-full", "additive", "dropout", "causal-dropout"]


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    """Blocks of a few query rows, so that every test spans several blocks and a ragged last one."""
    monkeypatch.setattr(R, "BLOCK_ROWS", 5)
    with ops.use_backend("reference"):
        yield


# ------------------------------------------------------------------------------------------- the check against float64
def keep_mask(rate, seed, lead, tq, tk):
    n = torch.arange(math.prod(lead)).reshape(*lead, 1, 1)
    u = R.philox_uniform(seed, torch.arange(tk)[None, :], torch.arange(tq)[:, None], n)
    p = rate.cpu().double().reshape(-1, *[1] * (len(lead) + 1))
    return torch.where(u >= p.float(), 1 / (1 - p), 0.0)


def truth(primals, tangents, kw):
    """(O, Ȯ) from the written-out attention on float64 CPU tensors: Ȯ by torch.func.jvp (a missing tangent is
    zero), or O alone when `tangents` is None (differentiable w.r.t. the primals)."""
    kw = {name: value.cpu().double() if isinstance(value, torch.Tensor) and value.is_floating_point() else
          value.cpu() if isinstance(value, torch.Tensor) else value for name, value in kw.items()}
    rate, seed = kw.pop("dropout_rate", None), kw.pop("seed", 0)
    q, k, v = primals
    keep = None if rate is None else keep_mask(rate, seed, q.shape[:-2], q.shape[-2], k.shape[-2])
    if tangents is None:
        return softmax_attention(q, k, v, keep=keep, **kw), None
    dots = [torch.zeros_like(p) if t is None else t for p, t in zip(primals, tangents)]
    return torch.func.jvp(lambda a, b, c: softmax_attention(a, b, c, keep=keep, **kw), tuple(primals), tuple(dots))


def half_roundings(dtype):
    """The kernels round P (and Ṗ) to the input format for the tensor-core products, and the outputs: 4 roundings
    of a half-precision format; none in float32 or float64."""
    return roundings(4, dtype) if dtype in (torch.float16, torch.bfloat16) else 0.0


def compare(backend, op, kw, *, lead=(2, 2), tq=21, tk=19, d=16, dv=16, dtype=None, given="qkv", inputs=None):
    """`op` ("attention_dual": O, Ȯ and the gradients of Σ Ȯ·G w.r.t. the tangents `given`; "attention": O and the
    gradients of Σ O·G w.r.t. q, k, v) on `backend` in `dtype` (the reference: float64; Triton: float32) against
    the float64 truth, within accuracy.attention_magnitudes' bound. T = 21 queries, 19 keys: neither a multiple of
    the 16-wide interpreter tiles nor of the reference's blocks."""
    dtype = dtype or (F64 if backend.name == "reference" else torch.float32)
    q, k, v, qt, kt, vt = inputs or attention_args(lead, tq, tk, d, dv, dtype=dtype, device=backend.device)
    tangents = [t.detach().requires_grad_() if name in given else None for name, t in zip("qkv", (qt, kt, vt))]
    cot = tensors(dict(g=(*q.shape[:-1], v.shape[-1])), dtype=dtype, device=backend.device, grads=set(), seed=3)[0]
    within = dict(n=attention_terms(q, k, v), accumulate=F64 if dtype == F64 else torch.float32,
                  rounding=half_roundings(dtype))
    if op == "attention_dual":
        primals = [t.detach() for t in (q, k, v)]
        o, ot = backend.attention_dual(*primals, *tangents, **kw)
        wrt, out = tangents, ot
    else:
        primals = [t.detach().requires_grad_() for t in (q, k, v)]
        o = backend.attention(*primals, **kw)
        wrt, out = primals, o
    assert o.dtype == dtype
    dual = op == "attention_dual"
    mags = attention_magnitudes(*primals, tangents if dual else [None] * 3, cot, **kw)
    exact_wrt = [None if t is None else t.detach().cpu().double().requires_grad_() for t in wrt]
    if dual:
        exact_o, exact_out = truth([t.detach().cpu().double() for t in primals], exact_wrt, kw)
        assert_within_bound("Ȯ", out, exact_out, mags[1], **within)
    else:
        exact_o, _ = truth(exact_wrt, None, kw)
        exact_out = exact_o
    assert_within_bound("O", o, exact_o, mags[0], **within)
    wanted = [t for t in exact_wrt if t is not None]
    if wanted:
        exact_grads = iter(torch.autograd.grad((exact_out * cot.cpu().double()).sum(), wanted))
        want = [None if t is None else next(exact_grads) for t in exact_wrt]
        assert_within_bound(f"{op} grads", grads([out], [cot], wrt), want, mags[2:], **within)
    return o, out


# ------------------------------------------------------------------------------------------------- values and grads
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("backend", ATTENTION)
def test_attention_dual_forward_and_tangent_backward(backend, mask):
    """The response sub-step's attention: (O, Ȯ) and the gradients of a loss on Ȯ w.r.t. (q̇, k̇, v̇), primal
    frozen."""
    compare(backend, "attention_dual", mask_kwargs(mask, (2, 2), 21, 19, backend.device))


@pytest.mark.parametrize("given", ["q", "k", "v", "kv", "qv", "qk", ""], ids=lambda g: f"tangents-{g or 'none'}")
@pytest.mark.parametrize("backend", ATTENTION)
def test_a_missing_tangent_is_zero(backend, given):
    compare(backend, "attention_dual", dict(is_causal=True, scale=0.3), tq=21, tk=21, given=given)


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("backend", backends(op="attention"))
def test_attention_forward_and_backward(backend, mask):
    """Plain attention with per-example dropout (what a non-STN step and the hyper step run): O and the gradients
    w.r.t. q, k, v."""
    compare(backend, "attention", mask_kwargs(mask, (2, 2), 21, 19, backend.device))


@pytest.mark.parametrize("backend", ATTENTION)
def test_head_sizes_and_layouts(backend):
    """d = 24 (padded to a 32-wide tile), v's head size 8 ≠ d, 3-d inputs, and q, k, v as transposed views of
    a (B, T, heads·d) projection, as nn.MultiheadAttention and Hugging Face lay them out."""
    compare(backend, "attention_dual", {}, lead=(3,), tq=19, tk=19, d=24, dv=8)
    b, t, heads, d = 2, 18, 2, 16
    dtype = F64 if backend.name == "reference" else torch.float32
    projections = tensors({name: (b, t, heads * d) for name in "q k v qt kt vt".split()}, dtype=dtype,
                          device=backend.device, grads=set(), seed=4)
    views = [p.view(b, t, heads, d).transpose(1, 2) for p in projections]
    compare(backend, "attention_dual", dict(is_causal=True), inputs=views)


@pytest.mark.parametrize("backend", ATTENTION)
def test_a_row_without_keys_gives_zeros_like_sdpa(backend):
    dtype = F64 if backend.name == "reference" else torch.float32
    q, k, v, qt, kt, vt = attention_args((1, 1), 5, 6, dtype=dtype, device=backend.device)
    mask = torch.ones(5, 6, dtype=torch.bool, device=backend.device)
    mask[3] = False
    o, ot = backend.attention_dual(q, k, v, qt, kt, vt, attn_mask=mask)
    sdpa = F.scaled_dot_product_attention(*(t.cpu().double() for t in (q, k, v)), attn_mask=mask.cpu())
    assert_within_bound("O", o, sdpa, attention_magnitudes(q, k, v, [qt, kt, vt], torch.zeros_like(o),
                                                           attn_mask=mask)[0],
                        attention_terms(q, k, v), accumulate=dtype)
    assert not o[..., 3, :].any() and not ot[..., 3, :].any()
    vt.requires_grad_()
    (grad,) = torch.autograd.grad(backend.attention_dual(q, k, v, None, None, vt, attn_mask=mask)[1].sum(), vt)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend", ATTENTION)
def test_low_precision(backend, dtype):
    """float32 and half-precision inputs within the bound (half precision: 4 roundings of the format). Triton's
    half precision runs on a GPU (bf16/fp16 tl.dot and the real tile configs), at head sizes 64 and 128 and
    1000 positions (test_triton_half_precision_at_gpu_sizes)."""
    if backend.name == "triton" and dtype != torch.float32 and backend.device != "cuda":
        pytest.skip("bf16/fp16 tl.dot and the real tile configs need a GPU")
    compare(backend, "attention_dual", dict(is_causal=True), lead=(2, 3), tq=33, tk=33, d=8, dv=6, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("head", [64, 128])
@pytest.mark.parametrize("mask", ["causal", "bool-padding", "dropout"])
@pytest.mark.parametrize("backend", backends("triton"))
def test_triton_half_precision_at_gpu_sizes(backend, dtype, head, mask):
    if backend.device != "cuda":
        pytest.skip("bf16/fp16 tl.dot and the real tile configs need a GPU")
    for op in ("attention_dual", "attention"):
        compare(backend, op, mask_kwargs(mask, (2, 2), 1000, 1000, backend.device), tq=1000, tk=1000, d=head,
                dv=head, dtype=dtype)


# -------------------------------------------------------------------------------------- gradients each backend has
@pytest.mark.parametrize("backend", ATTENTION)
def test_tangent_path_gradcheck_and_refused_double_backward(backend):
    q, k, v, *tangents = attention_args((1, 2), 5, 4, 3, 2, device=backend.device, grads=("qt", "kt", "vt"))
    fn = lambda *t: backend.attention_dual(q, k, v, *t, is_causal=True)[1]  # noqa: E731
    assert torch.autograd.gradcheck(fn, tuple(tangents), fast_mode=backend.name == "triton")
    # The reference's backward is once_differentiable; the Triton backward op has no autograd formula.
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad|no autograd formula"):
        (grad,) = torch.autograd.grad(fn(*tangents).sum(), tangents[0], create_graph=True)
        torch.autograd.grad(grad.sum(), tangents[0])


@pytest.mark.parametrize("backend", ATTENTION)
def test_tangent_path_saves_no_score_matrix(backend):
    """Δ-STN's response sub-step (primal frozen) keeps O(T·d) for the backward, not the (T, T) scores."""
    lead, t, d = (1, 2), 96, 8
    q, k, v, *tangents = attention_args(lead, t, t, d, d, dtype=torch.float32, device=backend.device,
                                        grads=("qt", "kt", "vt"))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda x: saved.append(x) or x, lambda x: x):
        backend.attention_dual(q, k, v, *tangents)
    scores = math.prod(lead) * t * t
    assert saved and all(x.numel() < scores for x in saved), [tuple(x.shape) for x in saved]


@pytest.mark.parametrize("backend", backends("reference"))
def test_reference_gradients_of_everything_and_double_backward(backend):
    """With the primal requiring grad the reference records the computation: gradients of (O, Ȯ) w.r.t. every
    input and a learned additive mask, twice differentiable."""
    args = operands(lead=(1, 2), tq=5, tk=4, d=3, dv=2, requires_grad=True)
    mask = torch.randn(5, 4, dtype=F64, requires_grad=True)
    fn = lambda *t: backend.attention_dual(*t[:6], attn_mask=t[6])  # noqa: E731
    assert torch.autograd.gradcheck(fn, (*args, mask))
    assert torch.autograd.gradgradcheck(fn, (*args, mask), fast_mode=True)
    q, k, v = args[:3]
    bias = torch.randn(1, 2, 5, 4, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: backend.attention(*t[:3], attn_mask=t[3]), (q, k, v, bias))


@pytest.mark.parametrize("backend", backends("triton"))
def test_triton_refuses_gradients_of_the_primal_clearly(backend):
    q, k, v, qt, kt, vt = attention_args((1, 1), 5, 5, dtype=torch.float32, device=backend.device,
                                         grads="q k v qt kt vt".split())
    _, ot = backend.attention_dual(q, k, v, qt, kt, vt)
    with pytest.raises(NotImplementedError, match=r"attention_dual \(triton backend\): no gradient w.r.t. q, k, v"):
        ot.sum().backward()


@pytest.mark.parametrize("backend", backends("triton"))
def test_triton_opcheck(backend):
    q, k, v, qt, kt, vt = attention_args((1, 2), 9, 7, dtype=torch.float32, device=backend.device)
    rate = torch.tensor([0.3], device=backend.device)
    mask = torch.randn(9, 7, device=backend.device)
    needs_grad = [x.clone().requires_grad_() for x in (q, k, kt, vt)]
    samples = [
        ((q, k, v, qt, kt, vt, None, True, 0.25, None, 0), "attention_dual"),
        ((q, k, v, None, *needs_grad[2:], mask, False, 0.25, rate, 7), "attention_dual"),
        ((*needs_grad[:2], v, None, False, 0.25, rate, 7), "attention"),
    ]
    for args, name in samples:
        torch.library.opcheck(backend.registered(name), args, test_utils=backend.opcheck_utils)


@pytest.mark.parametrize("backend", backends("triton"))
def test_triton_ops_registered_beside_the_compiled_library(backend):
    """The C++ library defines the fastdstn namespace; the attention ops are a Python fragment of it, defined when
    their module is first imported."""
    from fastdstn.ops import cpp
    if not cpp.AVAILABLE:
        pytest.skip(f"fastdstn._C not built: {cpp.UNAVAILABLE_REASON}")
    importlib.import_module("fastdstn.ops.attention.triton")
    assert torch.ops.fastdstn.stn_linear_dual.default is not None
    assert all(hasattr(torch.ops.fastdstn, name)
               for name in ("attention_dual_triton", "attention_triton", "attention_backward_triton"))


# ----------------------------------------------------------------------------------------------------------- dropout
def test_philox_known_answers():
    """Random123's known-answer vectors of Philox4x32-10 (first output word)."""
    assert R.philox(0, *[torch.tensor(0)] * 4).item() == 0x6627E8D5
    assert R.philox(0xFFFFFFFFFFFFFFFF, *[torch.tensor(0xFFFFFFFF)] * 4).item() == 0x408F276D
    words = [torch.tensor(w) for w in (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344)]
    assert R.philox(0x299F31D0A4093822, *words).item() == 0xD16CFE09


def bits(t):
    """The bit patterns of a float tensor, so that equality is exact (it tells −0.0 from 0.0, and inf and NaN
    patterns apart)."""
    return t.view({torch.float64: torch.int64, torch.float32: torch.int32}.get(t.dtype, torch.int16))


# (heads, row_start, rows, keys): sizes that are multiples of nothing, a block past row 2^7, a single
# element, no rows, no keys.
KEEP_SHAPES = [(3, 0, 7, 13), (5, 130, 17, 33), (1, 3, 1, 1), (4, 0, 0, 5), (2, 9, 3, 0)]


@needs_cpp
@pytest.mark.parametrize("dtype", [torch.float32, F64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("seed", [0, 1234, 2 ** 32 + 5, 0x299F31D0A4093822, 2 ** 63 - 1])
@pytest.mark.parametrize("shape", KEEP_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_compiled_keep_mask_is_the_philox_mask_bit_for_bit(shape, seed, dtype):
    """fastdstn::attention_keep_mask (csrc/attention/) against the reference's PyTorch Philox: the same draws,
    comparisons and scales, bit for bit, for rates 0, near 1 (0.9999 rounds to 1 in bf16: a kept weight is inf on
    both) and in between, given as float32 or float64 (the draw compares with the float32 rounding, the scale is
    computed from the rate rounded to `dtype`)."""
    from fastdstn.ops.attention import cpp as C
    heads, row_start, rows, keys = shape
    g = torch.Generator().manual_seed(seed % 1000)
    fixed = torch.tensor([0.0, 0.9999, 0.5, 1 - 2 ** -30, 0.1], dtype=F64)
    for rate in (fixed[:heads], torch.rand(heads, generator=g, dtype=F64), torch.rand(heads, generator=g)):
        want = R.philox_keep_mask(seed, rate, row_start, rows, keys, dtype)
        got = C.keep_mask(seed, rate, row_start, rows, keys, dtype)
        assert got.shape == (heads, rows, keys) and got.dtype == dtype
        assert torch.equal(bits(got), bits(want)), (rate, (bits(got) != bits(want)).nonzero()[:5])


@needs_cpp
def test_compiled_keep_mask_at_the_bench_shapes():
    """The ViT block (16 examples × 4 heads, 65 rows and keys) and a long one (2 heads, 128 rows, 4096 keys)."""
    from fastdstn.ops.attention import cpp as C
    for heads, rows, keys in ((64, 65, 65), (2, 128, 4096)):
        rate = torch.rand(heads)
        assert torch.equal(C.keep_mask(77, rate, 0, rows, keys, torch.float32),
                           R.philox_keep_mask(77, rate, 0, rows, keys, torch.float32))


@needs_cpp
@pytest.mark.parametrize("op", ["attention_dual", "attention"])
@pytest.mark.parametrize("mask", ["dropout", "causal-dropout"])
def test_cpp_backend_is_the_reference_with_the_compiled_mask(op, mask):
    """The cpp backend runs the reference's algorithm: with the same mask, its outputs and gradients are the
    reference's bit for bit (blocks of 5 rows: causal blocks stop at different keys)."""
    from fastdstn.ops.attention import cpp as C
    kw = mask_kwargs(mask, (2, 3), 13, 11)
    results = []
    for module in (R, C):
        q, k, v, qt, kt, vt = attention_args((2, 3), 13, 11, dtype=torch.float32, grads="q k v qt kt vt".split())
        wrt = (q, k, v, qt, kt, vt) if op == "attention_dual" else (q, k, v)
        outs = getattr(module, op)(*wrt, **kw)
        outs = outs if isinstance(outs, tuple) else (outs,)
        results.append([*outs, *torch.autograd.grad(outs[-1].sum(), wrt)])
    for got, want in zip(results[1], results[0]):
        assert torch.equal(got, want)


@needs_cpp
@pytest.mark.parametrize("mask", ["dropout", "causal-dropout"])
def test_cpp_gradcheck_with_dropout(mask):
    """float64 gradcheck through the cpp backend with its compiled mask: the tangent path (primal frozen:
    gradients of Ȯ w.r.t. q̇, k̇, v̇) and the recorded path (gradients of O and Ȯ w.r.t. everything)."""
    from fastdstn.ops.attention import cpp as C
    kw = mask_kwargs(mask, (2, 2), 6, 6)
    q, k, v, *tangents = attention_args((2, 2), 6, 6, 3, 2, grads=("qt", "kt", "vt"))
    assert torch.autograd.gradcheck(lambda *t: C.attention_dual(q, k, v, *t, **kw)[1], tuple(tangents))
    everything = [t.detach().requires_grad_() for t in (q, k, v, *tangents)]
    assert torch.autograd.gradcheck(lambda *t: C.attention_dual(*t, **kw), tuple(everything))
    assert torch.autograd.gradcheck(lambda *t: C.attention(*t, **kw), tuple(everything[:3]))


@needs_cpp
def test_keep_mask_opcheck():
    op = torch.ops.fastdstn.attention_keep_mask.default
    for args in ((5, torch.tensor([0.1, 0.5]), 3, 7, 9, torch.float32), (2 ** 40, torch.rand(3, dtype=F64), 0, 4, 4,
                                                                        torch.bfloat16)):
        torch.library.opcheck(op, args, test_utils=CPP_OPCHECK_UTILS)


@needs_cpp
@pytest.mark.parametrize("args,match", [
    ((0, torch.rand(2, 3), 0, 4, 4, torch.float32), r"head_rate: expected shape \[heads\]"),
    ((0, torch.tensor([1, 0]), 0, 4, 4, torch.float32), r"head_rate: expected a floating-point tensor"),
    ((0, torch.rand(2), -1, 4, 4, torch.float32), r"row_start, rows: expected 0 <= row_start"),
    ((0, torch.rand(2), 2 ** 32 - 2, 4, 4, torch.float32), r"row_start, rows: expected .* row_start \+ rows <= 2\^32"),
    ((0, torch.rand(2), 0, 4, -3, torch.float32), r"keys: expected 0 <= keys <= 2\^32, received -3"),
    ((0, torch.rand(2), 0, 4, 4, torch.int32), r"dtype: expected a floating dtype, received Int"),
], ids=["head_rate-2d", "head_rate-int", "row_start", "counter", "keys", "dtype"])
def test_keep_mask_bad_arguments_name_themselves(args, match):
    with pytest.raises(RuntimeError, match="fastdstn::attention_keep_mask: " + match) as error:
        torch.ops.fastdstn.attention_keep_mask(*args)
    assert "\n" not in str(error.value).split("\nException raised from")[0]


@pytest.mark.parametrize("backend", backends(op="attention"))
def test_dropout_rates_per_example_and_seeds(backend):
    rate = torch.tensor([0.0, 0.1, 0.5, 0.9])
    dropped = (keep_mask(rate, 7, (4, 2), 64, 64) == 0).double().mean((1, 2, 3))
    # 8192 draws per example: binomial standard error <= 0.0056; 0.03 is > 5 of them.
    assert dropped[0] == 0 and (dropped - rate.double()).abs().max() < 0.03, dropped
    dtype = F64 if backend.name == "reference" else torch.float32
    q, k, v = attention_args(dtype=dtype, device=backend.device)[:3]
    r = torch.full((2,), 0.5, dtype=dtype, device=backend.device)
    assert torch.equal(backend.attention(q, k, v, dropout_rate=r, seed=5),
                       backend.attention(q, k, v, dropout_rate=r, seed=5))
    assert not torch.equal(backend.attention(q, k, v, dropout_rate=r, seed=5),
                           backend.attention(q, k, v, dropout_rate=r, seed=6))
    torch.manual_seed(3)
    a = ops.attention_with_dropout(q, k, v, dropout_rate=r)
    torch.manual_seed(3)
    again = ops.attention_with_dropout(q, k, v, dropout_rate=r)
    assert torch.equal(a, again), "the drawn seed follows torch.manual_seed"


# ----------------------------------------------------------------------------------------------------
# Arguments and backend choice
# ----------------------------------------------------------------------------------------------------

def bad(name, **changes):
    q, k, v, qt, kt, vt = operands()
    args = dict(q=q, k=k, v=v, qt=qt, kt=kt, vt=vt)
    args.update(changes)
    return pytest.param(args, name, id=name)


@pytest.mark.parametrize("args,name", [
    bad("q", q=torch.zeros(5, dtype=F64)),
    bad("k", k=torch.zeros(2, 3, 11, 7, dtype=F64)),
    bad("k", k=torch.zeros(3, 3, 11, 8, dtype=F64)),
    bad("v", v=torch.zeros(2, 3, 10, 6, dtype=F64)),
    bad("kt", kt=torch.zeros(2, 3, 11, 9, dtype=F64)),
    bad("v", v=torch.zeros(2, 3, 11, 6)),
    bad("qt", qt=torch.zeros(2, 3, 13, 8, dtype=torch.int64)),
    bad("attn_mask", attn_mask=torch.zeros(13, 12, dtype=torch.bool)),
    bad("attn_mask", attn_mask=torch.zeros(13, 11, dtype=torch.int32)),
    bad("attn_mask", attn_mask=torch.zeros(13, 11, dtype=torch.bool), is_causal=True),
    bad("is_causal", is_causal=1),
    bad("scale", scale="0.1"),
    bad("dropout_rate", dropout_rate=torch.full((3,), 0.1)),
    bad("dropout_rate", dropout_rate=torch.full((2,), 1.0)),
    bad("seed", dropout_rate=torch.full((2,), 0.1), seed=-1),
])
def test_bad_arguments_name_themselves(args, name):
    with pytest.raises((TypeError, ValueError)) as error:
        ops.attention_dual(**args)
    message = str(error.value)
    assert message.startswith(f"{name}:") and "\n" not in message, message


def test_backend_choice(recwarn, monkeypatch):
    from fastdstn.ops import cpp
    from fastdstn.ops.dispatch import choose
    with ops.use_backend("auto"):
        if cpp.AVAILABLE:
            from fastdstn.ops.attention import cpp as C
            monkeypatch.setattr(cpp, "DEVICE_TYPES", ("cpu", "cuda"))    # as in a build with CUDA kernels
            for op in ("attention_dual", "attention"):
                assert choose(op, "cpu") == ("cpp", getattr(C, op))
                assert choose(op, "cpu", torch.bfloat16)[1] is getattr(R, op), "the compiled CPU ops: fp32, fp64"
                assert choose(op, "cuda")[0] != "cpp", "on CUDA the Triton kernel draws its own mask"
        else:
            assert choose("attention_dual", "cpu")[1] is R.attention_dual
    with ops.use_backend("triton"):
        q, k, v, qt, kt, vt = operands()
        ops.attention_dual(q, k, v, qt, kt, vt)
        ops.attention_dual(q, k, v, qt, kt, vt)
    warned = [w for w in recwarn if "triton" in str(w.message)]
    assert len(warned) <= 1, "a forced backend that cannot run warns once"


# ----------------------------------------------------------------------------------------------------
# Routing in the dual pass
# ----------------------------------------------------------------------------------------------------

def math_kernel_jvp(fn, primals, tangents):
    """(primal, tangent) of fn at dual inputs, with PyTorch's forward-AD-capable math SDPA kernel."""
    with fwAD.dual_level(), sdpa_kernel(SDPBackend.MATH):
        out = fn(*(fwAD.make_dual(p, t) for p, t in zip(primals, tangents)))
        return tuple(fwAD.unpack_dual(out))


def routed_jvp(fn, primals, tangents):
    with fwAD.dual_level(), dual_routes():
        out = fn(*(fwAD.make_dual(p, t) for p, t in zip(primals, tangents)))
        return tuple(fwAD.unpack_dual(out))


@pytest.fixture
def calls(monkeypatch):
    """Counts the calls that reach attention_dual."""
    seen = []
    original = ops.attention_dual

    def counting(*args, **kwargs):
        seen.append(kwargs)
        return original(*args, **kwargs)
    monkeypatch.setattr(ops, "attention_dual", counting)
    return seen


@pytest.mark.parametrize("kind", ["F.sdpa", "torch._C._nn", "positional"])
@pytest.mark.parametrize("mask", ["none", "causal", "bool-padding", "additive"])
def test_sdpa_calls_with_tangents_are_routed(kind, mask, calls):
    q, k, v, qt, kt, vt = operands(dv=8)
    kw = mask_kwargs(mask, (2, 3), 13, 11)
    if kind == "F.sdpa":
        fn = lambda a, b, c: F.scaled_dot_product_attention(a, b, c, scale=0.4, **kw)  # noqa: E731
    elif kind == "torch._C._nn":
        fn = lambda a, b, c: torch._C._nn.scaled_dot_product_attention(a, b, c, scale=0.4, **kw)  # noqa: E731
    else:
        fn = lambda a, b, c: F.scaled_dot_product_attention(  # noqa: E731
            a, b, c, kw.get("attn_mask"), 0.0, kw.get("is_causal", False), scale=0.4)
    routed = routed_jvp(fn, (q, k, v), (qt, kt, vt))
    assert len(calls) == 1
    for got, want in zip(routed, math_kernel_jvp(fn, (q, k, v), (qt, kt, vt))):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-9)


def test_calls_without_tangents_stay_pytorchs(calls):
    q, k, v = operands(dv=8)[:3]
    with fwAD.dual_level(), dual_routes():
        inside = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        assert fwAD.unpack_dual(inside).tangent is None
    outside = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert not calls and torch.equal(inside, outside)
    assert F.scaled_dot_product_attention is torch._C._nn.scaled_dot_product_attention


def test_enable_gqa_repeats_key_value_heads():
    q, qt = torch.randn(2, 4, 7, 8, dtype=F64), torch.randn(2, 4, 7, 8, dtype=F64)
    k, v, kt, vt = (torch.randn(2, 2, 5, 8, dtype=F64) for _ in range(4))
    fn = lambda a, b, c: F.scaled_dot_product_attention(a, b, c, enable_gqa=True)  # noqa: E731
    for got, want in zip(routed_jvp(fn, (q, k, v), (qt, kt, vt)), math_kernel_jvp(fn, (q, k, v), (qt, kt, vt))):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-9)


def test_sdpa_dropout_is_per_example_and_shared_by_the_tangent(calls):
    q, k, v = operands(dv=8)[:3]
    fn = lambda a, b, c: F.scaled_dot_product_attention(a, b, c, dropout_p=0.4)  # noqa: E731
    torch.manual_seed(0)
    o, ot = routed_jvp(fn, (q, k, v), (torch.zeros_like(q), torch.zeros_like(k), v))
    rate = calls[0]["dropout_rate"]
    assert torch.equal(rate, torch.full((2,), 0.4))
    torch.testing.assert_close(ot, o, rtol=0, atol=1e-12)   # Ȯ = (P ⊙ D)·V̇ with V̇ = V: the same D


def test_a_mask_with_a_tangent_is_refused():
    q, k, v, qt, kt, vt = operands(dv=8)
    mask = torch.randn(13, 11, dtype=F64)
    with fwAD.dual_level(), dual_routes():
        dual_mask = fwAD.make_dual(mask, torch.ones_like(mask))
        with pytest.raises(NotImplementedError, match="attn_mask carries a forward-mode tangent"):
            F.scaled_dot_product_attention(fwAD.make_dual(q, qt), k, v, attn_mask=dual_mask)


@pytest.mark.parametrize("training", [True, False])
def test_multihead_attention_with_key_padding_mask_is_routed(training, calls):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 2, batch_first=True, dtype=F64).train(training)
    x, xt = torch.randn(3, 7, 16, dtype=F64), torch.randn(3, 7, 16, dtype=F64)
    padding = torch.zeros(3, 7, dtype=torch.bool)
    padding[0, 5:] = True
    fn = lambda a: mha(a, a, a, key_padding_mask=padding, need_weights=False)[0]  # noqa: E731
    routed = routed_jvp(fn, (x,), (xt,))
    assert len(calls) == 1, "nn.MultiheadAttention's SDPA call (the eval fast path is not taken)"
    for got, want in zip(routed, math_kernel_jvp(fn, (x,), (xt,))):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-9)


@pytest.mark.parametrize("training", [True, False])
def test_transformer_encoder_layer_is_routed(training, calls):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True, dtype=F64).train(training)
    x, xt = torch.randn(2, 6, 16, dtype=F64), torch.randn(2, 6, 16, dtype=F64)
    causal = nn.Transformer.generate_square_subsequent_mask(6, dtype=F64)
    fn = lambda a: layer(a, src_mask=causal, is_causal=True)  # noqa: E731
    routed = routed_jvp(fn, (x,), (xt,))
    assert len(calls) == 1
    for got, want in zip(routed, math_kernel_jvp(fn, (x,), (xt,))):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-9)


def test_hugging_face_gpt2_is_routed(calls):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=16, vocab_size=11,
                                     attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0, attn_implementation="sdpa")
    model = transformers.GPT2Model(config).double().eval()
    embeds, tangent = torch.randn(2, 5, 16, dtype=F64), torch.randn(2, 5, 16, dtype=F64)
    fn = lambda e: model(inputs_embeds=e).last_hidden_state  # noqa: E731
    routed = routed_jvp(fn, (embeds,), (tangent,))
    assert len(calls) == 1
    for got, want in zip(routed, math_kernel_jvp(fn, (embeds,), (tangent,))):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-9)
