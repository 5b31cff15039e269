"""Pure-PyTorch reference of every STN op: the ground truth for tests and benchmarks.

Each function is the plain formulation of SPEC §3/§5 (separate GEMMs, unfused elementwise
epilogues). Inputs are assumed valid: `fastdstn.ops` checks them before dispatching here.

Shapes (N rows, H hyperparameters, `out` output units):
    x, xt: (N, in)            h, eps: (N, H)
    Wg, Wr: (out, in)         bg, br: (out,) or None
    V: (2*out, H) when br is given (rows [s | t]), (out, H) when br is None (rows s)
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def hyper_projection(h: Tensor, V: Tensor, out: int) -> Tuple[Tensor, Optional[Tensor]]:
    """[s | t] = h·Vᵀ split into the scale s (N, out) and the bias gate t (N, out) or None."""
    st = h @ V.t()
    if V.shape[0] == out:
        return st, None
    return st[:, :out], st[:, out:]


def stn_linear(x: Tensor, h: Tensor, Wg: Tensor, bg: Optional[Tensor], Wr: Tensor,
               br: Optional[Tensor], V: Tensor) -> Tensor:
    """y = x·W_gᵀ + b_g + s ⊙ (x·W_rᵀ) + t ⊙ b_r."""
    s, t = hyper_projection(h, V, Wg.shape[0])
    y = x @ Wg.t() + s * (x @ Wr.t())
    if bg is not None:
        y = y + bg
    if br is not None:
        y = y + t * br
    return y


def stn_linear_dual(x: Tensor, xt: Optional[Tensor], eps: Tensor, Wg: Tensor, bg: Optional[Tensor],
                    Wr: Tensor, br: Optional[Tensor], V: Tensor) -> Tuple[Tensor, Tensor]:
    """Primal y = x·W_gᵀ + b_g and tangent ẏ = ẋ·W_gᵀ + s ⊙ (x·W_rᵀ) + t ⊙ b_r, [s|t] = ε·Vᵀ."""
    s, t = hyper_projection(eps, V, Wg.shape[0])
    y = x @ Wg.t()
    if bg is not None:
        y = y + bg
    yt = s * (x @ Wr.t())
    if xt is not None:
        yt = yt + xt @ Wg.t()
    if br is not None:
        yt = yt + t * br
    return y, yt


def _per_channel(v: Tensor) -> Tensor:
    """(N, C) -> (N, C, 1, 1) so it broadcasts over an image's H×W."""
    return v[:, :, None, None]


def stn_conv2d(x: Tensor, h: Tensor, Wg: Tensor, bg: Optional[Tensor], Wr: Tensor,
               br: Optional[Tensor], V: Tensor, stride: Sequence[int] = (1, 1),
               padding: Sequence[int] = (0, 0), dilation: Sequence[int] = (1, 1),
               groups: int = 1) -> Tensor:
    """y = conv(x, W_g) + b_g + s ⊙ conv(x, W_r) + t ⊙ b_r, s and t per example and channel."""
    s, t = hyper_projection(h, V, Wg.shape[0])
    y = F.conv2d(x, Wg, bg, stride, padding, dilation, groups)
    y = y + _per_channel(s) * F.conv2d(x, Wr, None, stride, padding, dilation, groups)
    if br is not None:
        y = y + _per_channel(t * br)
    return y


def stn_conv2d_dual(x: Tensor, xt: Optional[Tensor], eps: Tensor, Wg: Tensor, bg: Optional[Tensor],
                    Wr: Tensor, br: Optional[Tensor], V: Tensor, stride: Sequence[int] = (1, 1),
                    padding: Sequence[int] = (0, 0), dilation: Sequence[int] = (1, 1),
                    groups: int = 1) -> Tuple[Tensor, Tensor]:
    """The conv analogue of `stn_linear_dual`."""
    s, t = hyper_projection(eps, V, Wg.shape[0])
    y = F.conv2d(x, Wg, bg, stride, padding, dilation, groups)
    yt = _per_channel(s) * F.conv2d(x, Wr, None, stride, padding, dilation, groups)
    if xt is not None:
        yt = yt + F.conv2d(xt, Wg, None, stride, padding, dilation, groups)
    if br is not None:
        yt = yt + _per_channel(t * br)
    return y, yt


def stn_embedding(tokens: Tensor, h: Tensor, Eg: Tensor, Er: Tensor, V: Tensor) -> Tensor:
    """y = E_g[tok] + s ⊙ E_r[tok]; tokens (N,), h (N, H), V (dim, H)."""
    s = h @ V.t()
    return F.embedding(tokens, Eg) + s * F.embedding(tokens, Er)


def stn_embedding_dual(tokens: Tensor, eps: Tensor, Eg: Tensor, Er: Tensor, V: Tensor) -> Tuple[Tensor, Tensor]:
    """Primal E_g[tok], tangent s ⊙ E_r[tok] with s = ε·Vᵀ."""
    s = eps @ V.t()
    return F.embedding(tokens, Eg), s * F.embedding(tokens, Er)


def lstm_cell_dual(gates: Tensor, gates_t: Optional[Tensor], c: Tensor,
                   c_t: Optional[Tensor]) -> Tuple[Tensor, Optional[Tensor], Tensor, Optional[Tensor]]:
    """Pointwise LSTM step on pre-activations `gates` (N, 4·hidden), order i, f, g, o.

    c' = σ(f)·c + σ(i)·tanh(g), h' = σ(o)·tanh(c'), with the tangents (ḣ', ċ') when either
    gates_t or c_t is given (a missing tangent is zero); otherwise the tangents are None.
    """
    i, f, g, o = gates.chunk(4, dim=1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c_new = f * c + i * g
    tanh_c = torch.tanh(c_new)
    h_new = o * tanh_c
    if gates_t is None and c_t is None:
        return h_new, None, c_new, None
    c_new_t = torch.zeros_like(c_new) if c_t is None else f * c_t
    if gates_t is not None:
        it, ft, gt, ot = gates_t.chunk(4, dim=1)
        c_new_t = c_new_t + (f * (1 - f) * ft) * c + (i * (1 - i) * it) * g + i * ((1 - g * g) * gt)
        h_new_t = (o * (1 - o) * ot) * tanh_c + o * ((1 - tanh_c * tanh_c) * c_new_t)
    else:
        h_new_t = o * ((1 - tanh_c * tanh_c) * c_new_t)
    return h_new, h_new_t, c_new, c_new_t


def dropout_keep_mask(shape: Sequence[int], rate: Tensor, batch_dim: int, seed: int,
                      device: torch.device, dtype: torch.dtype) -> Tensor:
    """Scaled keep mask Bernoulli(1 − p_i)/(1 − p_i) of `shape`, example i's rate p_i = rate[i].

    Dimensions of `shape` equal to 1 share one draw (channel dropout: spatial dims are 1;
    locked dropout: the time dimension is 1). The draw depends only on (seed, shape, device).
    """
    generator = torch.Generator(device=device).manual_seed(seed)
    uniform = torch.rand(tuple(shape), generator=generator, device=device, dtype=dtype)
    view = [1] * len(shape)
    view[batch_dim] = rate.shape[0]
    p = rate.to(dtype).reshape(view)
    return (uniform >= p).to(dtype) / (1 - p)


def dropout_dual(x: Tensor, xt: Optional[Tensor], rate: Tensor, seed: int, batch_dim: int = 0,
                 shared_dims: Sequence[int] = ()) -> Tuple[Tensor, Optional[Tensor]]:
    """Per-example dropout with the same mask on primal and tangent.

    rate: (x.shape[batch_dim],) drop probabilities in [0, 1); shared_dims: dims of x over which one
    draw is shared (e.g. (2, 3) for channel dropout of images, (0,) for locked dropout of (T, B, D)).
    """
    shape = [1 if d in shared_dims else n for d, n in enumerate(x.shape)]
    mask = dropout_keep_mask(shape, rate, batch_dim, seed, x.device, x.dtype)
    return x * mask, (None if xt is None else xt * mask)
