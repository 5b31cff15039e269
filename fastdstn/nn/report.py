"""What `convert` did to a model, and the check after the first training step that every tuned hyperparameter
and every mapped site is in use."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Tuple

from torch import nn

from . import huggingface
from .base import StnLayer
from .lstm import StnLSTM

# The attributes by which a module names the hyperparameter it reads: StnDropout's rate, an attention module's
# attention-weight dropout (fastdstn's own, or a Hugging Face module's), StnLSTM's DropConnect.
SITE_ATTRIBUTES = ("hyper", "dropout_hyper", huggingface.DROPOUT_ATTRIBUTE, "dropconnect")


def read_hypers(m: nn.Module) -> set:
    """The hyperparameters module m itself reads."""
    return {value for a in SITE_ATTRIBUTES if isinstance(value := getattr(m, a, None), str)}


@dataclass
class ConversionReport:
    """converted: (module name, original type, new type); kept: (name, type, why it stays a plain layer:
    normalisation, parameters used by the module itself, a fixed-rate dropout, skip()); unsupported: (name, type,
    why) for maps that have no STN layer here (the model is then only partly tuned); dropout: site → (hyperparameter,
    what it drops); tied: groups of STN layers that share one general weight; unread: hyperparameters of the space
    that no mapped site reads (weight decay, augmentation or a model's own penalty may still read them; SelfTuning
    checks after its first training step)."""

    converted: List[Tuple[str, str, str]] = field(default_factory=list)
    kept: List[Tuple[str, str, str]] = field(default_factory=list)
    unsupported: List[Tuple[str, str, str]] = field(default_factory=list)
    dropout: Dict[str, Tuple[str, str]] = field(default_factory=dict)
    tied: List[Tuple[str, ...]] = field(default_factory=list)
    unread: List[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every linear map of the model (linear, convolution, embedding, attention projection, LSTM) is an STN
        layer."""
        return not self.unsupported

    def __str__(self) -> str:
        lines = [f"convert: {len(self.converted)} modules converted, {len(self.kept)} kept as they are, "
                 f"{len(self.unsupported)} unsupported ({'complete' if self.complete else 'INCOMPLETE'})"]
        sections = [("converted", [f"{n}: {a} -> {b}" for n, a, b in self.converted]),
                    ("unsupported", [f"{n}: {t} ({why})" for n, t, why in self.unsupported]),
                    ("kept", [f"{n}: {t} ({why})" for n, t, why in self.kept]),
                    ("tuned dropout", [f"{n}: {what} <- {hyper}" for n, (hyper, what) in self.dropout.items()]),
                    ("tied general weights", [" = ".join(group) for group in self.tied]),
                    ("hyperparameters no mapped site reads", self.unread)]
        for title, rows in sections:
            if rows:
                lines.append(f"  {title}:")
                lines.extend(f"    {row}" for row in rows)
        return "\n".join(lines)


def check_first_step(model: nn.Module, names: Iterable[str], read: Iterable[str]) -> None:
    """After the first training step: every hyperparameter in `names` was read (by a layer, a regularizer, the
    augmentation or the weight decay) and every tuned dropout site ran; else a ValueError that names them. STN
    layers that never computed their best-response (never called, or their weights read directly by a parent that
    bypasses their forward) get a warning."""
    # (StnLSTM's DropConnect is checked by the read of its hyperparameter below.)
    idle = [name for name, m in model.named_modules()
            if read_hypers(m) and not isinstance(m, StnLSTM) and not getattr(m, "applied", False)]
    if idle:
        raise ValueError(f"tuned dropout sites {idle} were not applied in the first training step: the model never "
                         f"called them (code that reads a dropout module's .p to apply dropout itself, as Hugging "
                         f"Face attention does, never calls it: map the attention module instead), or remove them")
    unread = [n for n in names if n not in set(read)]
    if unread:
        raise ValueError(f"hyperparameters {unread} were read by no layer, regularizer, augmentation or weight decay "
                         f"in the first training step, so tuning them would move them at random: map them to sites "
                         f"(convert(dropout=...)), pass weight_decay=, or remove them from the HyperSpace")
    bypassed = [name for name, m in model.named_modules() if isinstance(m, StnLayer) and not m.fed]
    if bypassed:
        warnings.warn(f"fastdstn: STN layers {bypassed} never computed their best-response in the first training "
                      f"step: the model did not call them, or read their weights directly (bypassing them); skip "
                      f"them in convert if that is intended", RuntimeWarning, stacklevel=3)
