"""From a checked RunConfig to live objects: device, model, hyperparameter space, loss."""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
from typing import Callable, Dict, List, Mapping

import torch
import torch.nn.functional as F

from .. import models
from ..config import ConfigError, ModelConfig
from ..hyper import Hyper


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: 'cuda' was asked for, but torch sees no CUDA device; use 'cpu' or 'auto'")
    return torch.device(name)


def _suggest(name: str, known) -> str:
    near = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return f"; did you mean {near[0]!r}?" if near else f"; known: {', '.join(known)}"


def build_model(cfg: ModelConfig, bundle) -> models.BuiltModel:
    """The model named by the config, with the sizes the data implies (input features, classes,
    vocabulary) filled in unless the config sets them."""
    if cfg.name not in models.BUILDERS:
        raise ConfigError(f"model.name: unknown model {cfg.name!r}{_suggest(cfg.name, models.BUILDERS)}")
    builder = models.BUILDERS[cfg.name]
    params = inspect.signature(builder).parameters
    for key in cfg.options:
        if key not in params:
            raise ConfigError(f"model.options.{key}: not an option of model {cfg.name!r}{_suggest(key, params)}")
    implied = {"in_features": math.prod(bundle.input_shape) if bundle.task != "language" else None,
               "classes": bundle.num_classes, "vocab": bundle.vocab_size}
    options = {k: v for k, v in implied.items() if k in params and v is not None}
    options.update(cfg.options)
    try:
        built = builder(**options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model.options: {cfg.name!r} cannot be built with {options}: {err}") from err
    if built.task != bundle.task:
        raise ConfigError(f"model.name: {cfg.name!r} is a {built.task} model, but data {bundle.name!r} "
                          f"is a {bundle.task} data set")
    return built


def apply_hyper_overrides(hypers: List[Hyper], overrides: Mapping[str, Mapping]) -> List[Hyper]:
    """The model's hyperparameters with the config's [hypers.NAME] fields replaced (checked by Hyper)."""
    by_name: Dict[str, Hyper] = {h.name: h for h in hypers}
    for name in overrides:
        if name not in by_name:
            raise ConfigError(f"hypers.{name}: the model has no such hyperparameter{_suggest(name, by_name)}")
    out = []
    for h in hypers:
        try:
            out.append(dataclasses.replace(h, **overrides.get(h.name, {})))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"hypers.{h.name}: {err}") from err
    return out


def make_augment(bundle, mapping: Mapping[str, object]):
    """fastdstn.data's batched Augmenter for a model's mapping (augmentation parameter → hyper name,
    or a fixed number), in the data's normalization; None when the model tunes no augmentation."""
    if not mapping:
        return None
    from ..data import Augmenter

    if bundle.task != "classification" or len(bundle.input_shape) != 3:
        raise ConfigError(f"model: tunes image augmentation ({', '.join(mapping)}), but data {bundle.name!r} "
                          f"holds no images")
    return Augmenter(dict(mapping), mean=bundle.mean, std=bundle.std)


def loss_function(task: str) -> Callable:
    if task == "classification":
        return F.cross_entropy
    if task == "regression":
        return lambda out, y: F.mse_loss(out.reshape(y.shape), y)

    def language(out, y):
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
    return language
