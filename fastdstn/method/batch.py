"""The inputs of a batch as a model takes them: one tensor, a tuple of positional arguments or a dict of keyword
arguments (a Hugging Face batch: input_ids, attention_mask, ...), and how many examples they hold."""
from __future__ import annotations

from collections import abc
from typing import Optional, Union

import torch
from torch import nn

Inputs = Union[torch.Tensor, tuple, list, abc.Mapping]
Key = Union[str, int, None]


def _unknown(inputs) -> TypeError:
    return TypeError(f"inputs: expected a tensor, a tuple of positional arguments or a dict of keyword arguments, "
                     f"received {type(inputs).__name__}")


def call(model: nn.Module, inputs: Inputs):
    """model(x), model(*inputs) or model(**inputs)."""
    if isinstance(inputs, torch.Tensor):
        return model(inputs)
    if isinstance(inputs, abc.Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    raise _unknown(inputs)


def _first_tensor(inputs: Inputs) -> Optional[torch.Tensor]:
    values = inputs.values() if isinstance(inputs, abc.Mapping) else inputs
    return next((v for v in values if isinstance(v, torch.Tensor)), None)


def example_tensor(inputs: Inputs, key: Key = None) -> torch.Tensor:
    """The tensor whose size along the batch dimension is the number of examples: `inputs` itself, the one that
    `key` names (a dict key or a tuple index), or the first tensor of a tuple or dict."""
    if isinstance(inputs, torch.Tensor):
        return inputs
    if not isinstance(inputs, (tuple, list, abc.Mapping)):
        raise _unknown(inputs)
    if key is not None:
        try:
            tensor = inputs[key]
        except (KeyError, IndexError, TypeError):
            keys = list(inputs) if isinstance(inputs, abc.Mapping) else list(range(len(inputs)))
            raise KeyError(f"batch_key: {key!r} is not among the inputs' keys {keys}") from None
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"batch_key: inputs[{key!r}] is a {type(tensor).__name__}, expected a tensor")
        return tensor
    tensor = _first_tensor(inputs)
    if tensor is None:
        raise ValueError(f"inputs: a {type(inputs).__name__} with no tensor in it; the number of examples is read "
                         f"from its first tensor")
    return tensor


def example_count(inputs: Inputs, batch_dim: int, key: Key = None) -> int:
    tensor = example_tensor(inputs, key)
    if tensor.dim() <= batch_dim:
        raise ValueError(f"inputs: the examples lie along dim {batch_dim} (batch_dim), but the tensor they are "
                         f"counted in has shape {tuple(tensor.shape)}")
    return tensor.shape[batch_dim]
