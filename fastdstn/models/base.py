"""What a model builder hands the trainer: the network, its tuned hyperparameters and how they are used."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from ..hyper import Hyper
from ..nn import StnDropout, StnLinear

TASKS = ("classification", "regression", "language")


@dataclass
class BuiltModel:
    """model: built from fastdstn.nn layers; hypers: its default tuned hyperparameters (a config may
    change their init/range/scale); weight_decay: the hyper used as L2 coefficient (or None);
    augment: augmentation parameter → hyper name or fixed number (fastdstn.data.Augmenter spec); task: decides the
    loss and the reported metric (accuracy, or perplexity for language); penalty: extra L_T terms the model
    computed in its last forward (see SelfTuning)."""

    model: nn.Module
    hypers: List[Hyper]
    task: str = "classification"
    weight_decay: Optional[str] = None
    augment: Dict[str, Union[str, float]] = field(default_factory=dict)
    batch_dim: int = 0
    penalty: Optional[Callable[[], Optional[torch.Tensor]]] = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task: expected one of {TASKS}, received {self.task!r}")


def dropout(name: str, init: float = 0.05, high: float = 0.95) -> Hyper:
    """A dropout rate in (0, high): per example, σ0 = 1 on the logit scale (docs/METHOD.md §2 default)."""
    return Hyper(name, init, 0.0, high)


def cutout(length: float = 4.0, holes: float = 1.0, max_length: float = 24.0, max_holes: float = 5.0) -> List[Hyper]:
    """Cutout square side in [2, max_length] and number of holes in [0, max_holes] (both floored)."""
    return [Hyper("cutout_length", length, 2.0, max_length, discrete=True),
            Hyper("cutout_holes", holes, 0.0, max_holes, discrete=True)]


def dense_stack(width: int, hidden: Sequence[int], classes: int, num_hypers: int, dropout_name: str) -> List[nn.Module]:
    """StnLinear → ReLU → dropout per hidden width, then the output StnLinear; dropout i (from 1) is named
    dropout_name.format(i). The classifier of the MLP and of the CIFAR conv nets."""
    layers: List[nn.Module] = []
    for i, out in enumerate(hidden, start=1):
        layers += [StnLinear(width, out, num_hypers), nn.ReLU(), StnDropout(dropout_name.format(i))]
        width = out
    layers.append(StnLinear(width, classes, num_hypers))
    return layers
