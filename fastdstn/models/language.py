"""PTB word-level language model: 2-layer LSTM, 650 units, tied embeddings (docs/METHOD.md §8).

The hidden state is carried from one bptt window to the next (detached), per *stream*: the trainer
names the stream ("train", "hyper", "valid", "test") it feeds, so that validation windows never
continue a training state. Only forwards that advance a stream store their final state: training
forwards that update the general weights and evaluation forwards; the response sub-step (general
weights frozen) re-reads the state its general sub-step started from.

Activation regularization (AWD-LSTM's AR and TAR, docs/METHOD.md §6): L_T gains, per example (column) i,
ar_i·mean(m_i²) + tar_i·mean((o_{t,i} − o_{t−1,i})²), with o the last LSTM layer's output, m the same after
output dropout and the means over time steps and units. Like weight decay the coefficients are per-example
hyperparameters of L_T only: the forward of a training sub-step computes the term from the values its
feed carries (in Δ-STN's linearized pass, of the linearized activations y + ẏ) and `activation_penalty()`
hands it to the loss; forwards without values (hyper step, evaluation) add nothing.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, Optional, Tuple

import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

from ..hyper import Hyper, current_feed
from ..nn import StnEmbedding, StnLinear, StnLockedDropout, StnLSTM
from ..nn.base import split_dual
from .base import BuiltModel, dropout

State = Tuple[torch.Tensor, torch.Tensor]


def _primal(t: torch.Tensor) -> torch.Tensor:
    return fwAD.unpack_dual(t).primal.detach()


def _linearized(t: torch.Tensor) -> torch.Tensor:
    primal, tangent = split_dual(t)
    return primal if tangent is None else primal + tangent


class LSTMLanguageModel(nn.Module):
    """Time-major (T, B) tokens → (T, B, vocab) logits. activation_regularization: compute the AR/TAR term
    (the feed must then carry the hyperparameters "ar" and "tar"; `lstm_lm` adds them)."""

    def __init__(self, vocab: int, size: int, layers: int, num_hypers: int, activation_regularization: bool = False
                 ) -> None:
        super().__init__()
        self.activation_regularization = activation_regularization
        self._penalty: Optional[torch.Tensor] = None
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
        dropped = self.drop_out(out)
        self._penalty = self._activation_terms(out, dropped)
        return self.decoder(dropped)

    def _activation_terms(self, out: torch.Tensor, dropped: torch.Tensor) -> Optional[torch.Tensor]:
        """Mean over the batch of ar_i·AR_i + tar_i·TAR_i (see the module docstring), or None."""
        feed = current_feed()
        if not (self.activation_regularization and self.training and feed is not None and feed.values):
            return None
        batch = out.shape[1]
        ar = feed.value("ar", batch, "LSTMLanguageModel")
        tar = feed.value("tar", batch, "LSTMLanguageModel")
        out, dropped = _linearized(out), _linearized(dropped)
        activation = dropped.pow(2).mean(dim=(0, 2))
        temporal = (out[1:] - out[:-1]).pow(2).mean(dim=(0, 2)) if out.shape[0] > 1 else torch.zeros_like(ar)
        return (ar.to(out.dtype) * activation + tar.to(out.dtype) * temporal).mean()

    def activation_penalty(self) -> Optional[torch.Tensor]:
        """The AR/TAR term of the last training forward (None when it had none); read once per forward."""
        penalty, self._penalty = self._penalty, None
        return penalty

    # The carried states travel with the state_dict, so that a mid-epoch checkpoint resumes exactly.
    def get_extra_state(self):
        return {name: (h.cpu(), c.cpu()) for name, (h, c) in self._states.items()}

    def set_extra_state(self, state) -> None:
        device = self.encoder.weight.device
        self._states = {name: (h.to(device), c.to(device)) for name, (h, c) in (state or {}).items()}


def lstm_lm(vocab: int = 10000, size: int = 650, layers: int = 2, activation_regularization: bool = True
            ) -> BuiltModel:
    """activation_regularization: tune AWD-LSTM's AR and TAR coefficients too (their usual values 2 and 1 as
    the initial ones, ranges (0, 10) and (0, 5))."""
    hypers = [dropout("dropout_in", 0.1), dropout("dropout_h", 0.1), dropout("dropout_out", 0.1),
              Hyper("dropconnect", 0.1, 0.0, 0.95, per_example=False)]
    if activation_regularization:
        hypers += [Hyper("ar", 2.0, 0.0, 10.0), Hyper("tar", 1.0, 0.0, 5.0)]
    model = LSTMLanguageModel(vocab, size, layers, len(hypers), activation_regularization)
    return BuiltModel(model, hypers, task="language", batch_dim=1, penalty=model.activation_penalty)
