"""Checkpoint state of a model sharded by FSDP2 (`train.strategy = "fsdp"`): full tensors, the same on every rank
(the model's keyed as in its state_dict, the model optimizers' by parameter name), so rank 0 writes the whole
state and a resumed run puts each rank's shards back.

Each function is a collective when `sharded` (every rank calls it at the same point) and the plain
state_dict / load_state_dict otherwise."""
from __future__ import annotations

from typing import Any, Dict, Mapping

from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)

from ..method import Optimizers

FULL = StateDictOptions(full_state_dict=True)
MODEL_OPTIMIZERS = ("general", "response")    # the optimizers over the model's (sharded) parameters


def model_state(model: nn.Module, sharded: bool) -> Dict[str, Any]:
    return get_model_state_dict(model, options=FULL) if sharded else model.state_dict()


def load_model_state(model: nn.Module, state: Mapping[str, Any], sharded: bool) -> None:
    if sharded:
        set_model_state_dict(model, dict(state), options=FULL)
    else:
        model.load_state_dict(state)


def optimizers_state(model: nn.Module, optimizers: Optimizers, sharded: bool) -> Dict[str, Any]:
    state = optimizers.state_dict()
    if sharded:
        for name in MODEL_OPTIMIZERS:
            optimizer = getattr(optimizers, name)
            if optimizer is not None:
                state[name] = get_optimizer_state_dict(model, optimizer, options=FULL)
    return state


def load_optimizers_state(model: nn.Module, optimizers: Optimizers, state: Mapping[str, Any],
                          sharded: bool) -> None:
    if not sharded:
        optimizers.load_state_dict(state)
        return
    for name in ("general", "response", "hyper"):
        optimizer = getattr(optimizers, name)
        if optimizer is None:
            continue
        if name in MODEL_OPTIMIZERS:
            set_optimizer_state_dict(model, optimizer, state[name], options=FULL)
        else:
            optimizer.load_state_dict(state[name])
