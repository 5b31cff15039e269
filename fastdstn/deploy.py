"""Using a tuned network outside fastdstn: `export` it as plain torch modules, `load_checkpoint` a run's files.

    plain = fastdstn.export(method)                  # a SelfTuning: its model, space and mode
    torchvision.models.resnet18().load_state_dict(plain.state_dict())     # strict: the original architecture

    state = fastdstn.load_checkpoint("runs/x/checkpoints/best.ckpt")      # {"model", "space", "epoch", ...}

A checkpoint file is a `torch.save` file with a checksum in its zip comment (fastdstn.train.checkpoint):
`torch.load` reads it as it is; `load_checkpoint` checks the checksum first and returns what `torch.save` wrote.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from .hyper import HyperSpace
from .method import Mode, SelfTuning
from .nn.export import plain_model
from .train import checkpoint


def export(tuned, space: Optional[HyperSpace] = None, *, h: Optional[torch.Tensor] = None) -> nn.Module:
    """The network a tuned model deploys, as plain torch modules (fastdstn.nn.export lists them), in eval mode:
    its `state_dict` loads strictly into the architecture that `convert` was given, and it predicts what
    `SelfTuning.predict` does. Dropout sites become torch dropout modules at their tuned rates (the constrained
    value of the current λ); tied weights stay tied (except in STN mode, where each layer folds its own
    best-response into its weight).

    tuned: a SelfTuning (its model, space and mode), or a model holding STN layers with the HyperSpace its
        dropout sites read (`space`, needed when it has any).
    h: the unconstrained hyperparameters (H,) to evaluate the best-response at. Default: λ in STN mode, else
        none (centered STN and Δ-STN deploy their general weights)."""
    if isinstance(tuned, SelfTuning):
        if space is not None and space is not tuned.space:
            raise ValueError("space: a SelfTuning brings its own space; pass space only with a bare model")
        model, space = tuned.model, tuned.space
        if h is None and tuned.mode is Mode.STN:
            h = space.lam.detach()
    elif isinstance(tuned, nn.Module):
        model = tuned
        if space is not None and not isinstance(space, HyperSpace):
            raise TypeError(f"space: expected a fastdstn.HyperSpace or None, received {type(space).__name__}")
    else:
        raise TypeError(f"tuned: expected a fastdstn.SelfTuning or an nn.Module, received {type(tuned).__name__}")
    if h is not None:
        h = torch.as_tensor(h).detach()
        expected = len(space) if space is not None else h.numel()
        if h.dim() != 1 or h.numel() != expected:
            raise ValueError(f"h: expected unconstrained values of shape ({expected},), received {tuple(h.shape)}")

    def rate(name: str) -> float:
        if space is None:
            raise ValueError(f"space: the model has dropout tuned by {name!r}; pass its HyperSpace "
                             f"(export(model, space)) or the SelfTuning")
        return space.value(name)
    return plain_model(model, rate, h)


def load_checkpoint(path: str, map_location: Any = "cpu") -> Any:
    """What a fastdstn checkpoint file (checkpoints/best.ckpt, last.ckpt, previous.ckpt) holds, after checking
    that it is whole (a CheckpointError says what is wrong otherwise). best.ckpt: {"model": state_dict of the
    converted model, "space": state_dict of the HyperSpace, "epoch", "val_loss", "test_loss"}; last.ckpt and
    previous.ckpt hold a whole run's state (docs/RUNS.md)."""
    return checkpoint.load(path, map_location=map_location)
