"""Swin's shifted-window attention with its projections called as modules.

torchvision's ShiftedWindowAttention hands `self.qkv.weight` and `self.proj.weight` to a function that applies
them with F.linear, so converted qkv/proj layers would never run their best-response. `convert` replaces it by
WindowAttention: the same computation (pad to whole windows, cyclic shift, attention within each window with the
learned relative position bias and, when shifted, the −100 mask between regions that the shift brought together,
then the reverse) with qkv and proj called as modules and the attention computed by `fastdstn.nn.attention`, so
that its attention-weight dropout can be a tuned per-example hyperparameter. Swin V2's cosine attention
(ShiftedWindowAttentionV2) is not converted.
"""
from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .attention import attention
from .dropout import training_rate

Tensor = torch.Tensor
SHIFT_MASK = -100.0     # torchvision's value between positions of different regions of a shifted window


class WindowAttention(nn.Module):
    """Window attention of (B, H, W, C) feature maps: qkv (C → 3C) and proj (C → C) linear layers, num_heads
    heads, windows of window_size, shifted by shift_size; attention_dropout and dropout (on the output) fixed
    rates, or dropout_hyper the per-example attention-weight drop probability."""

    def __init__(self, qkv: nn.Module, proj: nn.Module, relative_position_bias_table: nn.Parameter,
                 relative_position_index: Tensor, window_size: List[int], shift_size: List[int], num_heads: int,
                 attention_dropout: float = 0.0, dropout: float = 0.0, dropout_hyper: Optional[str] = None) -> None:
        super().__init__()
        self.qkv, self.proj = qkv, proj
        self.relative_position_bias_table = relative_position_bias_table
        self.register_buffer("relative_position_index", relative_position_index)
        self.window_size, self.shift_size, self.num_heads = list(window_size), list(shift_size), num_heads
        self.attention_dropout, self.dropout, self.dropout_hyper = attention_dropout, dropout, dropout_hyper

    @classmethod
    def from_module(cls, m: nn.Module, dropout_hyper: Optional[str] = None) -> "WindowAttention":
        """From torchvision's ShiftedWindowAttention `m`, sharing its submodules and parameters."""
        return cls(m.qkv, m.proj, m.relative_position_bias_table, m.relative_position_index, m.window_size,
                   m.shift_size, m.num_heads, m.attention_dropout, m.dropout, dropout_hyper)

    def relative_position_bias(self) -> Tensor:
        """(heads, N, N) for the N = wh·ww positions of a window."""
        n = self.window_size[0] * self.window_size[1]
        return self.relative_position_bias_table[self.relative_position_index].view(n, n, -1).permute(2, 0, 1)

    def _shift_mask(self, height: int, width: int, shift: List[int], like: Tensor) -> Tensor:
        """(windows, N, N): 0 between positions of the same region of the shifted map, SHIFT_MASK otherwise.
        Along each axis the last window is split at size − shift into the part that was there and the part the
        cyclic shift wrapped around."""
        def regions(size: int, window: int, s: int) -> Tensor:
            r = torch.arange(size, device=like.device)
            return (r >= size - window).long() + (r >= size - s).long()

        wh, ww = self.window_size
        label = regions(height, wh, shift[0])[:, None] * 3 + regions(width, ww, shift[1])[None, :]
        label = label.view(height // wh, wh, width // ww, ww).transpose(1, 2).reshape(-1, wh * ww)
        different = label[:, :, None] != label[:, None, :]
        return torch.zeros((), dtype=like.dtype, device=like.device).masked_fill(different, SHIFT_MASK)

    def _rate(self, batch: int, like: Tensor):
        if self.dropout_hyper is not None:
            return training_rate(self, self.dropout_hyper, batch, f"WindowAttention({self.dropout_hyper!r})", like)
        return self.attention_dropout if self.training and self.attention_dropout > 0 else None

    def forward(self, x: Tensor) -> Tensor:
        batch, height, width, channels = x.shape
        wh, ww = self.window_size
        x = F.pad(x, (0, 0, 0, -width % ww, 0, -height % wh))
        padded_h, padded_w = x.shape[1], x.shape[2]
        # No shift along an axis that one window covers.
        shift = [s if w < n else 0 for s, w, n in zip(self.shift_size, self.window_size, (padded_h, padded_w))]
        if any(shift):
            x = torch.roll(x, (-shift[0], -shift[1]), (1, 2))
        rows, cols = padded_h // wh, padded_w // ww
        # (B, windows, N, C): the examples stay along dim 0 for the STN projections.
        windows = x.view(batch, rows, wh, cols, ww, channels).transpose(2, 3).reshape(batch, rows * cols, wh * ww,
                                                                                      channels)
        head_dim = channels // self.num_heads
        q, k, v = self.qkv(windows).unflatten(-1, (3, self.num_heads, head_dim)).permute(3, 0, 1, 4, 2, 5)
        mask = self.relative_position_bias().to(q.dtype)
        if any(shift):
            mask = mask + self._shift_mask(padded_h, padded_w, shift, q)[:, None]
        out, _ = attention(q, k, v, attn_mask=mask, dropout=self._rate(batch, q))
        out = F.dropout(self.proj(out.transpose(2, 3).flatten(-2)), self.dropout, self.training)
        out = out.view(batch, rows, cols, wh, ww, channels).transpose(2, 3).reshape(batch, padded_h, padded_w,
                                                                                    channels)
        if any(shift):
            out = torch.roll(out, (shift[0], shift[1]), (1, 2))
        return out[:, :height, :width].contiguous()

    def extra_repr(self) -> str:
        return (f"window_size={self.window_size}, shift_size={self.shift_size}, num_heads={self.num_heads}, "
                f"attention_dropout={self.attention_dropout}, dropout_hyper={self.dropout_hyper!r}")
