"""The networks of docs/METHOD.md §8, built from fastdstn.nn layers with their tuned hyperparameters.

    built = fastdstn.models.build("simple-cnn")   # BuiltModel(model, hypers, task, weight_decay, augment)
"""
from __future__ import annotations

from typing import Callable, Dict

from .base import BuiltModel
from .conv import SimpleCNN, alexnet, simple_cnn, vgg16
from .dense import MLP, LinearRegression, linear_regression, mlp
from .language import LSTMLanguageModel, lstm_lm
from .resnet import resnet18
from .transformer import GPT, gpt_lm

BUILDERS: Dict[str, Callable[..., BuiltModel]] = {
    "linear": linear_regression, "mlp": mlp, "simple-cnn": simple_cnn, "alexnet": alexnet, "vgg16": vgg16,
    "resnet18": resnet18, "lstm": lstm_lm, "gpt": gpt_lm,
}


def build(name: str, **options) -> BuiltModel:
    """The model `name` (a key of BUILDERS) with builder keyword options (e.g. hidden=(64,) for "mlp")."""
    if name not in BUILDERS:
        raise KeyError(f"model: unknown name {name!r}; expected one of {', '.join(BUILDERS)}")
    return BUILDERS[name](**options)


__all__ = ["BuiltModel", "BUILDERS", "build", "SimpleCNN", "MLP", "LinearRegression", "LSTMLanguageModel", "GPT",
           "simple_cnn", "mlp", "linear_regression", "alexnet", "vgg16", "resnet18", "lstm_lm", "gpt_lm"]
