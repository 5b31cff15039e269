"""The compiled backend of attention: the reference's blockwise algorithm (reference.py) with the dropout keep
mask drawn by the compiled op fastdstn::attention_keep_mask (csrc/attention/) on CPU, and that op's fake (meta)
kernel. Import only when `fastdstn.ops.cpp.AVAILABLE`.

Why only the mask: the reference's products and softmax are ATen's own kernels, while its Philox draw is some
220 int64 tensor ops per block (10 rounds, each two multiplies split into 16-bit halves, shifts, masks and four
xors), each a pass over the block's (heads, rows, keys) elements. The compiled op draws the same numbers, bit
for bit, in one pass with 32×32→64-bit multiplies (csrc/attention/attention_math.h).

CPU only (DEVICE_TYPES): on CUDA the Triton kernel draws its mask inside the attention; a CUDA tensor that
reaches this module anyway (a direct call) gets the reference's PyTorch mask.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from . import reference

Tensor = torch.Tensor

DEVICE_TYPES = ("cpu",)

_attention_keep_mask = torch.ops.fastdstn.attention_keep_mask.default


def keep_mask(seed: int, head_rate: Tensor, row_start: int, rows: int, keys: int, dtype: torch.dtype) -> Tensor:
    """reference.philox_keep_mask, computed by the compiled op on CPU tensors."""
    if head_rate.device.type != "cpu":
        return reference.philox_keep_mask(seed, head_rate, row_start, rows, keys, dtype)
    return _attention_keep_mask(seed, head_rate, row_start, rows, keys, dtype)


def attention_dual(q: Tensor, k: Tensor, v: Tensor, qt: Optional[Tensor], kt: Optional[Tensor],
                   vt: Optional[Tensor], attn_mask: Optional[Tensor] = None, is_causal: bool = False,
                   scale: Optional[float] = None, dropout_rate: Optional[Tensor] = None,
                   seed: int = 0) -> Tuple[Tensor, Tensor]:
    return reference.attention_dual(q, k, v, qt, kt, vt, attn_mask, is_causal, scale, dropout_rate, seed,
                                    keep_mask=keep_mask)


def attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Optional[Tensor] = None, is_causal: bool = False,
              scale: Optional[float] = None, dropout_rate: Optional[Tensor] = None, seed: int = 0) -> Tensor:
    return reference.attention(q, k, v, attn_mask, is_causal, scale, dropout_rate, seed, keep_mask=keep_mask)


@torch.library.register_fake("fastdstn::attention_keep_mask")
def _(seed, head_rate, row_start, rows, keys, dtype):
    return head_rate.new_empty((head_rate.shape[0], rows, keys), dtype=dtype)
