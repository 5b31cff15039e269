"""A small GPT for word-level language modelling (preset ptb-gpt): a plain PyTorch decoder (token and learned
positional embeddings, pre-norm causal nn.TransformerEncoder, output tied to the token embedding) made an STN by
fastdstn.convert, tuning its embedding, attention-weight and residual dropout and a weight decay.

Batches are time-major (T, B) token ids, as the PTB loader gives them; logits come back (T, B, vocab). Each window
of the stream is modelled on its own: no state is carried between windows (unlike the LSTM), so a window's first
tokens see little context.
"""
from __future__ import annotations

import torch
from torch import nn

from ..hyper import Hyper
from ..nn import convert
from .base import BuiltModel, dropout


class GPT(nn.Module):
    """Time-major (T, B) tokens, T ≤ context, → (T, B, vocab) logits."""

    def __init__(self, vocab: int, size: int, layers: int, heads: int, context: int) -> None:
        super().__init__()
        self.tokens, self.positions = nn.Embedding(vocab, size), nn.Embedding(context, size)
        self.drop = nn.Dropout(0.0)
        layer = nn.TransformerEncoderLayer(size, heads, 4 * size, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(size), enable_nested_tensor=False)
        self.head = nn.Linear(size, vocab)
        self.head.weight = self.tokens.weight          # tied input and output embeddings
        # GPT-2's embedding init. With nn.Embedding's N(0, 1) rows the decayed Σ‖E‖² is 1.3e6 and the first Δ-STN
        # training loss is 209 (random targets; ln(10000) = 9.2).
        for embedding in (self.tokens, self.positions):
            nn.init.normal_(embedding.weight, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        ids = tokens.t()
        steps = ids.shape[1]
        x = self.drop(self.tokens(ids) + self.positions(torch.arange(steps, device=ids.device)))
        causal = nn.Transformer.generate_square_subsequent_mask(steps, device=ids.device, dtype=x.dtype)
        return self.head(self.blocks(x, mask=causal, is_causal=True)).transpose(0, 1)


# The tuned sites of GPT: module names (patterns) → hyperparameter.
SITES = {"drop": "dropout_embed", "blocks.layers.*.self_attn": "dropout_attn",
         "blocks.layers.*.dropout[12]": "dropout_resid"}


def gpt_lm(vocab: int = 10000, size: int = 128, layers: int = 2, heads: int = 4, context: int = 35) -> BuiltModel:
    """context: the longest window (the preset's bptt). Weight decay: per batch, in (0, 0.01), starting at 1e-4."""
    hypers = [dropout("dropout_embed", 0.1), dropout("dropout_attn", 0.1), dropout("dropout_resid", 0.1),
              Hyper("weight_decay", 1e-4, 0.0, 1e-2, per_example=False)]
    model = convert(GPT(vocab, size, layers, heads, context), len(hypers), dropout=SITES)
    return BuiltModel(model, hypers, task="language", weight_decay="weight_decay", batch_dim=1)
