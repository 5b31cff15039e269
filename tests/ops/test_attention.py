"""fastdstn.ops.attention_dual / attention on the reference backend, and the routing of SDPA calls in the dual
pass (fastdstn.nn.dual_attention). The ground truth is plain softmax attention written out here, differentiated
forward by torch.func.jvp and backward by autograd, in float64."""
import math

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from fastdstn import ops
from fastdstn.nn import dual_attention
from fastdstn.ops.attention import reference as R

from accuracy import assert_within_bound, attention_magnitudes, attention_terms, roundings
from op_cases import DEVICE, TRITON_OPCHECK_UTILS, grads, needs_triton, to64, triton_module

AT = triton_module("attention.triton")

F64 = torch.float64


def softmax_attention(q, k, v, attn_mask=None, is_causal=False, scale=None, keep=None):
    """O = (softmax(scale·QKᵀ + M) ⊙ keep)·V, written out."""
    s = (q @ k.transpose(-1, -2)) * (1 / math.sqrt(q.shape[-1]) if scale is None else scale)
    if attn_mask is not None:
        s = s + (torch.zeros(attn_mask.shape, dtype=s.dtype).masked_fill(~attn_mask, -math.inf)
                 if attn_mask.dtype == torch.bool else attn_mask)
    if is_causal:
        s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), -math.inf)
    p = torch.softmax(s, -1)
    return (p if keep is None else p * keep) @ v


def operands(lead=(2, 3), tq=13, tk=11, d=8, dv=6, dtype=F64, requires_grad=False):
    g = torch.Generator().manual_seed(0)
    shapes = [(*lead, tq, d), (*lead, tk, d), (*lead, tk, dv)] * 2
    return [torch.randn(s, generator=g, dtype=dtype).requires_grad_(requires_grad) for s in shapes]


MASKS = {
    "none": lambda lead, tq, tk: {},
    "causal": lambda lead, tq, tk: dict(is_causal=True),
    "bool-padding": lambda lead, tq, tk: dict(attn_mask=torch.arange(tk).expand(lead[0], 1, 1, tk)
                                              < torch.tensor([tk, tk - 4])[:, None, None, None]),
    "bool-full": lambda lead, tq, tk: dict(attn_mask=torch.rand((*lead, tq, tk), generator=torch.Generator()
                                                                .manual_seed(1)) > 0.3),
    "additive": lambda lead, tq, tk: dict(attn_mask=torch.randn(tq, tk, generator=torch.Generator().manual_seed(2),
                                                                dtype=F64)),
}


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    """Blocks of a few query rows, so that every test spans several blocks and a ragged last one."""
    monkeypatch.setattr(R, "BLOCK_ROWS", 5)
    with ops.use_backend("reference"):
        yield


@pytest.mark.parametrize("mask", list(MASKS))
def test_dual_equals_jvp_of_softmax_attention(mask):
    q, k, v, qt, kt, vt = operands()
    kw = MASKS[mask]((2, 3), 13, 11)
    o, ot = ops.attention_dual(q, k, v, qt, kt, vt, **kw)
    jo, jot = torch.func.jvp(lambda a, b, c: softmax_attention(a, b, c, **kw), (q, k, v), (qt, kt, vt))
    torch.testing.assert_close(o, jo, rtol=0, atol=1e-9)
    torch.testing.assert_close(ot, jot, rtol=0, atol=1e-9)


@pytest.mark.parametrize("missing", ["q", "k", "v", "qk", "qkv"])
def test_a_missing_tangent_is_zero(missing):
    q, k, v, qt, kt, vt = operands()
    tangents = [None if name in missing else t for name, t in zip("qkv", (qt, kt, vt))]
    o, ot = ops.attention_dual(q, k, v, *tangents, scale=0.3)
    zeros = [torch.zeros_like(p) if t is None else t for p, t in zip((q, k, v), tangents)]
    _, jot = torch.func.jvp(lambda a, b, c: softmax_attention(a, b, c, scale=0.3), (q, k, v), tuple(zeros))
    torch.testing.assert_close(ot, jot, rtol=0, atol=1e-9)


@pytest.mark.parametrize("mask", ["none", "causal", "bool-padding", "additive"])
def test_tangent_gradients_equal_autograd(mask):
    """The response sub-step's backward: gradients of a loss on Ȯ w.r.t. (q̇, k̇, v̇), primal frozen."""
    q, k, v, *tangents = operands()
    kw = MASKS[mask]((2, 3), 13, 11)
    qt, kt, vt = (t.requires_grad_() for t in tangents)
    cotangent = torch.randn(2, 3, 13, 6, dtype=F64)
    _, ot = ops.attention_dual(q, k, v, qt, kt, vt, **kw)
    got = torch.autograd.grad((ot * cotangent).sum(), (qt, kt, vt))
    _, jot = torch.func.jvp(lambda a, b, c: softmax_attention(a, b, c, **kw), (q, k, v), (qt, kt, vt))
    expected = torch.autograd.grad((jot * cotangent).sum(), (qt, kt, vt))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-9)


def test_gradcheck_everything_and_double_backward():
    """With the primal requiring grad the reference records the computation: gradients of (O, Ȯ) w.r.t. every
    input, twice differentiable."""
    args = operands(lead=(1, 2), tq=5, tk=4, d=3, dv=2, requires_grad=True)
    mask = torch.randn(5, 4, dtype=F64, requires_grad=True)
    fn = lambda *t: ops.attention_dual(*t[:6], attn_mask=t[6])  # noqa: E731
    assert torch.autograd.gradcheck(fn, (*args, mask))
    assert torch.autograd.gradgradcheck(fn, (*args, mask), fast_mode=True)


def test_tangent_path_gradcheck_and_refuses_double_backward():
    q, k, v, *tangents = operands(lead=(1, 2), tq=5, tk=4, d=3, dv=2)
    tangents = [t.requires_grad_() for t in tangents]
    fn = lambda *t: ops.attention_dual(q, k, v, *t, is_causal=True)[1]  # noqa: E731
    assert torch.autograd.gradcheck(fn, tuple(tangents))
    ot = fn(*tangents)
    (grad,) = torch.autograd.grad(ot.sum(), tangents[0], create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad"):
        torch.autograd.grad(grad.sum(), tangents[0])


def test_tangent_path_saves_no_score_matrix():
    """Δ-STN's response sub-step (primal frozen) keeps O(T·d) for the backward, not the (T, T) scores."""
    lead, t, d = (1, 2), 96, 8
    q, k, v, *tangents = operands(lead=lead, tq=t, tk=t, d=d, dv=d)
    tangents = [x.requires_grad_() for x in tangents]
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda x: saved.append(x) or x, lambda x: x):
        ops.attention_dual(q, k, v, *tangents)
    scores = math.prod(lead) * t * t
    assert saved and all(x.numel() < scores for x in saved), [tuple(x.shape) for x in saved]


@pytest.mark.parametrize("mask", ["none", "causal", "bool-full"])
def test_attention_values_and_gradients(mask):
    q, k, v = (x.requires_grad_() for x in operands()[:3])
    kw = MASKS[mask]((2, 3), 13, 11)
    cotangent = torch.randn(2, 3, 13, 6, dtype=F64)
    o = ops.attention_with_dropout(q, k, v, **kw)
    expected = softmax_attention(q, k, v, **kw)
    torch.testing.assert_close(o, expected, rtol=0, atol=1e-9)
    got = torch.autograd.grad((o * cotangent).sum(), (q, k, v))
    want = torch.autograd.grad((expected * cotangent).sum(), (q, k, v))
    for g, e in zip(got, want):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-9)


def test_attention_gradcheck_with_a_learned_additive_mask():
    q, k, v = operands(lead=(1, 2), tq=4, tk=5, d=3, dv=2, requires_grad=True)[:3]
    bias = torch.randn(1, 2, 4, 5, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: ops.attention_with_dropout(*t[:3], attn_mask=t[3]), (q, k, v, bias))


def test_a_row_without_keys_gives_zeros_like_sdpa():
    q, k, v, qt, kt, vt = operands(lead=(1, 1), tq=4, tk=5)
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[2] = False
    o, ot = ops.attention_dual(q, k, v, qt, kt, vt, attn_mask=mask)
    torch.testing.assert_close(o, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), rtol=0, atol=1e-12)
    assert not o[..., 2, :].any() and not ot[..., 2, :].any()
    vt.requires_grad_()
    ot = ops.attention_dual(q, k, v, None, None, vt, attn_mask=mask)[1]
    (grad,) = torch.autograd.grad(ot.sum(), vt)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_within_twice_torchs_own_error(dtype):
    """flash-attention's rule: the error against float64 is at most twice PyTorch's own in that dtype."""
    q, k, v, qt, kt, vt = operands(tq=33, tk=33)
    o, ot = ops.attention_dual(*(x.to(dtype) for x in (q, k, v, qt, kt, vt)), is_causal=True)
    jo, jot = torch.func.jvp(lambda a, b, c: softmax_attention(a, b, c, is_causal=True), (q, k, v), (qt, kt, vt))
    low = [x.to(dtype) for x in (q, k, v, qt, kt, vt)]
    with fwAD.dual_level(), sdpa_kernel(SDPBackend.MATH):
        torch_out = F.scaled_dot_product_attention(*(fwAD.make_dual(p, t) for p, t in zip(low[:3], low[3:])),
                                                   is_causal=True)
        to, tot = fwAD.unpack_dual(torch_out)
    assert o.dtype == ot.dtype == dtype
    for name, got, ours_ref, torch_got in (("O", o, jo, to), ("Ȯ", ot, jot, tot)):
        err = (got.double() - ours_ref).abs().max().item()
        torch_err = (torch_got.double() - ours_ref).abs().max().item()
        print(f"{dtype} {name}: error {err:.3g}, torch's {torch_err:.3g}")
        assert err <= 2 * torch_err + 4 * torch.finfo(dtype).eps, (name, err, torch_err)


# ----------------------------------------------------------------------------------------------------
# Dropout
# ----------------------------------------------------------------------------------------------------

def keep_mask(rate, seed, lead, tq, tk):
    n = torch.arange(math.prod(lead)).reshape(*lead, 1, 1)
    u = R.philox_uniform(seed, torch.arange(tk)[None, :], torch.arange(tq)[:, None], n)
    p = rate.reshape(-1, *[1] * (len(lead) + 1))
    return torch.where(u >= p.float(), 1 / (1 - p), 0.0)


def test_philox_known_answers():
    """Random123's known-answer vectors of Philox4x32-10 (first output word)."""
    assert R.philox(0, *[torch.tensor(0)] * 4).item() == 0x6627E8D5
    assert R.philox(0xFFFFFFFFFFFFFFFF, *[torch.tensor(0xFFFFFFFF)] * 4).item() == 0x408F276D
    words = [torch.tensor(w) for w in (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344)]
    assert R.philox(0x299F31D0A4093822, *words).item() == 0xD16CFE09


@pytest.mark.parametrize("mask", ["none", "causal"])
def test_dropout_is_the_seeded_keep_mask_on_primal_and_tangent(mask):
    q, k, v, qt, kt, vt = operands()
    kw = MASKS[mask]((2, 3), 13, 11)
    rate = torch.tensor([0.25, 0.6], dtype=F64)
    keep = keep_mask(rate, 1234, (2, 3), 13, 11)
    o, ot = ops.attention_dual(q, k, v, qt, kt, vt, dropout_rate=rate, seed=1234, **kw)
    jo, jot = torch.func.jvp(lambda a, b, c: softmax_attention(a, b, c, keep=keep, **kw), (q, k, v), (qt, kt, vt))
    torch.testing.assert_close(o, jo, rtol=0, atol=1e-9)
    torch.testing.assert_close(ot, jot, rtol=0, atol=1e-9)
    qt, kt, vt = (t.requires_grad_() for t in (qt, kt, vt))
    cotangent = torch.randn_like(ot)
    _, ot = ops.attention_dual(q, k, v, qt, kt, vt, dropout_rate=rate, seed=1234, **kw)
    got = torch.autograd.grad((ot * cotangent).sum(), (qt, kt, vt))
    _, jot = torch.func.jvp(lambda a, b, c: softmax_attention(a, b, c, keep=keep, **kw), (q, k, v), (qt, kt, vt))
    for g, e in zip(got, torch.autograd.grad((jot * cotangent).sum(), (qt, kt, vt))):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-9)


def test_dropout_rates_per_example_and_seeds():
    rate = torch.tensor([0.0, 0.1, 0.5, 0.9])
    dropped = (keep_mask(rate, 7, (4, 2), 64, 64) == 0).double().mean((1, 2, 3))
    # 8192 draws per example: binomial standard error <= 0.0056; 0.03 is > 5 of them.
    assert dropped[0] == 0 and (dropped - rate.double()).abs().max() < 0.03, dropped
    q, k, v = operands()[:3]
    r = torch.full((2,), 0.5, dtype=F64)
    assert torch.equal(ops.attention_with_dropout(q, k, v, dropout_rate=r, seed=5), ops.attention_with_dropout(q, k, v, dropout_rate=r, seed=5))
    assert not torch.equal(ops.attention_with_dropout(q, k, v, dropout_rate=r, seed=5),
                           ops.attention_with_dropout(q, k, v, dropout_rate=r, seed=6))
    torch.manual_seed(3)
    a = ops.attention_with_dropout(q, k, v, dropout_rate=r)
    torch.manual_seed(3)
    assert torch.equal(a, ops.attention_with_dropout(q, k, v, dropout_rate=r)), "the drawn seed follows torch.manual_seed"


def test_attention_dropout_gradients():
    q, k, v = (x.requires_grad_() for x in operands()[:3])
    rate = torch.tensor([0.3, 0.5], dtype=F64)
    keep = keep_mask(rate, 99, (2, 3), 13, 11)
    o = ops.attention_with_dropout(q, k, v, dropout_rate=rate, seed=99)
    expected = softmax_attention(q, k, v, keep=keep)
    torch.testing.assert_close(o, expected, rtol=0, atol=1e-9)
    cotangent = torch.randn_like(o)
    for g, e in zip(torch.autograd.grad((o * cotangent).sum(), (q, k, v)),
                    torch.autograd.grad((expected * cotangent).sum(), (q, k, v))):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-9)


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


def test_backend_choice(recwarn):
    from fastdstn.ops.dispatch import choose
    assert choose("attention_dual", "cpu")[1] is R.attention_dual
    with ops.use_backend("cpp"):
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
    with fwAD.dual_level(), dual_attention():
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
    kw = MASKS[mask]((2, 3), 13, 11)
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
    with fwAD.dual_level(), dual_attention():
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
    with fwAD.dual_level(), dual_attention():
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


# ------------------------- Triton (fastdstn.ops.attention.triton): the flash-style dual forward and tangent backward
# Against the reference backend (CPU under TRITON_INTERPRET=1, or a GPU). Interpreter shapes stay small (~4 ms per
# program × key step); bf16/fp16, head sizes 64-128 and long sequences run on a GPU only.
GPU = pytest.mark.skipif(DEVICE != "cuda", reason="bf16/fp16 tl.dot and the real tile configs need a GPU")


def triton_operands(lead=(2, 2), tq=21, tk=19, d=16, dv=16, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    shapes = [(*lead, tq, d), (*lead, tk, d), (*lead, tk, dv)] * 2
    return [torch.randn(s, generator=g).to(DEVICE, dtype).requires_grad_() for s in shapes]


def triton_masks(lead, tq, tk):
    g = torch.Generator().manual_seed(1)
    return {
        "none": {},
        "causal": dict(is_causal=True),
        "padding": dict(attn_mask=(torch.arange(tk).expand(lead[0], 1, 1, tk)
                                   < torch.tensor([tk, tk - 7])[:, None, None, None]).to(DEVICE)),
        "additive": dict(attn_mask=torch.randn(tq, tk, generator=g).to(DEVICE)),
        "dropout": dict(dropout_rate=torch.tensor([0.2, 0.5], device=DEVICE), seed=2024),
    }


def triton_compare(op_name, tangent_names, kw, lead=(2, 2), tq=21, tk=19, d=16, dv=16, dtype=torch.float32):
    """Forward outputs and the gradients w.r.t. `tangent_names` (of attention_dual: its tangents; of
    attention: q, k, v) against the float64 reference, within accuracy.attention_magnitudes' bound."""
    q, k, v, qt, kt, vt = triton_operands(lead, tq, tk, d, dv, dtype)
    tangents = [t if name in tangent_names else None for name, t in zip("qkv", (qt, kt, vt))]
    kw64 = {name: (value.double() if isinstance(value, torch.Tensor) and value.is_floating_point() else value)
            for name, value in kw.items()}

    def run(module, args, kwargs):
        if op_name == "attention":
            out = (module.attention(*args[:3], **kwargs),)
            inputs = args[:3]
        else:
            out = module.attention_dual(*args, **kwargs)[1:]
            inputs = args[3:]
        return out, grads(out, [cot], inputs)

    cot = torch.randn((*lead, tq, dv), generator=torch.Generator().manual_seed(3)).to(DEVICE, dtype)
    frozen = [x.detach() for x in (q, k, v)]
    args = (*frozen, *tangents) if op_name == "attention_dual" else (q, k, v, None, None, None)
    got = run(AT, args, kw)
    exact = run(R, to64(args), kw64)
    mags = attention_magnitudes(q, k, v, args[3:], cot, **kw)
    within = dict(n=attention_terms(q, k, v), rounding=half_roundings(dtype))
    if op_name == "attention_dual":  # the primal O too, and the gradients of the tangents given
        o = AT.attention_dual(*args, **kw)[0]
        assert_within_bound("O", o, R.attention_dual(*to64(args), **kw64)[0], mags[0], **within)
        assert_within_bound("Ȯ", got[0], exact[0], [mags[1]], **within)
    else:
        assert_within_bound("O", got[0], exact[0], [mags[0]], **within)
    assert_within_bound(f"{op_name} grads", got[1], exact[1], mags[2:], **within)


def half_roundings(dtype):
    """The kernels round P (and Ṗ) to the input format for the tensor-core products, and the outputs: 4 roundings
    of a half-precision format; none in float32."""
    return roundings(4, dtype) if dtype in (torch.float16, torch.bfloat16) else 0.0


@needs_triton
@pytest.mark.parametrize("mask", ["none", "causal", "padding", "additive", "dropout"])
def test_triton_attention_dual_forward_and_tangent_backward(mask):
    """T = 21 queries, 19 keys: neither a multiple of the 16-wide interpreter tiles."""
    triton_compare("attention_dual", "qkv", triton_masks((2, 2), 21, 19)[mask])


@needs_triton
@pytest.mark.parametrize("present", ["q", "kv", "v"])
def test_triton_attention_dual_with_some_tangents(present):
    triton_compare("attention_dual", present, dict(is_causal=True), tq=21, tk=21)


@needs_triton
@pytest.mark.parametrize("mask", ["causal", "padding", "dropout"])
def test_triton_attention_forward_and_backward(mask):
    triton_compare("attention", "qkv", triton_masks((2, 2), 21, 19)[mask])


@needs_triton
def test_triton_attention_head_sizes_and_layouts():
    """d = 24 (padded to a 32-wide tile), v's head size 8 ≠ d, 3-d inputs, and q, k, v as transposed views of
    a (B, T, heads·d) projection, as nn.MultiheadAttention and Hugging Face lay them out."""
    triton_compare("attention_dual", "qkv", {}, lead=(3,), tq=19, tk=19, d=24, dv=8)
    b, t, h, d = 2, 18, 2, 16
    g = torch.Generator().manual_seed(4)
    proj = [torch.randn(b, t, h * d, generator=g).to(DEVICE).view(b, t, h, d).transpose(1, 2) for _ in range(6)]
    o, ot = AT.attention_dual(*proj, is_causal=True)
    exact = R.attention_dual(*to64(proj), is_causal=True)
    mags = attention_magnitudes(*proj[:3], proj[3:], torch.zeros_like(o), is_causal=True)
    n = attention_terms(*proj[:3])
    assert_within_bound("O (views)", o, exact[0], mags[0], n)
    assert_within_bound("Ȯ (views)", ot, exact[1], mags[1], n)


@needs_triton
def test_triton_attention_float64_gradcheck_of_the_tangent_path():
    q, k, v, qt, kt, vt = (x.detach().double().requires_grad_(i >= 3)
                           for i, x in enumerate(triton_operands(lead=(1, 2), tq=5, tk=4, d=4, dv=4)))
    assert torch.autograd.gradcheck(lambda *t: AT.attention_dual(q, k, v, *t, is_causal=True)[1], (qt, kt, vt),
                                    fast_mode=True)


@needs_triton
def test_triton_attention_a_row_without_keys_gives_zeros():
    q, k, v, qt, kt, vt = (x.detach() for x in triton_operands(lead=(1, 1), tq=5, tk=6))
    mask = torch.ones(5, 6, dtype=torch.bool, device=DEVICE)
    mask[3] = False
    o, ot = AT.attention_dual(q, k, v, qt, kt, vt, attn_mask=mask)
    assert not o[..., 3, :].any() and not ot[..., 3, :].any()
    vt.requires_grad_()
    (grad,) = torch.autograd.grad(AT.attention_dual(q, k, v, None, None, vt, attn_mask=mask)[1].sum(), vt)
    assert torch.isfinite(grad).all()


@needs_triton
def test_triton_attention_gradients_of_the_primal_are_refused_clearly():
    q, k, v, qt, kt, vt = triton_operands(lead=(1, 1), tq=5, tk=5)
    _, ot = AT.attention_dual(q, k, v, qt, kt, vt)
    with pytest.raises(NotImplementedError, match=r"attention_dual \(triton backend\): no gradient w.r.t. q, k, v"):
        ot.sum().backward()


@needs_triton
def test_triton_attention_opcheck():
    q, k, v, qt, kt, vt = (x.detach() for x in triton_operands(lead=(1, 2), tq=9, tk=7))
    rate = torch.tensor([0.3], device=DEVICE)
    mask = torch.randn(9, 7, device=DEVICE)
    needs_grad = [x.clone().requires_grad_() for x in (q, k, kt, vt)]
    samples = [
        ((q, k, v, qt, kt, vt, None, True, 0.25, None, 0), "fastdstn::attention_dual_triton"),
        ((q, k, v, None, *needs_grad[2:], mask, False, 0.25, rate, 7), "fastdstn::attention_dual_triton"),
        ((*needs_grad[:2], v, None, False, 0.25, rate, 7), "fastdstn::attention_triton"),
    ]
    for args, name in samples:
        torch.library.opcheck(getattr(torch.ops.fastdstn, name.split("::")[1]).default, args,
                              test_utils=TRITON_OPCHECK_UTILS)


@needs_triton
@GPU
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("head", [64, 128])
@pytest.mark.parametrize("mask", ["causal", "padding", "dropout"])
def test_triton_attention_gpu_half_precision(dtype, head, mask):
    triton_compare("attention_dual", "qkv", triton_masks((2, 2), 1000, 1000)[mask], tq=1000, tk=1000, d=head, dv=head,
            dtype=dtype)
    triton_compare("attention", "qkv", triton_masks((2, 2), 1000, 1000)[mask], tq=1000, tk=1000, d=head, dv=head,
                   dtype=dtype)


@needs_triton
def test_triton_attention_registered_beside_the_compiled_library():
    """The C++ library defines the fastdstn namespace; the attention ops are a Python fragment of it."""
    from fastdstn.ops import cpp
    if not cpp.AVAILABLE:
        pytest.skip(f"fastdstn._C not built: {cpp.UNAVAILABLE_REASON}")
    assert torch.ops.fastdstn.stn_linear_dual.default is not None
    assert all(hasattr(torch.ops.fastdstn, name)
               for name in ("attention_dual_triton", "attention_triton", "attention_backward_triton"))
