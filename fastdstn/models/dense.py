"""Dense models of docs/METHOD.md §8: linear regression (UCI) and the MNIST MLP 784-1200-1200-10."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..hyper import Hyper
from ..nn import StnDropout, StnLinear
from .base import BuiltModel, dense_stack, dropout


class LinearRegression(nn.Module):
    """y = w·dropout(x) + b; the L2 coefficient is tuned through the trainer's weight decay."""

    def __init__(self, in_features: int, num_hypers: int) -> None:
        super().__init__()
        self.drop_in = StnDropout("dropout_in")
        self.linear = StnLinear(in_features, 1, num_hypers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.drop_in(x)).squeeze(-1)


def linear_regression(in_features: int = 8) -> BuiltModel:
    hypers = [dropout("dropout_in", 0.05),
              # per batch: L2 is one coefficient of the batch's training loss (docs/METHOD.md §6)
              Hyper("weight_decay", 1e-3, 0.0, 1.0, per_example=False)]
    return BuiltModel(LinearRegression(in_features, len(hypers)), hypers, task="regression",
                      weight_decay="weight_decay")


class MLP(nn.Module):
    """Dropout on the input and after every hidden layer (H = 3 for two hidden layers)."""

    def __init__(self, in_features: int, hidden: Sequence[int], classes: int, num_hypers: int) -> None:
        super().__init__()
        self.net = nn.Sequential(StnDropout("dropout_in"),
                                 *dense_stack(in_features, hidden, classes, num_hypers, "dropout_h{}"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


def mlp(in_features: int = 784, hidden: Sequence[int] = (1200, 1200), classes: int = 10) -> BuiltModel:
    hypers = [dropout("dropout_in")] + [dropout(f"dropout_h{i}") for i in range(1, len(hidden) + 1)]
    return BuiltModel(MLP(in_features, hidden, classes, len(hypers)), hypers)
