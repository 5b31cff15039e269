"""PTB word-level language model: 2-layer LSTM, 650 units, tied embeddings (SPEC §8).

The hidden state is carried from one bptt window to the next (detached), per *stream*: the trainer
names the stream ("train", "hyper", "valid", "test") it feeds, so that validation windows never
continue a training state. Only forwards that advance a stream store their final state: training
forwards that update the general weights and evaluation forwards; the response sub-step (general
weights frozen) re-reads the state its general sub-step started from.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, Optional, Tuple

import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

from ..hyper import Hyper
from ..nn import StnEmbedding, StnLinear, StnLockedDropout, StnLSTM
from .base import BuiltModel, dropout

State = Tuple[torch.Tensor, torch.Tensor]


def _primal(t: torch.Tensor) -> torch.Tensor:
    return fwAD.unpack_dual(t).primal.detach()


class LSTMLanguageModel(nn.Module):
    """Time-major (T, B) tokens → (T, B, vocab) logits."""

    def __init__(self, vocab: int, size: int, layers: int, num_hypers: int) -> None:
        super().__init__()
        self.encoder = StnEmbedding(vocab, size, num_hypers, batch_dim=1)
        self.drop_in = StnLockedDropout("dropout_in")
        self.lstm = StnLSTM(size, size, num_hypers, num_layers=layers, dropconnect="dropconnect",
                            layer_dropout="dropout_h")
        self.drop_out = StnLockedDropout("dropout_out")
        self.decoder = StnLinear(size, vocab, num_hypers, batch_dim=1)
        self.decoder.weight = self.encoder.weight      # tied input and output embeddings
        self.stream = "train"
        self._states: Dict[str, State] = {}

    @contextlib.contextmanager
    def streaming(self, name: str) -> Iterator[None]:
        previous, self.stream = self.stream, name
        try:
            yield
        finally:
            self.stream = previous

    def reset_state(self, stream: Optional[str] = None) -> None:
        """Forget the carried state of one stream (or of all): at an epoch's first window."""
        if stream is None:
            self._states.clear()
        else:
            self._states.pop(stream, None)

    def _advances(self) -> bool:
        return not self.training or self.encoder.weight.requires_grad

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        state = self._states.get(self.stream)
        if state is not None and state[0].shape[1] != tokens.shape[1]:
            state = None                                # a batch of another width starts afresh
        x = self.drop_in(self.encoder(tokens))
        out, (h, c) = self.lstm(x, state)
        if self._advances():
            self._states[self.stream] = (_primal(h), _primal(c))
        return self.decoder(self.drop_out(out))

    # The carried states travel with the state_dict, so that a mid-epoch checkpoint resumes exactly.
    def get_extra_state(self):
        return {name: (h.cpu(), c.cpu()) for name, (h, c) in self._states.items()}

    def set_extra_state(self, state) -> None:
        device = self.encoder.weight.device
        self._states = {name: (h.to(device), c.to(device)) for name, (h, c) in (state or {}).items()}


def lstm_lm(vocab: int = 10000, size: int = 650, layers: int = 2) -> BuiltModel:
    hypers = [dropout("dropout_in", 0.1), dropout("dropout_h", 0.1), dropout("dropout_out", 0.1),
              Hyper("dropconnect", 0.1, 0.0, 0.95, per_example=False)]
    return BuiltModel(LSTMLanguageModel(vocab, size, layers, len(hypers)), hypers, task="language", batch_dim=1)
