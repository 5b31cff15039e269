"""Plain training at fixed hyperparameter values (mode "fixed"): the baseline of random search, Bayesian
optimization and schedule replay.

The same network as the tuned modes, evaluated at h = 0 (the general weights alone), with dropout and
augmentation at the space's current values and only the general optimizer stepping. Replay changes the
values between steps by writing λ; nothing here ever differentiates through λ.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn

from ..hyper import HyperSpace, feeding
from ..method import Optimizers
from ..nn import weight_penalty


class FixedTraining:
    """The `SelfTuning` interface for fixed hyperparameters: train_step and predict."""

    def __init__(self, model: nn.Module, space: HyperSpace, *, loss_fn, augment=None,
                 weight_decay: Optional[str] = None, batch_dim: int = 0) -> None:
        self.model, self.space, self.loss_fn, self.augment = model, space, loss_fn, augment
        self.weight_decay, self.batch_dim = weight_decay, batch_dim

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor, optimizers: Optimizers) -> Dict[str, torch.Tensor]:
        self.model.train()
        values = self.space.current_values(inputs.shape[self.batch_dim])
        if self.augment is not None:
            inputs = self.augment(inputs, values)
        with feeding(None, values=values):
            loss = self.loss_fn(self.model(inputs), targets)
            if self.weight_decay is not None:
                loss = loss + values[self.weight_decay][0] * weight_penalty(self.model)
        optimizers.general.zero_grad(set_to_none=True)
        loss.backward()
        optimizers.general.step()
        return {"train_loss": loss.detach()}

    @torch.no_grad()
    def predict(self, inputs: torch.Tensor):
        was_training = self.model.training
        self.model.eval()
        try:
            return self.model(inputs)
        finally:
            self.model.train(was_training)
