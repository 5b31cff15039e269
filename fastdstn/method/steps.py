"""The three modes of SPEC §4 as step functions: training step, hyper step, evaluation.

Each step updates exactly the parameter group SPEC §4 names, and gradients that a phase does not
need are not computed: the general sub-step never builds the response branch (h = None), the
response sub-step and the hyper step run with the parameters they do not update frozen
(requires_grad off), so autograd records no graph for them.
"""
from __future__ import annotations

import contextlib
import enum
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, Mapping, Optional

import torch
import torch.autograd.forward_ad as fwAD
from torch import nn
from torch.utils._pytree import tree_map

from ..hyper.feed import feeding
from ..hyper.space import HyperSpace
from ..nn.groups import general_parameters, response_parameters, weight_penalty

Tensor = torch.Tensor
LossFn = Callable[[object, Tensor], Tensor]
Augment = Callable[[Tensor, Mapping[str, Tensor]], Tensor]


class Mode(str, enum.Enum):
    STN = "stn"
    CENTERED = "centered"
    DELTA = "delta"
    FIXED = "fixed"     # plain training at the current λ: the baseline of random search, BO and replay

    @classmethod
    def _missing_(cls, value):
        raise ValueError(f"mode: expected one of {', '.join(repr(m.value) for m in cls)}, received {value!r}")


@dataclass
class Optimizers:
    """general: the general weights and every non-STN parameter (in STN mode: all model parameters);
    response: W_r, b_r, V (None in STN mode); hyper: λ and ρ."""

    general: torch.optim.Optimizer
    response: Optional[torch.optim.Optimizer]
    hyper: torch.optim.Optimizer

    def state_dict(self) -> Dict[str, object]:
        return {name: (None if opt is None else opt.state_dict())
                for name, opt in (("general", self.general), ("response", self.response), ("hyper", self.hyper))}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        for name in ("general", "response", "hyper"):
            opt = getattr(self, name)
            if opt is not None:
                opt.load_state_dict(state[name])


def make_optimizers(model: nn.Module, space: HyperSpace, mode: Mode | str, lr: float = 0.01,
                    response_lr: Optional[float] = None, momentum: float = 0.9, hyper_lr: float = 3e-3,
                    hyper_optimizer: str = "adam") -> Optimizers:
    """SPEC §7's defaults: SGD with momentum for the model (two optimizers in centered/Δ-STN) and
    Adam or RMSprop for λ, ρ."""
    mode = Mode(mode)
    hyper_classes = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}
    if hyper_optimizer not in hyper_classes:
        raise ValueError(f"hyper_optimizer: expected one of {sorted(hyper_classes)}, received {hyper_optimizer!r}")
    hyper = hyper_classes[hyper_optimizer](space.parameters(), lr=hyper_lr)
    if mode is Mode.STN:
        return Optimizers(torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum), None, hyper)
    if mode is Mode.FIXED:
        return Optimizers(torch.optim.SGD(general_parameters(model), lr=lr, momentum=momentum), None, hyper)
    return Optimizers(torch.optim.SGD(general_parameters(model), lr=lr, momentum=momentum),
                      torch.optim.SGD(response_parameters(model), lr=response_lr or lr, momentum=momentum), hyper)


@contextlib.contextmanager
def frozen(parameters: Iterable[nn.Parameter]) -> Iterator[None]:
    """requires_grad off inside the block, so that no graph (and no gradient) is built for them."""
    parameters = [p for p in parameters if p.requires_grad]
    for p in parameters:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in parameters:
            p.requires_grad_(True)


def linearized(outputs):
    """ŷ = y + ẏ for every dual tensor in the model's outputs (tensors without a tangent pass as y)."""
    def add_tangent(t):
        if not isinstance(t, torch.Tensor):
            return t
        primal, tangent = fwAD.unpack_dual(t)
        return primal if tangent is None else primal + tangent
    return tree_map(add_tangent, outputs)


class SelfTuning:
    """A model made of STN layers, its hyperparameter space and the method (SPEC §4–§7); mode
    "fixed" trains the general weights alone at the current λ (no perturbation, no hyper step).

    loss_fn(outputs, targets) -> scalar; augment(inputs, values) -> inputs applies data
    augmentation at per-example hyperparameter values; weight_decay names the (per-batch)
    hyperparameter used as L2 coefficient in L_T; batch_dim is where inputs hold the examples
    (1 for time-major language-model batches); tau weighs the entropy term of the hyper step;
    linearized_hyper runs Δ-STN's hyper step on the linearized network (an option, SPEC §4)."""

    def __init__(self, model: nn.Module, space: HyperSpace, mode: Mode | str = Mode.DELTA, *,
                 loss_fn: LossFn, augment: Optional[Augment] = None, weight_decay: Optional[str] = None,
                 batch_dim: int = 0, tau: float = 1e-3, linearized_hyper: bool = False) -> None:
        self.model, self.space, self.mode = model, space, Mode(mode)
        self.loss_fn, self.augment = loss_fn, augment
        if weight_decay is not None:
            space[weight_decay]    # a KeyError naming the space's hyperparameters if unknown
        self.weight_decay, self.batch_dim, self.tau = weight_decay, batch_dim, tau
        if linearized_hyper and self.mode is not Mode.DELTA:
            raise ValueError(f"linearized_hyper: only Δ-STN (mode 'delta') has a linearized hyper step, "
                             f"received mode {self.mode.value!r}")
        self.linearized_hyper = linearized_hyper
        self._response = response_parameters(model)
        self._general = general_parameters(model)
        if not self._response:
            raise ValueError("model: has no STN layer (StnLinear, StnConv2d, StnEmbedding, StnLSTM); "
                             "build it from fastdstn.nn or pass it through fastdstn.convert first")

    # ----------------------------------------------------------------- pieces
    def _inputs(self, inputs: Tensor, values: Mapping[str, Tensor]) -> Tensor:
        return inputs if self.augment is None else self.augment(inputs, values)

    def _training_loss(self, outputs, targets: Tensor, values: Mapping[str, Tensor],
                       h: Optional[Tensor]) -> Tensor:
        """L_T: the data loss plus wd·(mean over examples of ‖W_g + diag(s_i)W_r‖²) when tuned."""
        loss = self.loss_fn(outputs, targets)
        if self.weight_decay is not None:
            loss = loss + values[self.weight_decay][0] * weight_penalty(self.model, h)
        return loss

    def _forward_dual(self, inputs: Tensor, eps: Tensor, values: Mapping[str, Tensor]):
        """Δ-STN's linearized prediction f(x; w0, λ0+ε) + J_yw·Φ·ε in one dual forward."""
        with fwAD.dual_level(), feeding(eps, dual=True, values=values):
            return linearized(self.model(inputs))

    # ----------------------------------------------------------------- steps
    def train_step(self, inputs: Tensor, targets: Tensor, optimizers: Optimizers) -> Dict[str, Tensor]:
        """One training step on one mini-batch (both sub-steps in centered/Δ-STN, on the same batch)."""
        self.model.train()
        if self.mode is Mode.FIXED:
            return {"train_loss": self.general_step(inputs, targets, optimizers.general)}
        with torch.no_grad():
            draw = self.space.sample(inputs.shape[self.batch_dim])
        if self.mode is Mode.STN:
            return {"train_loss": self.joint_step(inputs, targets, draw.perturbed, optimizers.general)}
        return {"train_loss": self.general_step(inputs, targets, optimizers.general),
                "response_loss": self.response_step(inputs, targets, draw.eps, optimizers.response)}

    def joint_step(self, inputs: Tensor, targets: Tensor, perturbed: Tensor,
                   optimizer: torch.optim.Optimizer) -> Tensor:
        """STN: L_T at λ + ε with the nonlinear layer fed h = λ + ε; every model parameter moves."""
        values = self.space.example_values(perturbed)
        with feeding(perturbed, values=values):
            loss = self._training_loss(self.model(self._inputs(inputs, values)), targets, values, perturbed)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    def general_step(self, inputs: Tensor, targets: Tensor, optimizer: torch.optim.Optimizer) -> Tensor:
        """Sub-step (a): L_T at λ with h = 0; the response branch is not computed at all."""
        values = self.space.current_values(inputs.shape[self.batch_dim])
        with feeding(None, values=values):
            loss = self._training_loss(self.model(self._inputs(inputs, values)), targets, values, None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    def response_step(self, inputs: Tensor, targets: Tensor, eps: Tensor, optimizer: torch.optim.Optimizer) -> Tensor:
        """Sub-step (b): L_T at λ + ε; only W_r, b_r, V receive gradients. Centered STN feeds h = ε
        to the nonlinear layers; Δ-STN uses the linearized prediction (one dual forward)."""
        values = self.space.example_values(self.space.lam.detach() + eps)
        perturbed_inputs = self._inputs(inputs, values)
        with frozen(self._general):
            if self.mode is Mode.DELTA:
                outputs = self._forward_dual(perturbed_inputs, eps, values)
            else:
                with feeding(eps, values=values):
                    outputs = self.model(perturbed_inputs)
            loss = self._training_loss(outputs, targets, values, eps)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        optimizer.step()
        return loss.detach()

    def hyper_step(self, inputs: Tensor, targets: Tensor, optimizer: torch.optim.Optimizer) -> Dict[str, Tensor]:
        """One step on λ and ρ: L_V − τℍ on a validation batch, eval mode, weights frozen."""
        if self.mode is Mode.FIXED:
            raise RuntimeError("hyper_step: mode 'fixed' keeps its hyperparameters fixed and has no hyper step")
        was_training = self.model.training
        self.model.eval()
        draw = self.space.sample(inputs.shape[self.batch_dim])
        h = draw.perturbed if self.mode is Mode.STN else draw.perturbed - self.space.lam.detach()
        with frozen(self.model.parameters()):
            if self.linearized_hyper:
                outputs = self._forward_dual(inputs, h, {})
            else:
                with feeding(h):
                    outputs = self.model(inputs)
            val_loss = self.loss_fn(outputs, targets)
            entropy = self.space.entropy()
            objective = val_loss - self.tau * entropy
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
        optimizer.step()
        self.model.train(was_training)
        return {"val_loss": val_loss.detach(), "entropy": entropy.detach()}

    @torch.no_grad()
    def predict(self, inputs: Tensor):
        """The deployed network in eval mode: STN feeds h = λ; centered and Δ-STN use the general
        weights alone (h = 0), i.e. a plain network."""
        was_training = self.model.training
        self.model.eval()
        try:
            if self.mode is Mode.STN:
                lam = self.space.lam.detach().expand(inputs.shape[self.batch_dim], len(self.space))
                with feeding(lam):
                    return self.model(inputs)
            return self.model(inputs)
        finally:
            self.model.train(was_training)
