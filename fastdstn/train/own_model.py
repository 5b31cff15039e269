"""The run tooling for a model and data of one's own (`Trainer.for_model`): the user's DataLoaders as the trainer's
loaders, and the run configuration that stands for what the built-in presets would name.

The trainer resumes exactly because a batch order is a function of (seed, epoch) and a position is (epoch, batch
index). A torch DataLoader gets there by reseeding its sampler's generator at the start of each epoch; a shuffling
DataLoader without a generator draws its order from the global generator instead, which a checkpoint taken in the
middle of an epoch cannot give back, so it is refused.
"""
from __future__ import annotations

import itertools
from typing import Any, Dict, Iterator, Mapping, Optional

import torch
from torch.utils._pytree import tree_map
from torch.utils.data import DataLoader, RandomSampler

from ..config import RunConfig, from_dict
from ..data import DataBundle
from ..data.loader import BatchStream

# The config's data and model sections name no built-in data set or model: the run's own stand in for them.
OWN = "own"


def _generator(loader) -> Optional[torch.Generator]:
    return getattr(getattr(loader, "sampler", None), "generator", None)


class LoaderBatches:
    """A DataLoader (or any re-iterable of (inputs, targets) batches with a length) seen as the trainer's loaders
    see theirs: `batches(epoch, start)`, `len()` and `stream(epoch, index)`; batches moved to `device` (inputs may
    be tensors, tuples or dicts of tensors)."""

    def __init__(self, name: str, loader, seed: int, device: torch.device) -> None:
        if isinstance(loader, DataLoader) and isinstance(loader.sampler, RandomSampler) and _generator(loader) is None:
            raise ValueError(f"{name}: a shuffling DataLoader needs generator=torch.Generator(), so that each "
                             f"epoch's order can be seeded and a run resumed exactly")
        try:
            len(loader)
        except TypeError:
            raise TypeError(f"{name}: expected a DataLoader or another re-iterable of (inputs, targets) batches with "
                            f"a length, received {type(loader).__name__}") from None
        self.name, self.loader, self.seed, self.device = name, loader, seed, device

    def __len__(self) -> int:
        return len(self.loader)

    def _move(self, batch):
        return tree_map(lambda t: t.to(self.device) if isinstance(t, torch.Tensor) else t, batch)

    def batches(self, epoch: int, start: int = 0) -> Iterator[Any]:
        generator = _generator(self.loader)
        if generator is not None:
            generator.manual_seed(self.seed * 1_000_003 + epoch)
        for batch in itertools.islice(iter(self.loader), start, None):
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
                raise ValueError(f"{self.name}: expected (inputs, targets) batches, received a "
                                 f"{type(batch).__name__}" + (f" of {len(batch)}" if isinstance(batch, (tuple, list))
                                                                else ""))
            yield self._move(tuple(batch))

    def stream(self, epoch: int = 0, index: int = 0) -> BatchStream:
        return BatchStream(self, epoch, index)


def bundle(train, valid, test, task: str, seed: int, device: torch.device) -> DataBundle:
    loaders = [LoaderBatches(name, loader, seed, device) for name, loader in
               (("train", train), ("valid", valid), ("test", test))]
    sizes = " / ".join(f"{len(loader)} {name}" for name, loader in zip(("train", "valid", "test"), loaders))
    return DataBundle(OWN, *loaders, (), None, task, False, f"own data: {sizes} batches")


def run_config(name: str, train: Mapping[str, Any]) -> RunConfig:
    """The run's configuration: its name and [train] section (TrainConfig's keys, checked as in a config file)."""
    values: Dict[str, Any] = {"name": name, "data": {"name": OWN}, "model": {"name": OWN}, "train": dict(train)}
    return from_dict(values)
