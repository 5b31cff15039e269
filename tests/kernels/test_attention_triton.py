"""fastdstn.ops.attention.triton: the flash-style dual forward and tangent backward against the reference
backend (CPU under TRITON_INTERPRET=1, or a GPU). Interpreter shapes stay small (~4 ms per program × key step);
bf16/fp16, head sizes 64-128 and long sequences run on a GPU only."""
import pytest
import torch

from fastdstn.ops.attention import reference as R
from fastdstn.ops.attention import triton as AT

from kernel_checks import DEVICE, OPCHECK_UTILS, grads, to64

GPU = pytest.mark.skipif(DEVICE != "cuda", reason="bf16/fp16 tl.dot and the real tile configs need a GPU")


def assert_matches(name, got, ref, ref64, dtype=torch.float32, floor_ulps=64.0):
    """flash-attention's rule for attention kernels: the error against the float64 truth is at most twice that
    of the PyTorch computation in the kernel's dtype (`ref`, the reference backend), plus a floor of a few ulps of
    the result's scale (PyTorch's own error can be 0 by luck). Attention is not a sum of products (softmax,
    exp), so the forward-error bound of sums of products does not apply. got/ref/ref64: tensors or lists of
    tensors/None, compared pairwise; a None reference gradient admits None or zeros."""
    listed = lambda v: list(v) if isinstance(v, (list, tuple)) else [v]  # noqa: E731
    for i, (g, r, r64) in enumerate(zip(listed(got), listed(ref), listed(ref64))):
        if r64 is None:
            assert g is None or not g.detach().abs().max().item(), f"{name}[{i}]: expected None or zeros"
            continue
        assert g.shape == r64.shape, f"{name}[{i}]: shape {tuple(g.shape)} != {tuple(r64.shape)}"
        g, r, r64 = (t.detach().double().cpu() for t in (g, r, r64))
        torch_err, err = (r - r64).abs().max().item(), (g - r64).abs().max().item()
        tol = 2 * torch_err + floor_ulps * torch.finfo(dtype).eps * max(r64.abs().max().item(), 1.0)
        print(f"{name}[{i}]: max |err| {err:.3g} (PyTorch in {dtype}: {torch_err:.3g}, tol {tol:.3g})")
        assert err <= tol, f"{name}[{i}]: max |err| {err:.3g} > tol {tol:.3g} (PyTorch's own {torch_err:.3g})"


def operands(lead=(2, 2), tq=21, tk=19, d=16, dv=16, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    shapes = [(*lead, tq, d), (*lead, tk, d), (*lead, tk, dv)] * 2
    return [torch.randn(s, generator=g).to(DEVICE, dtype).requires_grad_() for s in shapes]


def masks(lead, tq, tk):
    g = torch.Generator().manual_seed(1)
    return {
        "none": {},
        "causal": dict(is_causal=True),
        "padding": dict(attn_mask=(torch.arange(tk).expand(lead[0], 1, 1, tk)
                                   < torch.tensor([tk, tk - 7])[:, None, None, None]).to(DEVICE)),
        "additive": dict(attn_mask=torch.randn(tq, tk, generator=g).to(DEVICE)),
        "dropout": dict(dropout_rate=torch.tensor([0.2, 0.5], device=DEVICE), seed=2024),
    }


def compare(op_name, tangent_names, kw, lead=(2, 2), tq=21, tk=19, d=16, dv=16, dtype=torch.float32):
    """Forward outputs and the gradients w.r.t. `tangent_names` (of attention_dual: its tangents; of
    attention: q, k, v) against the reference in the kernel's dtype and in float64."""
    q, k, v, qt, kt, vt = operands(lead, tq, tk, d, dv, dtype)
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
        cot = [torch.randn(o.shape, generator=torch.Generator().manual_seed(3)).to(o) for o in out]
        return out, grads(out, cot, inputs)

    frozen = [x.detach() for x in (q, k, v)]
    args = (*frozen, *tangents) if op_name == "attention_dual" else (q, k, v, None, None, None)
    got = run(AT, args, kw)
    ref = run(R, args, kw)
    ref64 = run(R, to64(args), kw64)
    if op_name == "attention_dual":  # the primal O too
        o = AT.attention_dual(*args, **kw)[0]
        assert_matches("O", o, R.attention_dual(*args, **kw)[0], R.attention_dual(*to64(args), **kw64)[0],
                       dtype=dtype)
    assert_matches(f"{op_name} out", got[0], ref[0], ref64[0], dtype=dtype)
    assert_matches(f"{op_name} grads", got[1], ref[1], ref64[1], dtype=dtype)


@pytest.mark.parametrize("mask", ["none", "causal", "padding", "additive", "dropout"])
def test_dual_forward_and_tangent_backward(mask):
    """T = 21 queries, 19 keys: neither a multiple of the 16-wide interpreter tiles."""
    compare("attention_dual", "qkv", masks((2, 2), 21, 19)[mask])


@pytest.mark.parametrize("present", ["q", "kv", "v"])
def test_dual_with_some_tangents(present):
    compare("attention_dual", present, dict(is_causal=True), tq=21, tk=21)


@pytest.mark.parametrize("mask", ["causal", "padding", "dropout"])
def test_attention_forward_and_backward(mask):
    compare("attention", "qkv", masks((2, 2), 21, 19)[mask])


def test_head_sizes_and_layouts():
    """d = 24 (padded to a 32-wide tile), v's head size 8 ≠ d, 3-d inputs, and q, k, v as transposed views of
    a (B, T, heads·d) projection, as nn.MultiheadAttention and Hugging Face lay them out."""
    compare("attention_dual", "qkv", {}, lead=(3,), tq=19, tk=19, d=24, dv=8)
    b, t, h, d = 2, 18, 2, 16
    g = torch.Generator().manual_seed(4)
    proj = [torch.randn(b, t, h * d, generator=g).to(DEVICE).view(b, t, h, d).transpose(1, 2) for _ in range(6)]
    o, ot = AT.attention_dual(*proj, is_causal=True)
    ro, rot = R.attention_dual(*proj, is_causal=True)
    assert_matches("O (views)", o, ro, R.attention_dual(*to64(proj), is_causal=True)[0])
    assert_matches("Ȯ (views)", ot, rot, R.attention_dual(*to64(proj), is_causal=True)[1])


def test_float64_gradcheck_of_the_tangent_path():
    q, k, v, qt, kt, vt = (x.detach().double().requires_grad_(i >= 3)
                           for i, x in enumerate(operands(lead=(1, 2), tq=5, tk=4, d=4, dv=4)))
    assert torch.autograd.gradcheck(lambda *t: AT.attention_dual(q, k, v, *t, is_causal=True)[1], (qt, kt, vt),
                                    fast_mode=True)


def test_a_row_without_keys_gives_zeros():
    q, k, v, qt, kt, vt = (x.detach() for x in operands(lead=(1, 1), tq=5, tk=6))
    mask = torch.ones(5, 6, dtype=torch.bool, device=DEVICE)
    mask[3] = False
    o, ot = AT.attention_dual(q, k, v, qt, kt, vt, attn_mask=mask)
    assert not o[..., 3, :].any() and not ot[..., 3, :].any()
    vt.requires_grad_()
    (grad,) = torch.autograd.grad(AT.attention_dual(q, k, v, None, None, vt, attn_mask=mask)[1].sum(), vt)
    assert torch.isfinite(grad).all()


def test_gradients_of_the_primal_are_refused_clearly():
    q, k, v, qt, kt, vt = operands(lead=(1, 1), tq=5, tk=5)
    _, ot = AT.attention_dual(q, k, v, qt, kt, vt)
    with pytest.raises(NotImplementedError, match=r"attention_dual \(triton backend\): no gradient w.r.t. q, k, v"):
        ot.sum().backward()


def test_opcheck():
    q, k, v, qt, kt, vt = (x.detach() for x in operands(lead=(1, 2), tq=9, tk=7))
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
                              test_utils=OPCHECK_UTILS)


@GPU
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("head", [64, 128])
@pytest.mark.parametrize("mask", ["causal", "padding", "dropout"])
def test_gpu_half_precision(dtype, head, mask):
    compare("attention_dual", "qkv", masks((2, 2), 1000, 1000)[mask], tq=1000, tk=1000, d=head, dv=head,
            dtype=dtype)
    compare("attention", "qkv", masks((2, 2), 1000, 1000)[mask], tq=1000, tk=1000, d=head, dv=head, dtype=dtype)


def test_registered_beside_the_compiled_library():
    """The C++ library defines the fastdstn namespace; the attention ops are a Python fragment of it."""
    from fastdstn.ops import cpp
    if not cpp.AVAILABLE:
        pytest.skip(f"fastdstn._C not built: {cpp.UNAVAILABLE_REASON}")
    assert torch.ops.fastdstn.stn_linear_dual.default is not None
    assert all(hasattr(torch.ops.fastdstn, name)
               for name in ("attention_dual_triton", "attention_triton", "attention_backward_triton"))
