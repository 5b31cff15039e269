"""nn.TransformerEncoderLayer without its fused inference path.

In eval mode without autograd (or with every weight frozen, as in the hyper step), nn.TransformerEncoderLayer
runs `torch._transformer_encoder_layer_fwd` on the weights of its attention and linear layers, never calling
those modules: a converted layer's best-response would silently drop out (measured before this class existed:
STN-mode predictions of a converted TransformerEncoder off by up to 5.6 in the logits). `convert` gives each
encoder layer this class, whose forward is the layer's explicit path only, and turns off nn.TransformerEncoder's
nested-tensor path, which starts with the same fused kernels.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

Tensor = torch.Tensor


class ExplicitTransformerEncoderLayer(nn.TransformerEncoderLayer):
    """nn.TransformerEncoderLayer whose forward always calls its submodules (post- or pre-norm)."""

    def forward(self, src: Tensor, src_mask: Optional[Tensor] = None, src_key_padding_mask: Optional[Tensor] = None,
                is_causal: bool = False) -> Tensor:
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal=is_causal)
            return x + self._ff_block(self.norm2(x))
        x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal=is_causal))
        return self.norm2(x + self._ff_block(x))


def explicit(module: nn.Module, cls: type) -> nn.Module:
    """`module` as an instance of its subclass `cls`, sharing every attribute, submodule and parameter."""
    new = cls.__new__(cls)
    new.__dict__.update(module.__dict__)
    return new
