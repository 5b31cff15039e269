"""SelfTuningModule: a LightningModule whose training step is SelfTuning's (the general and response sub-steps, and
every `train_steps` batches a hyper step on the next validation batch), with Lightning's checkpointing and logging.

    method = fastdstn.SelfTuning(model, space, "delta", loss_fn=F.cross_entropy)
    module = SelfTuningModule(method, hyper_batches=valid_loader, lr=0.05, hyper_lr=3e-3)
    lightning.Trainer(max_epochs=10).fit(module, train_loader)

Lightning's manual optimisation runs the optimizers of `make_optimizers` through its own wrappers (which count
`global_step` and let its checkpoints hold their states); the module holds the model and the space, so a checkpoint
holds λ and ρ too, and `Trainer.fit(..., ckpt_path=...)` continues from it (the hyper steps' validation batches
start over from the loader's beginning).
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Iterator

import torch
from torch.utils._pytree import tree_map

from ..extras import require
from ..method import Optimizers, SelfTuning, make_optimizers
from ..method.batch import example_count

lightning = require("lightning", "lightning", "fastdstn.integrations.lightning")


def _endless(batches: Iterable) -> Iterator:
    while True:
        yield from batches


class SelfTuningModule(lightning.LightningModule):
    """method: the SelfTuning to train; hyper_batches: the (inputs, targets) batches of the hyper steps, taken in
    turn (a validation DataLoader); train_steps: training steps per hyper step (docs/METHOD.md §7's T_train);
    optimizer_options: make_optimizers' keywords (lr, response_lr, momentum, hyper_lr, hyper_optimizer)."""

    def __init__(self, method: SelfTuning, hyper_batches: Iterable, train_steps: int = 5,
                 **optimizer_options: Any) -> None:
        super().__init__()
        if not isinstance(method, SelfTuning):
            raise TypeError(f"method: expected a fastdstn.SelfTuning, received {type(method).__name__}")
        if not isinstance(train_steps, int) or train_steps < 1:
            raise ValueError(f"train_steps: expected an integer >= 1, received {train_steps!r}")
        self.automatic_optimization = False
        self.method, self.model, self.space = method, method.model, method.space
        self.train_steps = train_steps
        self.optimizer_options = optimizer_options
        self._hyper_batches, self._hyper_stream = hyper_batches, None

    def forward(self, inputs):
        return self.method.predict(inputs)

    def configure_optimizers(self):
        opts = make_optimizers(self.model, self.space, self.method.mode, **self.optimizer_options)
        return [o for o in (opts.general, opts.response, opts.hyper) if o is not None]

    def _optimizers(self) -> Optimizers:
        """make_optimizers' three (two in STN and fixed mode), as Lightning wraps them."""
        wrapped = self.optimizers()
        wrapped = wrapped if isinstance(wrapped, list) else [wrapped]
        general, *rest = wrapped
        response = rest[0] if len(rest) == 2 else None
        return Optimizers(general, response, rest[-1])

    def training_step(self, batch, batch_idx: int) -> None:
        inputs, targets = batch
        optimizers = self._optimizers()
        losses = self.method.train_step(inputs, targets, optimizers)
        examples = example_count(inputs, self.method.batch_dim, self.method.batch_key)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, batch_size=examples, prog_bar=True)
        if self.method.mode.value != "fixed" and (batch_idx + 1) % self.train_steps == 0:
            self._hyper_step(optimizers.hyper)

    def _hyper_step(self, optimizer) -> None:
        if self._hyper_stream is None:
            self._hyper_stream = _endless(self._hyper_batches)
        inputs, targets = next(self._hyper_stream)
        inputs = tree_map(lambda t: t.to(self.device) if isinstance(t, torch.Tensor) else t, inputs)
        out = self.method.hyper_step(inputs, targets.to(self.device), optimizer)
        logged: Dict[str, Any] = {"hyper/val_loss": out["val_loss"]}
        logged.update({f"hyper/{n}": v for n, v in self.space.values().items()})
        logged.update({f"sigma/{n}": v for n, v in self.space.scales().items()})
        self.log_dict(logged, batch_size=example_count(inputs, self.method.batch_dim, self.method.batch_key))

    def validation_step(self, batch, batch_idx: int) -> None:
        inputs, targets = batch
        outputs = self.method.predict(inputs)
        loss = self.method.loss_fn(outputs, targets)
        self.log("val/loss", loss, batch_size=example_count(inputs, self.method.batch_dim, self.method.batch_key),
                 prog_bar=True)
