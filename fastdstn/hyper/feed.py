"""What the STN layers and regularizers of a model read during one forward pass.

A step function opens `feeding(...)` around the forward; layers call `current_feed()`. Outside any
feed a model is a plain network at its general weights (h = 0): that is how centered and Δ-STN
models evaluate and deploy, and how a converted model reproduces the original exactly.
"""
from __future__ import annotations

import contextlib
import contextvars
import warnings
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Optional, Set

import torch

Tensor = torch.Tensor


@dataclass(frozen=True)
class Feed:
    """h: (B, H) hypernetwork input, or None for the general weights alone (the response branch
    is then not computed). dual: Δ-STN's linearized pass — h is ε, STN layers return forward-mode
    dual tensors (primal at the general weights, tangent along Φε). values: name → per-example
    constrained hyperparameter values (B,) for regularizers (detached)."""

    h: Optional[Tensor] = None
    dual: bool = False
    values: Mapping[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dual and self.h is None:
            raise ValueError("Feed: a dual (linearized) feed needs the perturbation ε as h, received h=None")
        if self.h is not None and self.h.dim() != 2:
            raise ValueError(f"Feed: h must be (batch, H), received shape {tuple(self.h.shape)}")

    def value(self, name: str, batch: int, where: str) -> Tensor:
        """The per-example values (batch,) of hyperparameter `name`, for the module named `where`."""
        if name not in self.values:
            known = ", ".join(self.values) or "none"
            raise KeyError(f"{where}: reads hyperparameter {name!r}, but the feed carries {known}")
        value = self.values[name]
        if value.shape[0] != batch:
            raise ValueError(f"{where}: hyperparameter {name!r} has {value.shape[0]} per-example values, "
                             f"but the input batch has {batch} examples")
        return value


class ReadRecorder(Mapping[str, Tensor]):
    """Per-example values that add the name of every value read to `read` (a membership test is no read):
    SelfTuning checks with it that each hyperparameter is used by something in the training step."""

    def __init__(self, values: Mapping[str, Tensor], read: Set[str]) -> None:
        self._values, self.read = values, read

    def __getitem__(self, name: str) -> Tensor:
        value = self._values[name]
        self.read.add(name)
        return value

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


_current: contextvars.ContextVar[Optional[Feed]] = contextvars.ContextVar("fastdstn_feed", default=None)


def current_feed() -> Optional[Feed]:
    return _current.get()


def load_jvp_decompositions() -> None:
    """Import torch's forward-AD decompositions without their deprecation warning. torch loads them on the first
    fwAD.make_dual, and loading them calls torch.jit.script, which warns "`torch.jit.script` is deprecated" (torch
    2.14): a FutureWarning in every run that is torch's, not the user's to act on. Imported here first, quietly,
    they are not loaded again (0.15 s, once per process)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)
        import torch._decomp.decompositions_for_jvp  # noqa: F401


@contextlib.contextmanager
def feeding(h: Optional[Tensor] = None, *, dual: bool = False,
            values: Optional[Mapping[str, Tensor]] = None) -> Iterator[Feed]:
    """Feed the STN layers of whatever model runs inside the block."""
    feed = Feed(h=h, dual=dual, values={} if values is None else values)
    if dual:
        load_jvp_decompositions()
    token = _current.set(feed)
    try:
        yield feed
    finally:
        _current.reset(token)
