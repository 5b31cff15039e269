"""fastdstn.nn.attention (each route against PyTorch's SDPA in float64, the dual route against torch.func.jvp
through SDPA's math kernel) and torchvision's Swin window attention as fastdstn computes it."""
import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from fastdstn import convert, feeding
from fastdstn.nn import WindowAttention, attention

B, HEADS, L, S, E = 3, 2, 5, 6, 4


def dual_pass():
    """A Δ-STN dual feed (attention takes its dual route only inside one)."""
    return feeding(torch.zeros(B, 1), dual=True)


def qkv():
    return [torch.randn(B, HEADS, n, E, dtype=torch.float64) for n in (L, S, S)]


MASKS = {
    "none": lambda: (None, False),
    "causal": lambda: (None, True),
    "bool": lambda: (torch.rand(B, 1, L, S) > 0.3, False),
    "additive": lambda: (torch.randn(L, S, dtype=torch.float64), False),
}


@pytest.mark.parametrize("mask", list(MASKS))
def test_explicit_route_equals_sdpa(mask):
    q, k, v = qkv()
    attn_mask, causal = MASKS[mask]()
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        attn_mask[..., 0] = True            # every query sees a key (a fully masked row is NaN either way)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal)
    fused, none = attention(q, k, v, attn_mask=attn_mask, is_causal=causal)
    explicit, weights = attention(q, k, v, attn_mask=attn_mask, is_causal=causal, need_weights=True)
    assert none is None and weights.shape == (B, HEADS, L, S)
    torch.testing.assert_close(fused, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(explicit, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(weights @ v, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("tangents", ["qkv", "q", "k", "v"])
@pytest.mark.parametrize("mask", list(MASKS))
def test_dual_route_equals_jvp_through_the_math_kernel(mask, tangents):
    q, k, v = qkv()
    dq, dk, dv = [torch.randn_like(t) if name in tangents else torch.zeros_like(t) for name, t in zip("qkv", (q, k, v))]
    attn_mask, causal = MASKS[mask]()
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        attn_mask[..., 0] = True
    with fwAD.dual_level(), dual_pass():
        duals = [fwAD.make_dual(t, d) if name in tangents else t for name, t, d in zip("qkv", (q, k, v), (dq, dk, dv))]
        out, _ = attention(*duals, attn_mask=attn_mask, is_causal=causal)
        primal, tangent = fwAD.unpack_dual(out)
    with sdpa_kernel(SDPBackend.MATH):
        expected, expected_tangent = torch.func.jvp(
            lambda *t: F.scaled_dot_product_attention(*t, attn_mask=attn_mask, is_causal=causal), (q, k, v),
            (dq, dk, dv))
    torch.testing.assert_close(primal, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(tangent, expected_tangent, rtol=1e-10, atol=1e-12)


def test_a_query_that_sees_no_key_gets_zero_as_in_sdpa():
    """(A causal model's left-padded rows.) The primal is SDPA's 0 and the tangent 0, not NaN."""
    q, k, v = qkv()
    mask = torch.ones(B, 1, L, S, dtype=torch.bool)
    mask[1, :, 0] = False
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert expected[1, :, 0].abs().sum() == 0
    torch.testing.assert_close(attention(q, k, v, attn_mask=mask, need_weights=True)[0], expected)
    with fwAD.dual_level(), dual_pass():
        out, _ = attention(fwAD.make_dual(q, torch.randn_like(q)), k, v, attn_mask=mask)
        primal, tangent = fwAD.unpack_dual(out)
    torch.testing.assert_close(primal, expected)
    assert torch.isfinite(tangent).all() and tangent[1, :, 0].abs().sum() == 0


def test_per_example_dropout_of_the_weights():
    """Example 0 drops nothing; example 1 keeps each weight with probability 0.5, scaled by 2 (the weights route);
    the dual route (fastdstn.ops.attention_dual) draws the same mask as the per-example route
    (fastdstn.ops.attention_with_dropout) from the same seed."""
    q, k, v = qkv()
    rate = torch.tensor([0.0, 0.5, 0.5], dtype=torch.float64)
    plain = F.scaled_dot_product_attention(q, k, v)
    torch.manual_seed(3)
    out, weights = attention(q, k, v, dropout=rate, need_weights=True)
    probs = torch.softmax(q @ k.transpose(-2, -1) / E ** 0.5, -1)
    torch.testing.assert_close(out[0], plain[0])
    torch.testing.assert_close(weights @ v, out)
    kept = weights[1:] != 0
    torch.testing.assert_close(weights[1:][kept], 2 * probs[1:][kept])
    assert 0.3 < kept.double().mean() < 0.7
    torch.manual_seed(3)
    fused, _ = attention(q, k, v, dropout=rate)
    torch.testing.assert_close(fused[0], plain[0])
    assert not torch.allclose(fused[1], plain[1])
    torch.manual_seed(3)
    with fwAD.dual_level(), dual_pass():
        dual, _ = attention(q, k, fwAD.make_dual(v, torch.zeros_like(v)), dropout=rate)
    torch.testing.assert_close(fwAD.unpack_dual(dual).primal, fused)
    with pytest.raises(ValueError, match="rate: expected drop probabilities in"):
        attention(q, k, v, dropout=torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64))


@pytest.mark.parametrize("size, shift", [((8, 8), (2, 2)), ((6, 10), (2, 2)), ((4, 4), (2, 2)), ((8, 8), (0, 0))])
def test_window_attention_matches_torchvision(size, shift):
    """Padding to whole windows, the cyclic shift and its mask, and no shift where one window covers an axis."""
    from torchvision.models.swin_transformer import ShiftedWindowAttention

    original = ShiftedWindowAttention(8, [4, 4], list(shift), 2).double().eval()
    model = convert(original, 1).eval()
    assert isinstance(model, WindowAttention)
    x = torch.randn(2, *size, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), original(x), rtol=1e-12, atol=1e-12)
