"""The three modes of docs/METHOD.md §4 as step functions: training step, hyper step, evaluation.

Each step updates exactly the parameter group docs/METHOD.md §4 names, and gradients that a phase does not
need are not computed: the general sub-step never builds the response branch (h = None), the
response sub-step and the hyper step run with the parameters they do not update frozen
(requires_grad off), so autograd records no graph for them.

No update is applied unless its loss, gradients and the BatchNorm statistics its forward changed are
finite (fastdstn.method.guard): otherwise the sub-step is undone and raises NonFiniteUpdate.
"""
from __future__ import annotations

import contextlib
import enum
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, Mapping, Optional

import torch
import torch.autograd.forward_ad as fwAD
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.nn.parallel import DistributedDataParallel
from torch.utils._pytree import tree_map

from .. import arguments
from ..hyper.feed import ReadRecorder, feeding
from ..hyper.space import HyperSpace
from ..nn.dual_routes import dual_routes
from ..nn.groups import general_parameters, response_parameters, stn_layers, weight_penalty
from ..nn.report import check_first_step
from ..untraced import eager_compiled, untraced
from .batch import Inputs, Key, call, example_count
from .guard import Guard

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
                    response_lr: Optional[float] = None, momentum: float = 0.9, hyper_lr: float = 1e-2,
                    hyper_optimizer: str = "rmsprop") -> Optimizers:
    """docs/METHOD.md §7's defaults: SGD with momentum for the model (two optimizers in centered/Δ-STN) and
    RMSprop (or Adam) for λ, ρ at the authors' rate 1e-2 (§8b). response_lr (default: lr) exists in centered and
    Δ-STN only."""
    arguments.instance("model", model, nn.Module)
    arguments.instance("space", space, HyperSpace)
    mode = Mode(mode)
    arguments.number("lr", lr, 0, low_open=True)
    if response_lr is not None:
        if mode in (Mode.STN, Mode.FIXED):
            raise ValueError(f"response_lr: mode {mode.value!r} has no response optimizer; leave response_lr unset "
                             f"(received {response_lr!r})")
        arguments.number("response_lr", response_lr, 0, low_open=True)
    arguments.number("momentum", momentum, 0, 1, high_open=True)
    arguments.number("hyper_lr", hyper_lr, 0, low_open=True)
    hyper_classes = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}
    if hyper_optimizer not in hyper_classes:
        raise ValueError(f"hyper_optimizer: expected one of {sorted(hyper_classes)}, received {hyper_optimizer!r}")
    hyper = hyper_classes[hyper_optimizer](space.parameters(), lr=hyper_lr)
    if mode is Mode.STN:
        return Optimizers(torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum), None, hyper)
    if mode is Mode.FIXED:
        return Optimizers(torch.optim.SGD(general_parameters(model), lr=lr, momentum=momentum), None, hyper)
    response = lr if response_lr is None else response_lr
    return Optimizers(torch.optim.SGD(general_parameters(model), lr=lr, momentum=momentum),
                      torch.optim.SGD(response_parameters(model), lr=response, momentum=momentum), hyper)


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


def _flat_collective(tensors: list, collective: Callable[[Tensor], None]) -> list:
    """One collective over the concatenation of `tensors` (applied in place to the flat buffer, in their promoted
    dtype: the hyper step sends float32 λ gradients beside a float64 model's loss); returns the result shaped
    like each tensor, in its dtype."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    collective(flat)
    return [part.view_as(t).to(t.dtype) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors)]


def _parameter_names(model: nn.Module, space: HyperSpace) -> Dict[int, str]:
    """id(parameter) → its name, for the guard's messages."""
    names = {id(p): name for name, p in model.named_parameters()}
    names.update({id(space.lam): "λ (space.lam)", id(space.rho): "ρ (space.rho)"})
    return names


class _Network(nn.Module):
    """The model's forward, linearized on request (ŷ = y + ẏ): the module DistributedDataParallel wraps.
    DDP finds the parameters a step uses by walking back from the output its forward returns; in Δ-STN's
    response sub-step the response parameters reach the loss only through the tangent ẏ, so a DDP around the
    bare model (whose output's graph is the primal's) would call them unused and then fail when their
    gradients arrive. Returning ŷ puts them on the walked graph."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: Inputs, linearize: bool = False):
        outputs = call(self.model, inputs)
        return linearized(outputs) if linearize else outputs


class SelfTuning:
    """A model made of STN layers, its hyperparameter space and the method (docs/METHOD.md §4–§7); mode
    "fixed" trains the general weights alone at the current λ (no perturbation, no hyper step).

    Inputs are one tensor (model(x)), a tuple of positional arguments (model(*inputs)) or a dict of keyword
    arguments (model(**inputs), e.g. a Hugging Face batch of input_ids and attention_mask); the number of
    examples is the size along batch_dim of the tensor that batch_key names (a dict key or tuple index), by
    default the first tensor. loss_fn(outputs, targets) -> scalar gets what the model returns (a tensor, or e.g.
    a Hugging Face output whose `.logits` it reads); augment(inputs, values) -> inputs applies data
    augmentation at per-example hyperparameter values; weight_decay names the (per-batch)
    hyperparameter used as L2 coefficient in L_T; batch_dim is where inputs hold the examples
    (1 for time-major language-model batches); penalty() returns extra L_T terms the model computed in its
    last forward from the values its feed carried, or None (AR/TAR of a language model); tau weighs the
    entropy term of the hyper step;
    linearized_hyper runs Δ-STN's hyper step on the linearized network (an option, docs/METHOD.md §4)."""

    def __init__(self, model: nn.Module, space: HyperSpace, mode: Mode | str = Mode.DELTA, *,
                 loss_fn: LossFn, augment: Optional[Augment] = None, weight_decay: Optional[str] = None,
                 batch_dim: int = 0, batch_key: Key = None, penalty: Optional[Callable[[], Optional[Tensor]]] = None,
                 tau: float = 1e-3, linearized_hyper: bool = False) -> None:
        self.model = arguments.instance("model", model, nn.Module)
        self.space = arguments.instance("space", space, HyperSpace)
        self.mode = Mode(mode)
        self.loss_fn = arguments.function("loss_fn", loss_fn)
        self.augment = arguments.function("augment", augment, optional=True)
        self.penalty = arguments.function("penalty", penalty, optional=True)
        self.batch_dim = arguments.integer("batch_dim", batch_dim, low=0)
        if batch_key is not None and not isinstance(batch_key, (str, int)):
            raise TypeError(f"batch_key: expected a dict key (str), a tuple index (int) or None, received "
                            f"{type(batch_key).__name__}")
        self.batch_key = batch_key
        self._trained = False   # whether the best-response can depend on h (see _check_trained)
        self.tau = arguments.number("tau", tau, 0)
        self.linearized_hyper = arguments.boolean("linearized_hyper", linearized_hyper)
        if linearized_hyper and self.mode is not Mode.DELTA:
            raise ValueError(f"linearized_hyper: only Δ-STN (mode 'delta') has a linearized hyper step, "
                             f"received mode {self.mode.value!r}")
        self._response = response_parameters(model)
        self._general = general_parameters(model)
        # Names of the hyperparameters read in the first training step, then None (checked once, in train_step).
        self._read: Optional[set] = None if self.mode is Mode.FIXED else set()
        if not self._response:
            raise ValueError("model: has no STN layer (StnLinear, StnConv2d, StnEmbedding, StnLSTM); "
                             "build it from fastdstn.nn or pass it through fastdstn.convert first")
        built_for = sorted({layer.num_hypers for layer in stn_layers(model)} - {len(space)})
        if built_for:
            raise ValueError(f"space: holds {len(space)} hyperparameters, but the model's STN layers were built "
                             f"for {built_for[0]} (num_hypers)")
        self.weight_decay = self._weight_decay(weight_decay)
        self._local = _Network(model)
        self._network: nn.Module = self._local   # the training sub-steps' forward (DDP-wrapped by distribute)
        self._group: Optional[dist.ProcessGroup] = None
        self._guard = Guard(_parameter_names(model, space))

    def _weight_decay(self, name: Optional[str]) -> Optional[str]:
        """The hyperparameter used as L2 coefficient: one number per batch, so a per-batch hyperparameter."""
        if name is None:
            return None
        if not isinstance(name, str):
            raise TypeError(f"weight_decay: expected a hyperparameter name or None, received {name!r}")
        if self.space[name].per_example:    # a KeyError naming the space's hyperparameters if unknown
            raise ValueError(f"weight_decay: hyperparameter {name!r} is perturbed per example, but the L2 "
                             f"coefficient is one number per batch; declare it with per_example=False")
        return name

    def distribute(self, process_group: Optional[dist.ProcessGroup] = None, *, strategy: str = "ddp",
                   **options) -> None:
        """Train as one of the ranks of `process_group` (default: the default group, which must exist).

        strategy "ddp": the training sub-steps run the model under DistributedDataParallel, which all-reduces the
        gradients of whichever group a sub-step updates (find_unused_parameters: the general sub-step never uses
        the response parameters and the response sub-step has the general ones frozen). options go to
        DistributedDataParallel (device_ids=[local GPU] on CUDA).
        strategy "fsdp": FSDP2's `fully_shard` on the model as one unit (around ŷ, as DDP: FSDP2 reduces the
        gradients after a backward that starts from the unit's output, and in the response sub-step only ŷ's
        tangent half has a graph): at rest each rank keeps 1/world of every parameter, gradient and optimizer
        state (rows, dim 0); a training or hyper step gathers the weights for its forward and keeps them to its
        backward (reshard_after_forward=False: the L2 penalty reads W_g, W_r and V after the forward). Not per block: FSDP2 hooks each unit's inputs with an autograd Function that has no
        forward-mode rule, and inside the model those inputs carry Δ-STN's tangents (torch 2.14: "A custom
        Function's forward is returning a view ... but the jvp is not returning a view"). Build the optimizers after
        distribute: they must hold the sharded parameters. options go to fully_shard.
        Either way the hyper step averages the gradients of λ and ρ over the ranks, so every rank keeps the same
        model and the same hyperparameters while drawing its own perturbations and dropout masks."""
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("distribute: no process group; call torch.distributed.init_process_group first "
                               "(fastdstn train does so under torchrun)")
        if strategy not in ("ddp", "fsdp"):
            raise ValueError(f"strategy: expected 'ddp' or 'fsdp', received {strategy!r}")
        if strategy == "fsdp" and process_group is not None:
            raise ValueError("process_group: strategy 'fsdp' shards over the default group; pass None")
        self._group = process_group or dist.group.WORLD
        for p in self.space.parameters():    # identical λ, ρ on every rank from the first step on
            dist.broadcast(p.data, src=dist.get_global_rank(self._group, 0), group=self._group)
        if strategy == "ddp":
            self._network = DistributedDataParallel(self._local, process_group=self._group,
                                                    find_unused_parameters=True, **options)
        else:
            self._shard(**options)
        self._guard.reduce = self._all_ranks_finite

    def _shard(self, **options) -> None:
        """FSDP2 over the model (see distribute); the parameter lists and the guard's names then name the sharded
        parameters that replaced the model's."""
        from torch.distributed.fsdp import fully_shard
        mesh = init_device_mesh(self.space.lam.device.type, (dist.get_world_size(),))
        fully_shard(self._local, mesh=mesh, reshard_after_forward=False, **options)
        self._response = response_parameters(self.model)
        self._general = general_parameters(self.model)
        self._guard.names = _parameter_names(self.model, self.space)

    def _all_ranks_finite(self, finite: bool) -> bool:
        """The guard's verdict over all ranks: one rank's non-finite BatchNorm statistics skip or stop every rank."""
        flag = torch.tensor([float(not finite)], device=self.space.lam.device)
        dist.all_reduce(flag, group=self._group)
        return not bool(flag.item())

    def sync_buffers(self) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank. DDP broadcasts them at the start of
        each training forward, after which every rank's forward updates its own copy; the hyper step and
        evaluation use rank 0's, so all ranks evaluate the same network. A no-op in a run of one process."""
        if self._group is None:
            return
        buffers = [b for b in self.model.buffers() if b.numel()]
        src = dist.get_global_rank(self._group, 0)
        for dtype in dict.fromkeys(b.dtype for b in buffers):    # the same order on every rank (a set's is not)
            same = [b for b in buffers if b.dtype == dtype]
            for b, synced in zip(same, _flat_collective(same, lambda flat: dist.broadcast(flat, src, self._group))):
                b.copy_(synced)

    def _average_over_ranks(self, tensors: list) -> list:
        """The mean over the ranks of each tensor (one all-reduce of their concatenation)."""
        def mean(flat: Tensor) -> None:
            dist.all_reduce(flat, group=self._group)
            flat /= dist.get_world_size(self._group)
        return _flat_collective(tensors, mean)

    # ----------------------------------------------------------------- pieces
    def _examples(self, inputs: Inputs) -> int:
        return example_count(inputs, self.batch_dim, self.batch_key)

    def _values(self, values: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
        """The values of a training sub-step, recording what reads them until the first step has been checked."""
        return values if self._read is None else ReadRecorder(values, self._read)

    def _inputs(self, inputs: Inputs, values: Mapping[str, Tensor]) -> Inputs:
        return inputs if self.augment is None else self.augment(inputs, values)

    def _training_loss(self, outputs, targets: Tensor, values: Mapping[str, Tensor],
                       h: Optional[Tensor], general: bool = True) -> Tensor:
        """L_T: the data loss plus wd·(mean over examples of ‖W_g + diag(s_i)W_r‖²) when tuned, plus the
        model's own penalty terms of this forward; general=False (the response sub-step, W_g frozen) leaves out
        wd·Σ‖W_g‖², a constant there (`weight_penalty`)."""
        loss = self.loss_fn(outputs, targets)
        extra = self.penalty() if self.penalty is not None else None
        if extra is not None:
            loss = loss + extra
        if self.weight_decay is not None:
            loss = loss + values[self.weight_decay][0] * weight_penalty(self.model, h, general)
        return loss

    def _apply(self, sub_step: str, loss: Tensor, optimizer: torch.optim.Optimizer,
               saved: Optional[list]) -> None:
        """Backward, the finiteness guard (which undoes the forward's BatchNorm updates from `saved` and raises
        NonFiniteUpdate when anything is not finite), then the optimizer step."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._guard.check(sub_step, loss.detach(), optimizer, self.model, saved)
        optimizer.step()

    # torch.compile cannot trace dual tensors (Dynamo: "Attempted to wrap a dual tensor input"), so a compiled
    # model runs its dual forward eagerly rather than breaking its graph at every op and recompiling each frame for
    # every feed (a converted MLP hit the recompile limit of 8 in its second step: tests/method/test_compile.py),
    # and the graphs a compiled model already has would drop the tangents (`eager_compiled`). A disabled function
    # costs 0.6 µs a call; set_stance("force_eager") 32-88 µs, once per dual forward (timeit, this machine).
    @untraced
    def _forward_dual(self, network: nn.Module, inputs: Inputs, eps: Tensor, values: Mapping[str, Tensor]):
        """Δ-STN's linearized prediction f(x; w0, λ0+ε) + J_yw·Φ·ε in one dual forward."""
        with eager_compiled(), fwAD.dual_level(), feeding(eps, dual=True, values=values), dual_routes():
            return network(inputs, linearize=True)

    # ----------------------------------------------------------------- steps
    def train_step(self, inputs: Inputs, targets: Tensor, optimizers: Optimizers) -> Dict[str, Tensor]:
        """One training step on one mini-batch (both sub-steps in centered/Δ-STN, on the same batch)."""
        if not isinstance(optimizers, Optimizers):
            raise TypeError(f"optimizers: expected the fastdstn.Optimizers that make_optimizers(model, space, mode) "
                            f"returns, received {type(optimizers).__name__}")
        self._trained = True
        self.model.train()
        if self.mode is Mode.FIXED:
            return {"train_loss": self.general_step(inputs, targets, optimizers.general)}
        with torch.no_grad():
            draw = self.space.sample(self._examples(inputs))
        if self.mode is Mode.STN:
            losses = {"train_loss": self.joint_step(inputs, targets, draw.perturbed, optimizers.general)}
        else:
            losses = {"train_loss": self.general_step(inputs, targets, optimizers.general),
                      "response_loss": self.response_step(inputs, targets, draw.eps, optimizers.response)}
        if self._read is not None:
            read, self._read = self._read, None
            check_first_step(self.model, self.space.names, read)
        return losses

    def joint_step(self, inputs: Inputs, targets: Tensor, perturbed: Tensor,
                   optimizer: torch.optim.Optimizer) -> Tensor:
        """STN: L_T at λ + ε with the nonlinear layer fed h = λ + ε; every model parameter moves."""
        values = self._values(self.space.example_values(perturbed))
        saved = self._guard.snapshot(self.model)
        with feeding(perturbed, values=values):
            loss = self._training_loss(self._network(self._inputs(inputs, values)), targets, values, perturbed)
        self._apply("joint", loss, optimizer, saved)
        return loss.detach()

    def general_step(self, inputs: Inputs, targets: Tensor, optimizer: torch.optim.Optimizer) -> Tensor:
        """Sub-step (a): L_T at λ with h = 0; the response branch is not computed at all."""
        values = self._values(self.space.current_values(self._examples(inputs)))
        saved = self._guard.snapshot(self.model)
        with feeding(None, values=values):
            loss = self._training_loss(self._network(self._inputs(inputs, values)), targets, values, None)
        self._apply("general", loss, optimizer, saved)
        return loss.detach()

    def response_step(self, inputs: Inputs, targets: Tensor, eps: Tensor, optimizer: torch.optim.Optimizer) -> Tensor:
        """Sub-step (b): L_T at λ + ε; only W_r, b_r, V receive gradients. Centered STN feeds h = ε
        to the nonlinear layers; Δ-STN uses the linearized prediction (one dual forward). The returned loss leaves
        out wd·Σ‖W_g‖², a constant of this sub-step."""
        values = self._values(self.space.example_values(self.space.lam.detach() + eps))
        perturbed_inputs = self._inputs(inputs, values)
        saved = self._guard.snapshot(self.model)
        with frozen(self._general):
            if self.mode is Mode.DELTA:
                outputs = self._forward_dual(self._network, perturbed_inputs, eps, values)
            else:
                with feeding(eps, values=values):
                    outputs = self._network(perturbed_inputs)
            loss = self._training_loss(outputs, targets, values, eps, general=False)
            self._apply("response", loss, optimizer, saved)
        return loss.detach()

    def hyper_step(self, inputs: Inputs, targets: Tensor, optimizer: torch.optim.Optimizer) -> Dict[str, Tensor]:
        """One step on λ and ρ: L_V − τℍ on a validation batch, eval mode, weights frozen. In a distributed run
        the gradients of λ and ρ and the returned val_loss are means over the ranks' batches. `optimizer` is
        optimizers.hyper (anything with its param_groups, zero_grad and step, e.g. Lightning's wrapper of it)."""
        if self.mode is Mode.FIXED:
            raise RuntimeError("hyper_step: mode 'fixed' keeps its hyperparameters fixed and has no hyper step")
        self._check_hyper_optimizer(optimizer)
        self._check_trained()
        self.sync_buffers()
        was_training = self.model.training
        self.model.eval()
        draw = self.space.sample(self._examples(inputs))
        h = draw.perturbed if self.mode is Mode.STN else draw.perturbed - self.space.lam.detach()
        with frozen(self.model.parameters()):
            if self.linearized_hyper:
                outputs = self._forward_dual(self._local, inputs, h, {})
            else:
                with feeding(h):
                    outputs = self._local(inputs)
            val_loss = self.loss_fn(outputs, targets)
            entropy = self.space.entropy()
            objective = val_loss - self.tau * entropy
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
        if self._group is not None:
            hyper = list(self.space.parameters())
            *grads, val_loss = self._average_over_ranks(
                [p.grad if p.grad is not None else torch.zeros_like(p) for p in hyper] + [val_loss.detach()])
            for p, g in zip(hyper, grads):
                p.grad = g
        self.model.train(was_training)
        self._guard.check("hyper", objective.detach(), optimizer)
        optimizer.step()
        self.space.project_()
        return {"val_loss": val_loss.detach(), "entropy": entropy.detach()}

    def _check_trained(self) -> None:
        """A hyper step needs a best-response that depends on h: after a train_step, or with some V ≠ 0 (a model
        loaded from a checkpoint). With every V = 0 (as convert and the STN layers start) λ's gradient is 0: a
        warning, once, not an error, since timing a hyper step on a fresh model (benchmarks/) is a fair use."""
        if self._trained:
            return
        self._trained = True
        if not any(bool(layer.hyper_proj.any()) for layer in stn_layers(self.model)):
            warnings.warn("hyper_step: called before any train_step; every hyper projection V is still 0, so the "
                          "validation loss does not depend on λ and λ does not move (docs/METHOD.md §7: training "
                          "steps come first)", UserWarning, stacklevel=3)

    def _check_hyper_optimizer(self, optimizer) -> None:
        if isinstance(optimizer, Optimizers):
            raise TypeError("optimizer: expected the optimizer of λ and ρ, optimizers.hyper, received the "
                            "whole fastdstn.Optimizers")
        groups = getattr(optimizer, "param_groups", None)
        if groups is None or not callable(getattr(optimizer, "step", None)):
            raise TypeError(f"optimizer: expected a torch optimizer of λ and ρ (optimizers.hyper), received "
                            f"{type(optimizer).__name__}")
        if not any(p is self.space.lam for group in groups for p in group["params"]):
            raise ValueError("optimizer: expected the optimizer of λ and ρ (optimizers.hyper), received one that "
                             "does not update space.lam")

    @torch.no_grad()
    def predict(self, inputs: Inputs):
        """The deployed network in eval mode: STN feeds h = λ; centered and Δ-STN use the general
        weights alone (h = 0), i.e. a plain network."""
        was_training = self.model.training
        self.model.eval()
        try:
            if self.mode is Mode.STN:
                lam = self.space.lam.detach().expand(self._examples(inputs), len(self.space))
                with feeding(lam):
                    return self._local(inputs)
            return self._local(inputs)
        finally:
            self.model.train(was_training)
