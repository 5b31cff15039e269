"""SelfTuningTrainer: transformers' Trainer whose training step is SelfTuning's (the general and response sub-steps,
and every `train_steps` steps a hyper step on the next evaluation batch), with the Trainer's logging, evaluation,
checkpoints and resume.

    model = fastdstn.convert(GPT2LMHeadModel(config), space, dropout={"transformer.h.*.attn": "attn_drop"})
    method = fastdstn.SelfTuning(model, space, "delta", loss_fn=lm_loss)     # lm_loss(outputs, labels)
    trainer = SelfTuningTrainer(method, args=TrainingArguments(...), train_dataset=..., eval_dataset=...,
                                optimizer_options=dict(lr=0.05, hyper_lr=3e-3))
    trainer.train()                  # trainer.train(resume_from_checkpoint=True) continues

A batch is the Trainer's dict of tensors; its "labels" are SelfTuning's targets and the rest the model's keyword
arguments (so the model computes no loss of its own: `loss_fn` gets the outputs and the labels).

The Trainer steps one optimizer of its own after each training step. Here that optimizer is `StepsTaken`: its step
does nothing (SelfTuning's sub-steps have stepped make_optimizers' optimizers already), its param_groups are the
model optimizers' (so the Trainer's learning-rate schedule and logged learning rate are theirs), and its state_dict
holds all three optimizers and the space's λ and ρ, so that the Trainer's optimizer.pt checkpoints the whole
method and its resume restores it.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, Optional

import torch

from ..extras import require
from ..hyper import HyperSpace
from ..method import Optimizers, SelfTuning, make_optimizers

transformers = require("transformers", "huggingface", "fastdstn.integrations.huggingface")

LABELS = "labels"


class StepsTaken(torch.optim.Optimizer):
    """The Trainer's optimizer (see the module docstring): the model optimizers' param_groups, a step that does
    nothing, and a state_dict of make_optimizers' optimizers and the space."""

    def __init__(self, optimizers: Optimizers, space: HyperSpace) -> None:
        self.optimizers, self.space = optimizers, space
        model = [o for o in (optimizers.general, optimizers.response) if o is not None]
        # No Optimizer.__init__: the groups are the model optimizers' own (a learning-rate scheduler sets theirs).
        self.param_groups = [group for o in model for group in o.param_groups]
        self.defaults = dict(optimizers.general.defaults)
        self.state: Dict[Any, Any] = {}
        self._optimizer_step_pre_hooks, self._optimizer_step_post_hooks = {}, {}
        self._optimizer_state_dict_pre_hooks, self._optimizer_state_dict_post_hooks = {}, {}
        self._optimizer_load_state_dict_pre_hooks, self._optimizer_load_state_dict_post_hooks = {}, {}

    def step(self, closure=None):
        return None

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in (self.optimizers.general, self.optimizers.response, self.optimizers.hyper):
            if o is not None:
                o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> Dict[str, Any]:
        return {"optimizers": self.optimizers.state_dict(), "space": self.space.state_dict()}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.optimizers.load_state_dict(state_dict["optimizers"])
        self.space.load_state_dict(state_dict["space"])


class SelfTuningTrainer(transformers.Trainer):
    """method: the SelfTuning to train (its model is the Trainer's); train_steps: training steps per hyper step
    (docs/METHOD.md §7's T_train), the hyper steps taking the evaluation batches in turn; optimizer_options:
    make_optimizers' keywords (lr, response_lr, momentum, hyper_lr, hyper_optimizer). Other arguments are the
    Trainer's (args, train_dataset, eval_dataset, data_collator, callbacks, ...), except `model` and `optimizers`."""

    def __init__(self, method: SelfTuning, *args, train_steps: int = 5,
                 optimizer_options: Optional[Dict[str, Any]] = None, **kwargs) -> None:
        if not isinstance(method, SelfTuning):
            raise TypeError(f"method: expected a fastdstn.SelfTuning, received {type(method).__name__}")
        for taken in ("model", "optimizers"):
            if taken in kwargs:
                raise TypeError(f"{taken}: SelfTuningTrainer takes the model from the method and builds the "
                                f"optimizers (optimizer_options=...); received {taken}=")
        if not isinstance(train_steps, int) or train_steps < 1:
            raise ValueError(f"train_steps: expected an integer >= 1, received {train_steps!r}")
        self.method, self.train_steps = method, train_steps
        self.stn_optimizers = make_optimizers(method.model, method.space, method.mode, **(optimizer_options or {}))
        super().__init__(method.model, *args, optimizers=(StepsTaken(self.stn_optimizers, method.space), None),
                         **kwargs)
        self._hyper_batches: Optional[Iterator] = None
        self._steps_taken = 0

    def _split(self, batch: Dict[str, Any]):
        if LABELS not in batch:
            raise KeyError(f"batch: expected the targets under {LABELS!r}, received keys {sorted(batch)}")
        inputs = {k: v for k, v in batch.items() if k != LABELS}
        return inputs, batch[LABELS]

    def _next_hyper_batch(self) -> Dict[str, Any]:
        while True:
            if self._hyper_batches is None:
                self._hyper_batches = iter(self.get_eval_dataloader())
            try:
                return self._prepare_inputs(next(self._hyper_batches))
            except StopIteration:
                self._hyper_batches = None

    def training_step(self, model, inputs, num_items_in_batch=None) -> torch.Tensor:
        inputs, targets = self._split(self._prepare_inputs(inputs))
        loss = self.method.train_step(inputs, targets, self.stn_optimizers)["train_loss"]
        self._steps_taken += 1
        if self.method.mode.value != "fixed" and self._steps_taken % self.train_steps == 0:
            val_inputs, val_targets = self._split(self._next_hyper_batch())
            out = self.method.hyper_step(val_inputs, val_targets, self.stn_optimizers.hyper)
            self.log({"hyper_val_loss": float(out["val_loss"]),
                      **{f"hyper/{n}": v for n, v in self.method.space.values().items()},
                      **{f"sigma/{n}": v for n, v in self.method.space.scales().items()}})
        return loss / self.current_gradient_accumulation_steps

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        """Evaluation's loss: SelfTuning's loss_fn on the deployed network's outputs (SelfTuning.predict)."""
        inputs, targets = self._split(inputs)
        outputs = self.method.predict(inputs)
        loss = self.method.loss_fn(outputs, targets)
        return (loss, outputs) if return_outputs else loss
