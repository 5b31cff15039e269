"""The finiteness guard of every update: a non-finite loss, gradient or BatchNorm statistic is caught before
the optimizer steps, so that no NaN or infinity ever reaches the weights, λ or ρ.

One check per sub-step: the L2 norms of the loss, of every gradient the optimizer is about to apply and of
the floating buffers the forward updated, in one `torch._foreach_norm` (one fused kernel on CUDA), then one
host sync for the verdict. A finite norm proves every element finite (NaN and ±inf propagate through the sum
of squares). An infinite norm may also be the float32 overflow of finite values (‖g‖ > 1.8e19: uci-linear with
`--set train.lr=0.3` gets there), so only then is each tensor checked element by element. The max-norm would
be exact in one pass but is a slow path on CPU: 9–13 ms against 0.4 ms for the L2 norms over the 2.49 M
general weights of the fmnist-quick SimpleCNN, 1 thread (the command is in docs/RUNS.md). Which tensor
failed is worked out only after a failure, so the common path has no per-tensor sync.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

Tensor = torch.Tensor


PROFILER_SCOPE = "fastdstn.guard.check"


class NonFiniteUpdate(FloatingPointError):
    """A sub-step whose loss, gradient or BatchNorm statistics are NaN or infinite; it was not applied.

    sub_step: "general", "response", "joint" or "hyper"; what: e.g. "loss is nan" or "gradient of
    net.1.weight is not finite"."""

    def __init__(self, sub_step: str, what: str) -> None:
        super().__init__(f"the {sub_step} sub-step's {what}; the update was not applied")
        self.sub_step, self.what = sub_step, what


def all_finite(tensors: Sequence[Tensor]) -> bool:
    """Whether every element of every tensor is finite: one fused reduction and one host sync (see above)."""
    tensors = [t.detach() for t in tensors if t.numel()]
    if not tensors:
        return True
    if bool(torch.stack([n.float() for n in torch._foreach_norm(tensors)]).isfinite().all()):
        return True
    return all(bool(torch.isfinite(t).all()) for t in tensors)    # an overflowing norm of finite values?


def floating_buffers(model: nn.Module) -> List[Tensor]:
    """The buffers that hold statistics (BatchNorm's running mean and variance): what must stay finite."""
    return [b for b in model.buffers() if b.is_floating_point()]


def training_buffers(model: nn.Module) -> List[Tensor]:
    """The buffers a training forward updates in place: the floating ones and BatchNorm's batch counter."""
    return [b for name, b in model.named_buffers() if b.is_floating_point() or name.endswith("num_batches_tracked")]


class Guard:
    """Checks one sub-step before its optimizer steps; on a failure restores the buffers the forward changed,
    clears the gradients and raises NonFiniteUpdate naming what was not finite.

    names: id(parameter) → its name, for the message; reduce: in a distributed run, makes the verdict
    collective (True when every rank's tensors are finite), so that all ranks skip or stop together."""

    def __init__(self, names: Dict[int, str], reduce: Optional[Callable[[bool], bool]] = None) -> None:
        self.names, self.reduce = names, reduce

    def snapshot(self, model: nn.Module) -> Optional[List[Tensor]]:
        """Copies of the training buffers before a training forward (None when the model has none)."""
        buffers = training_buffers(model)
        return [b.detach().clone() for b in buffers] if buffers else None

    def check(self, sub_step: str, loss: Tensor, optimizer: torch.optim.Optimizer, model: Optional[nn.Module] = None,
              saved: Optional[List[Tensor]] = None) -> None:
        """Raise NonFiniteUpdate unless the loss, the gradients of `optimizer`'s parameters and (with `model`)
        the model's floating buffers are all finite."""
        # A named scope, as torch.optim's steps have, so that a profile shows what the guard costs
        # (benchmarks/bench_step_cost.py).
        with torch.profiler.record_function(PROFILER_SCOPE):
            params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            buffers = floating_buffers(model) if model is not None else []
            finite = all_finite([loss, *(p.grad for p in params), *buffers])
            if self.reduce is not None:
                finite = self.reduce(finite)
        if finite:
            return
        what = self._culprit(loss, params, model)
        if saved is not None:
            with torch.no_grad():
                torch._foreach_copy_(training_buffers(model), saved)
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteUpdate(sub_step, what)

    def _culprit(self, loss: Tensor, params: List[nn.Parameter], model: Optional[nn.Module]) -> str:
        """The first non-finite thing, for the message (only after a failure: one sync per tensor)."""
        if not torch.isfinite(loss).all():
            return f"loss is {loss.flatten()[~torch.isfinite(loss.flatten())][0].item()}"
        for p in params:
            if not torch.isfinite(p.grad).all():
                return f"gradient of {self.names.get(id(p), 'a parameter')} is not finite"
        for name, b in model.named_buffers() if model is not None else ():
            if b.is_floating_point() and not torch.isfinite(b).all():
                return f"running statistic {name} is not finite"
        return "values are not finite on another rank"
