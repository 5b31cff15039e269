"""The hyperparameter space (docs/METHOD.md §2): transforms, the parameters λ and ρ, perturbations, entropy."""
from __future__ import annotations

import math
from collections import abc
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .. import arguments

Tensor = torch.Tensor

# σ stays in [SIGMA_MIN, SIGMA_MAX]: below, float32 λ + ε no longer moves λ (its spacing is ~1e-7·|λ|) and
# log σ in the entropy heads for -inf; above, ε = σ·n stops being a local perturbation. A hyper step projects
# ρ back into [RHO_MIN, RHO_MAX] and `sigma()` clamps ρ into it, so σ is finite and positive by construction.
SIGMA_MIN, SIGMA_MAX = 1e-6, 1e6


def _inverse_softplus(y: float) -> float:
    """softplus⁻¹(y) = log(eᵞ − 1), written as y + log(1 − e⁻ʸ) so it stays finite for large y."""
    return y + math.log(-math.expm1(-y))


RHO_MIN, RHO_MAX = _inverse_softplus(SIGMA_MIN), _inverse_softplus(SIGMA_MAX)


@dataclass(frozen=True)
class Hyper:
    """One tuned hyperparameter: its name, initial value, range [low, high] (None = unbounded),
    whether its consumer takes floor() of it, whether it is perturbed per example or per batch, and
    the initial perturbation scale σ0."""

    name: str
    init: float
    low: Optional[float] = None
    high: Optional[float] = None
    discrete: bool = False
    per_example: bool = True
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"Hyper name: expected an identifier, received {self.name!r}")
        where = f"Hyper {self.name!r}"
        arguments.number(f"{where}: init", self.init)
        for field in ("low", "high"):
            if getattr(self, field) is not None:
                arguments.number(f"{where}: {field}", getattr(self, field))
        arguments.boolean(f"{where}: discrete", self.discrete)
        arguments.boolean(f"{where}: per_example", self.per_example)
        if self.low is not None and self.high is not None and not self.low < self.high:
            raise ValueError(f"{where}: expected low < high, received low={self.low}, high={self.high}")
        # The transform maps onto the open interval, so the initial value must lie strictly inside.
        if (self.low is not None and self.init <= self.low) or (self.high is not None and self.init >= self.high):
            raise ValueError(f"{where}: init must lie strictly inside ({self.low}, {self.high}), received {self.init}")
        arguments.number(f"{where}: scale (the initial σ)", self.scale, SIGMA_MIN, SIGMA_MAX)

    def constrain(self, u: Tensor) -> Tensor:
        """c = T(u): lo + (hi − lo)·sigmoid(u), lo + softplus(u), hi − softplus(u) or u."""
        if self.low is not None and self.high is not None:
            return self.low + (self.high - self.low) * torch.sigmoid(u)
        if self.low is not None:
            return self.low + F.softplus(u)
        if self.high is not None:
            return self.high - F.softplus(u)
        return u

    def unconstrain(self, c: float) -> float:
        """u = T⁻¹(c) for a value strictly inside the range."""
        if self.low is not None and self.high is not None:
            p = (c - self.low) / (self.high - self.low)
            return math.log(p) - math.log1p(-p)
        if self.low is not None:
            return _inverse_softplus(c - self.low)
        if self.high is not None:
            return _inverse_softplus(self.high - c)
        return float(c)

    def describe(self) -> str:
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        flags = ("discrete, " if self.discrete else "") + ("per-example" if self.per_example else "per-batch")
        return f"{self.name} ∈ [{low}, {high}] ({flags})"


@dataclass
class Perturbation:
    """One draw for a batch: noise n (B, H), ε = σ ⊙ n and the perturbed unconstrained values λ + ε.

    `eps` carries the graph to ρ and `perturbed` to λ and ρ: the hyper step differentiates them;
    training steps use their detached values."""

    noise: Tensor
    eps: Tensor
    perturbed: Tensor


class HyperSpace(nn.Module):
    """The H tuned hyperparameters: unconstrained λ (`lam`) and ρ (σ = softplus(ρ)) as parameters."""

    def __init__(self, hypers: Iterable[Hyper]) -> None:
        super().__init__()
        if isinstance(hypers, (Hyper, str)) or not isinstance(hypers, abc.Iterable):
            raise TypeError(f"HyperSpace: expected an iterable of Hyper, received {type(hypers).__name__}")
        self.hypers: List[Hyper] = list(hypers)
        if not self.hypers:
            raise ValueError("HyperSpace: expected at least one Hyper, received none")
        for h in self.hypers:
            if not isinstance(h, Hyper):
                raise TypeError(f"HyperSpace: expected Hyper entries, received {type(h).__name__}")
        names = [h.name for h in self.hypers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"HyperSpace: hyperparameter names must be unique, repeated: {', '.join(duplicates)}")
        self.index: Dict[str, int] = {n: i for i, n in enumerate(names)}
        self.lam = nn.Parameter(torch.tensor([h.unconstrain(h.init) for h in self.hypers], dtype=torch.float32))
        for h, u in zip(self.hypers, self.lam.tolist()):
            if not math.isfinite(u):
                raise ValueError(f"Hyper {h.name!r}: init {h.init} has no finite float32 unconstrained value")
        self.rho = nn.Parameter(torch.tensor([_inverse_softplus(h.scale) for h in self.hypers], dtype=torch.float32))
        self.register_buffer("per_batch", torch.tensor([not h.per_example for h in self.hypers]), persistent=False)

    def __len__(self) -> int:
        return len(self.hypers)

    @property
    def names(self) -> List[str]:
        return [h.name for h in self.hypers]

    def __getitem__(self, name: str) -> Hyper:
        return self.hypers[self._column(name)]

    def _column(self, name: str) -> int:
        if name not in self.index:
            raise KeyError(f"no hyperparameter named {name!r}; the space has {', '.join(self.names)}")
        return self.index[name]

    def sigma(self) -> Tensor:
        """σ = softplus(ρ), with ρ's value clamped into [RHO_MIN, RHO_MAX] and its gradient passed straight
        through (torch.clamp's gradient is 0 at the bounds, where a projected ρ sits: it would stay there). For ρ
        inside the bounds this is softplus(ρ) to the bit."""
        rho = self.rho.detach().clamp(RHO_MIN, RHO_MAX) + (self.rho - self.rho.detach())    # value + 0, exactly
        return F.softplus(rho)

    @torch.no_grad()
    def project_(self) -> None:
        """Put ρ back into [RHO_MIN, RHO_MAX] after an optimizer step (projected gradient descent)."""
        self.rho.clamp_(RHO_MIN, RHO_MAX)

    def constrain(self, u: Tensor) -> Tensor:
        """Constrained values of unconstrained u (..., H), column by column."""
        return torch.stack([h.constrain(u[..., j]) for j, h in enumerate(self.hypers)], dim=-1)

    def sample(self, batch: int, generator: Optional[torch.Generator] = None) -> Perturbation:
        """n ~ N(0, I) of shape (batch, H); per-batch columns repeat row 0's draw."""
        arguments.integer("batch", batch, low=1)
        noise = torch.randn(batch, len(self), generator=generator, device=self.lam.device, dtype=self.lam.dtype)
        noise = torch.where(self.per_batch, noise[:1].expand_as(noise), noise)
        eps = self.sigma() * noise
        return Perturbation(noise=noise, eps=eps, perturbed=self.lam + eps)

    def example_values(self, u: Tensor) -> Dict[str, Tensor]:
        """name → detached constrained values (B,) of per-example unconstrained rows u (B, H): what
        regularizers and augmentation consume (continuous; a discrete consumer takes floor)."""
        if u.dim() != 2 or u.shape[1] != len(self):
            raise ValueError(f"u: expected per-example unconstrained values of shape (batch, {len(self)}), "
                             f"received {tuple(u.shape)}")
        c = self.constrain(u.detach())
        return {h.name: c[:, j] for j, h in enumerate(self.hypers)}

    def current_values(self, batch: int) -> Dict[str, Tensor]:
        """`example_values` with every example at the current λ (no perturbation)."""
        return self.example_values(self.lam.detach().expand(batch, len(self)))

    def value(self, name: str) -> float:
        """The current constrained value of one hyperparameter."""
        j = self._column(name)
        return float(self.hypers[j].constrain(self.lam.detach()[j]))

    def values(self) -> Dict[str, float]:
        c = self.constrain(self.lam.detach())
        return {h.name: float(c[j]) for j, h in enumerate(self.hypers)}

    def scales(self) -> Dict[str, float]:
        s = self.sigma().detach()
        return {h.name: float(s[j]) for j, h in enumerate(self.hypers)}

    def entropy(self) -> Tensor:
        """ℍ = Σ_j log(σ_j·√(2πe)), the entropy of the perturbation distribution."""
        return (torch.log(self.sigma()) + 0.5 * math.log(2 * math.pi * math.e)).sum()

    def extra_repr(self) -> str:
        values, scales = self.values(), self.scales()
        rows = [f"{h.describe()}: value {values[h.name]:.4g}, σ {scales[h.name]:.3g}" for h in self.hypers]
        return "\n".join(rows)

