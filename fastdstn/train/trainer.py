"""The training loop of docs/METHOD.md §7 for the modes delta (default), centered, stn and fixed.

Warm-up epochs of training steps only, then cycles of T_train training steps and T_valid hyper steps on
validation batches; learning-rate schedules on the model optimizers; validation and test evaluation at
every epoch end; early stopping on validation loss. Every hyper step appends a row to the schedule
(step, epoch, constrained value and σ of every hyperparameter, train and validation loss).

Exact resume: the data position is (epoch, batch index) plus the hyper steps' validation-stream
position, all integers; batch orders are pure functions of (seed, epoch); every random draw of a step
(perturbations, dropout masks, cutout) comes from the global generators, whose states the checkpoint
holds. A run resumed from a checkpoint therefore replays the same arithmetic bit for bit.

Under torchrun (WORLD_SIZE > 1) every process is one rank of a data-parallel run: it trains on its shard
of each epoch with its own perturbation and dropout draws (its generators are seeded from (seed, rank)),
DDP and the hyper step's all-reduce keep model and λ, ρ identical on all ranks, losses and metrics are
reduced over the ranks, and rank 0 alone writes the run directory. The checkpoint holds every rank's
generator states and position, so a restart with the same number of processes resumes exactly.

Nothing non-finite is saved: an update whose loss, gradients or BatchNorm statistics are not finite is
never applied (fastdstn.method.guard); the run then stops with Diverged naming the sub-step, step and
epoch, or, with train.skip_nonfinite = N, skips it and says so (up to N in a row). The network, λ and σ
are checked once more before every checkpoint and every row of the records.

The run directory (docs/RUNS.md): one process owns it at a time (fastdstn.train.rundir); a new run refuses
a directory that holds files unless asked to overwrite them; checkpoints/last.ckpt is the resume point and
checkpoints/previous.ckpt the one before it (a damaged last.ckpt falls back to it, saying so);
checkpoints/best.ckpt holds the weights, λ and ρ of the best validation epoch only and cannot resume a run.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import signal
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

import numpy as np
import torch
import yaml

from ..config import ConfigError, RunConfig, differences, from_dict, read_file
from ..hyper import HyperSpace
from ..method import NonFiniteUpdate, SelfTuning, make_optimizers
from ..method.guard import all_finite, floating_buffers
from . import checkpoint, distributed, sharding
from .loaders import describe, load_data
from .files import write_text
from .progress import Progress
from .records import Records, read_csv
from .replay import Schedule, unconstrained
from .rundir import RunDirectory, RunDirectoryError
from .building import apply_hyper_overrides, build_model, loss_function, make_augment, resolve_device

CHECKPOINT_FORMAT = 2    # 2: per-rank generator states and positions under "ranks"
# Config keys a resumed run may change: how long it runs and where, and whether it skips non-finite updates
# (resuming a diverged run with train.skip_nonfinite), nothing that changes the arithmetic of a finite step.
RESUMABLE_CHANGES = {"train.epochs", "train.early_stopping", "train.log_every", "train.skip_nonfinite"}
METRIC = {"classification": "acc", "regression": "rmse", "language": "ppl"}
EXTRA_STATE = "_extra_state"    # the suffix of a module's get_extra_state() entry in a state_dict
# What to lower when a sub-step's update is not finite.
ADVICE = {"general": "lower train.lr", "joint": "lower train.lr",
          "response": "lower train.response_lr (or train.lr)", "hyper": "lower train.hyper_lr"}


class Interrupted(RuntimeError):
    """Training stopped on SIGINT/SIGTERM after writing a checkpoint."""

    def __init__(self, signal_name: str, path: str) -> None:
        super().__init__(f"{signal_name}: checkpoint written to {path}; continue with --resume")
        self.signal_name, self.path = signal_name, path


class Diverged(RuntimeError):
    """A loss, gradient or parameter became NaN or infinite; nothing non-finite was applied or saved."""


@dataclasses.dataclass
class Position:
    """Where the run is; all of it goes into the checkpoint."""

    epoch: int = 0             # the epoch in progress (or the next to start)
    batch: int = 0             # next training batch index within `epoch`
    step: int = 0              # training steps done
    tuned_steps: int = 0       # training steps done after warm-up: every T_train-th is followed by hyper steps
    hyper_step: int = 0        # hyper steps done
    epoch_loss: float = 0.0    # sum of this epoch's training losses so far
    epoch_batches: int = 0
    cycle_loss: float = 0.0    # sum of training losses since the last hyper step
    cycle_batches: int = 0
    best_val: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    stopped_early: bool = False
    elapsed: float = 0.0       # wall seconds of training and evaluation before this process
    skipped: int = 0           # updates not applied because they were not finite (train.skip_nonfinite)
    skipped_in_a_row: Dict[str, int] = dataclasses.field(default_factory=lambda: {"train": 0, "hyper": 0})


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank `rank`'s draws: unrelated streams for neighbouring seeds and ranks (SeedSequence)."""
    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1)[0])


def shard(loader, world: "distributed.World", pad: bool):
    """This rank's part of a loader (the loader itself in a run of one process)."""
    from ..data.loader import SequenceLoader

    if not world.distributed:
        return loader
    if isinstance(loader, SequenceLoader):
        return loader.shard(world.rank, world.size)
    return loader.shard(world.rank, world.size, pad=pad)


class Trainer:
    """One run: `Trainer(config, out_dir).fit(resume=False) -> summary dict`.

    config: a fastdstn.config.RunConfig (see `fastdstn.config.load` for presets, files and overrides).
    out_dir: the run directory (None: no files at all, e.g. in-process experiments).
    bundle: a fastdstn.data.DataBundle to use instead of loading `config.data`.
    built: a fastdstn.models.BuiltModel to use instead of building `config.model`; loss_fn(outputs, targets) the
        loss instead of the task's (`Trainer.for_model` passes both for a model and data of one's own).
    replay: a Schedule whose values the fixed mode follows step by step (see `fastdstn replay`).
    on_epoch: called with each epoch's metrics row after evaluation; it may raise to stop the run
        (`fastdstn tune` raises optuna.TrialPruned there).
    """

    def __init__(self, config: RunConfig, out_dir: Optional[str] = None, *, bundle=None, built=None,
                 loss_fn: Optional[Callable] = None, progress: bool = True, replay: Optional[Schedule] = None,
                 on_epoch: Optional[Callable[[Dict[str, Any]], None]] = None) -> None:
        self.config, self.out_dir, self.on_epoch = config, out_dir, on_epoch
        train = config.train
        if replay is not None and train.mode != "fixed":
            raise ConfigError(f"train.mode: replaying a schedule needs mode 'fixed', received {train.mode!r}")
        self.mode = train.mode
        device = resolve_device(train.device)
        self.world = distributed.join(device.type)
        self.device = self.world.device(device)
        self.amp = train.amp and self.device.type == "cuda"
        seed_everything(train.seed)
        self.bundle = bundle if bundle is not None else load_data(config.data, train.seed, self.device)
        built = built if built is not None else build_model(config.model, self.bundle)
        self.task = built.task
        self.metric = METRIC[self.task]
        self.space = HyperSpace(apply_hyper_overrides(built.hypers, config.hypers)).to(self.device)
        self.model = built.model.to(self.device)
        self.names = self.space.names
        self.loss_fn = loss_fn if loss_fn is not None else loss_function(self.task)
        augment = make_augment(self.bundle, built.augment)
        common = dict(loss_fn=self.loss_fn, augment=augment, weight_decay=built.weight_decay,
                      batch_dim=built.batch_dim, penalty=built.penalty)
        try:    # what the config decides (a per-example weight decay, response_lr in stn mode) is refused here
            self.method = SelfTuning(self.model, self.space, self.mode, tau=train.tau,
                                     linearized_hyper=train.linearized_hyper, **common)
        except (TypeError, ValueError) as err:
            raise ConfigError(str(err)) from err
        world = self.world
        self.sharded = world.distributed and train.strategy == "fsdp"
        if world.distributed:    # before the optimizers: FSDP2 replaces the parameters by their shards
            options = {"device_ids": [self.device.index]} if self.device.type == "cuda" and not self.sharded else {}
            self.method.distribute(strategy=train.strategy, **options)
            seed_everything(rank_seed(train.seed, world.rank))
        try:
            self.optimizers = make_optimizers(self.model, self.space, self.mode,
                                              lr=train.lr, response_lr=train.response_lr, momentum=train.momentum,
                                              hyper_lr=train.hyper_lr, hyper_optimizer=train.hyper_optimizer)
        except (TypeError, ValueError) as err:
            raise ConfigError(str(err)) from err
        self.schedulers = self._schedulers()
        if train.clip_grad > 0:
            self._clip_gradients(train.clip_grad)
        # Training batches: every rank the same number (padded shards); evaluation: an exact partition.
        self.train_loader = shard(self.bundle.train, world, pad=True)
        self.valid_loader = shard(self.bundle.valid, world, pad=False)
        self.test_loader = shard(self.bundle.test, world, pad=False)
        self.hyper_loader = shard(self._hyper_loader(), world, pad=True)
        self.valid_stream = self.hyper_loader.stream(0, 0)
        self.replay = replay
        self.position = Position()
        self.progress = Progress(progress and world.is_main, train.epochs, self.names, lines=world.is_main)
        self.records: Optional[Records] = None
        self._signal: Optional[str] = None

    @classmethod
    def for_model(cls, model: torch.nn.Module, space: HyperSpace, train, valid, test, *, loss_fn: Callable,
                  out_dir: Optional[str] = None, task: str = "classification", weight_decay: Optional[str] = None,
                  batch_dim: int = 0, name: Optional[str] = None, progress: bool = True,
                  replay: Optional[str] = None, **train_options) -> "Trainer":
        """A Trainer for a model and data of one's own, with the run directory of the built-in models
        (docs/RUNS.md: checkpoints with exact resume, schedule.csv, metrics.csv, TensorBoard, schedule.png).

        model: converted (fastdstn.convert) or built from fastdstn.nn; it is trained in place. space: its
        hyperparameters (their definitions: the run starts from each Hyper's init). train, valid, test:
        DataLoaders (a shuffling one with generator=torch.Generator()) of (inputs, targets) batches; inputs a
        tensor, tuple or dict (SelfTuning). task: classification (accuracy), regression (RMSE) or language
        (perplexity). train_options: keys of the [train] config section (epochs, mode, lr, hyper_lr, train_steps,
        valid_steps, warmup_epochs, seed, device, ...). Then `fit(resume=..., overwrite=...)`, and
        `fastdstn.export(trainer.method)` for the tuned network.

        replay: a run directory whose schedule.csv this run follows step by step, in mode fixed (the mode
        unless train_options name another, which is refused), as `fastdstn replay` does for the built-in
        models; the model must be the one that run started from (a fresh `convert`), not the trained one."""
        from ..models import BuiltModel
        from . import own_model

        if replay is not None:
            train_options.setdefault("mode", "fixed")
        config = own_model.run_config(name or (os.path.basename(os.path.normpath(out_dir)) if out_dir else "own"),
                                      train_options)
        data = own_model.bundle(train, valid, test, task, config.train.seed, resolve_device(config.train.device))
        built = BuiltModel(model, list(space.hypers), task, weight_decay, batch_dim=batch_dim)
        schedule = None if replay is None else Schedule.from_run(replay, space.names)
        return cls(config, out_dir, bundle=data, built=built, loss_fn=loss_fn, progress=progress, replay=schedule)

    # ------------------------------------------------------------------------------------------ building
    def _model_optimizers(self) -> List[torch.optim.Optimizer]:
        opts = [self.optimizers.general]
        if self.optimizers.response is not None:
            opts.append(self.optimizers.response)
        return opts

    def _clip_gradients(self, max_norm: float) -> None:
        """Clip each model optimizer's gradients right before it steps. A step pre-hook reaches inside
        SelfTuning's sub-steps, which call backward() and step() themselves."""
        def clip(opt, _args, _kwargs) -> None:    # a pre-hook returning non-None would replace step's args
            torch.nn.utils.clip_grad_norm_([p for group in opt.param_groups for p in group["params"]], max_norm)

        for opt in self._model_optimizers():
            opt.register_step_pre_hook(clip)

    def _schedulers(self) -> List[torch.optim.lr_scheduler.LRScheduler]:
        t = self.config.train
        sched = torch.optim.lr_scheduler
        make = {"none": None,
                "step": lambda o: sched.StepLR(o, t.lr_step_size, t.lr_gamma),
                "multistep": lambda o: sched.MultiStepLR(o, t.lr_milestones, t.lr_gamma),
                "cosine": lambda o: sched.CosineAnnealingLR(o, T_max=t.epochs, eta_min=t.lr_min)}[t.lr_schedule]
        return [] if make is None else [make(o) for o in self._model_optimizers()]

    def _hyper_loader(self):
        """Validation batches for hyper steps, at the training batch size (the evaluation batch size
        is for throughput; a hyper step is a stochastic gradient step like a training step)."""
        from ..data.loader import SequenceLoader, TensorLoader

        valid, size = self.bundle.valid, self.config.data.batch_size
        if isinstance(valid, TensorLoader):
            return TensorLoader(valid.inputs, valid.targets, min(size, valid.num_examples), shuffle=True,
                                seed=valid.seed, salt=valid.salt + 1, transform=valid.transform)
        if isinstance(valid, SequenceLoader):
            return SequenceLoader(valid.data.t().reshape(-1), size, valid.bptt)
        return valid

    # ------------------------------------------------------------------------------------------ contexts
    @contextlib.contextmanager
    def _context(self, stream: str) -> Iterator[None]:
        """Autocast when AMP is on; the language model's carried-state stream."""
        with contextlib.ExitStack() as stack:
            if self.amp:
                stack.enter_context(torch.autocast("cuda", dtype=torch.bfloat16))
            if hasattr(self.model, "streaming"):
                stack.enter_context(self.model.streaming(stream))
            yield

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM ask for a checkpoint at the next step boundary; a second one stops at once."""
        if self.out_dir is None or threading.current_thread() is not threading.main_thread():
            yield
            return
        signals = (signal.SIGINT, signal.SIGTERM)
        previous = {s: signal.getsignal(s) for s in signals}

        def handler(signum, frame):
            if self._signal is not None:
                raise KeyboardInterrupt
            self._signal = signal.Signals(signum).name

        for s in signals:
            signal.signal(s, handler)
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    # ------------------------------------------------------------------------------------------ state
    def _path(self, *parts: str) -> str:
        return os.path.join(self.out_dir, *parts)

    def state_dict(self) -> Dict[str, Any]:
        """Everything a resume needs; parameters, space, optimizers and schedulers are the same on every rank;
        generator states, stream, position and the model's extra states (a language model's carried hidden
        state) are per rank ("ranks", in rank order). A collective in a distributed run: every rank calls it
        at the same step."""
        model = sharding.model_state(self.model, self.sharded)
        this_rank = {"valid_stream": self.valid_stream.state_dict(), "rng": checkpoint.rng_state(),
                     "position": {**dataclasses.asdict(self.position), "elapsed": self._elapsed()},
                     "model_extra_state": {k: v for k, v in model.items() if k.endswith(EXTRA_STATE)}}
        return {"format": CHECKPOINT_FORMAT, "config": self.config.to_dict(),
                "model": model, "space": self.space.state_dict(),
                "optimizers": sharding.optimizers_state(self.model, self.optimizers, self.sharded), "schedulers": [s.state_dict() for s in self.schedulers],
                "ranks": self.world.gather(this_rank),
                "records": self.records.rows() if self.records else {}}

    def save_checkpoint(self) -> str:
        """Write checkpoints/last.ckpt, keeping the one it replaces as previous.ckpt (rank 0; every rank takes
        part in gathering the state)."""
        path = self._path("checkpoints", "last.ckpt")
        state = self.state_dict()
        if self.world.is_main:
            checkpoint.save(state, path, keep_previous=self._path("checkpoints", "previous.ckpt"))
        return path

    def load_checkpoint(self, path: str) -> Dict[str, Any]:
        """Restore everything from `path` (verified first); returns the checkpoint's record counts."""
        return self._restore(checkpoint.load(path, map_location=self.device), path)

    def _restore(self, state: Dict[str, Any], path: str) -> Dict[str, Any]:
        """Restore everything from a checkpoint's state, after checking that this run can continue it."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise checkpoint.CheckpointError(f"checkpoint {path}: format {state.get('format')!r}, "
                                             f"expected {CHECKPOINT_FORMAT}")
        self._check_same_config(state["config"], path)
        ranks = state["ranks"]
        if len(ranks) != self.world.size:
            raise checkpoint.CheckpointError(
                f"checkpoint {path} was written by a run of {len(ranks)} process(es), this run has "
                f"{self.world.size}: resume with the same number of processes (torchrun --nnodes × --nproc_per_node)")
        mine = ranks[self.world.rank]
        sharding.load_model_state(self.model, {**state["model"], **mine["model_extra_state"]}, self.sharded)
        self.space.load_state_dict(state["space"])
        sharding.load_optimizers_state(self.model, self.optimizers, state["optimizers"], self.sharded)
        for s, sd in zip(self.schedulers, state["schedulers"]):
            s.load_state_dict(sd)
        self.valid_stream.load_state_dict(mine["valid_stream"])
        self.position = Position(**mine["position"])
        checkpoint.set_rng_state(mine["rng"])
        return state["records"]

    def _check_same_config(self, saved: Dict[str, Any], path: str) -> None:
        changed = differences(saved, self.config.to_dict())
        differ = {k: v for k, v in changed.items() if k not in RESUMABLE_CHANGES and k != "train.device"}
        if differ:
            details = ", ".join(f"{k}: {a!r} → {b!r}" for k, (a, b) in differ.items())
            raise ConfigError(f"--resume: the configuration differs from the one in {path} ({details}); "
                              f"only {', '.join(sorted(RESUMABLE_CHANGES))} may change")
        if self.config.train.lr_schedule == "cosine" and "train.epochs" in changed:
            before, now = changed["train.epochs"]
            raise ConfigError(f"train.epochs: the cosine schedule of the run in {path} anneals over its "
                              f"{before} epochs; it cannot resume with {now}")

    def _resume(self) -> Dict[str, int]:
        """Continue from checkpoints/last.ckpt, or from previous.ckpt when the file last.ckpt is damaged or
        missing (saying so; a whole last.ckpt that this run cannot continue is refused, not skipped); returns
        the record counts of the checkpoint restored."""
        last, previous = self._path("checkpoints", "last.ckpt"), self._path("checkpoints", "previous.ckpt")
        try:
            state, path = checkpoint.load(last, map_location=self.device), last
        except checkpoint.CheckpointError as err:
            if not os.path.isfile(previous):
                if os.path.isfile(self._path("checkpoints", "best.ckpt")):
                    raise checkpoint.CheckpointError(f"{err} (best.ckpt holds weights only and cannot resume a "
                                                     f"run)") from err
                raise
            self.progress.message(f"fastdstn: {err}; resuming from {previous}, the checkpoint before it")
            try:
                state, path = checkpoint.load(previous, map_location=self.device), previous
            except checkpoint.CheckpointError as second:
                raise checkpoint.CheckpointError(f"{err}; and {second}") from second
        return self._restore(state, path)

    def _elapsed(self) -> float:
        return self.position.elapsed + (time.time() - self._started)

    # ------------------------------------------------------------------------------------------ steps
    def _apply_replay(self) -> None:
        """The schedule's values for the next training step; a row taken up here for the first time goes into
        this run's schedule.csv (a function of the step alone, so a resumed replay writes each row once)."""
        pos = self.position
        row = self.replay.row_at(pos.step)
        if row < 0:
            return
        values = self.replay.values[row]
        lam = [unconstrained(h, values[h.name]) for h in self.space.hypers]
        with torch.no_grad():
            self.space.lam.copy_(torch.tensor(lam, dtype=self.space.lam.dtype))
        if self.records and (pos.step == 0 or self.replay.row_at(pos.step - 1) != row):
            self.records.schedule.write({"hyper_step": row + 1, "step": pos.step,
                                         "epoch": pos.epoch + pos.batch / len(self.train_loader), **values})
            for n in self.names:
                self.records.tb.add_scalar(f"hyper/{n}", values[n], pos.step)

    def _train_step(self, x, y) -> Optional[float]:
        """One training step; its loss, or None when an update was not finite and skipped."""
        if self.replay is not None:
            self._apply_replay()
        try:
            with self._context("train"):
                out = self.method.train_step(x, y, self.optimizers)
        except NonFiniteUpdate as err:
            self._not_applied(err, "train", f"training step {self.position.step + 1}")
            return None
        self.position.skipped_in_a_row["train"] = 0
        return float(out["train_loss"])

    def _not_applied(self, err: NonFiniteUpdate, kind: str, step: str) -> None:
        """An update the guard refused: Diverged, or (train.skip_nonfinite) a skip that is logged. Training and
        hyper steps count their skips in a row apart, so that neither can fail forever behind the other."""
        pos, limit = self.position, self.config.train.skip_nonfinite
        where = f"the {err.sub_step} sub-step of {step} (epoch {pos.epoch + 1})"
        if pos.skipped_in_a_row[kind] >= limit:
            skipping = (f"after {limit} skipped {kind} updates in a row" if limit else
                        "or set train.skip_nonfinite=N to skip up to N such updates in a row")
            raise Diverged(f"{where}: {err.what}; it was not applied and nothing non-finite was saved; "
                           f"{ADVICE[err.sub_step]}, {skipping}") from err
        pos.skipped += 1
        pos.skipped_in_a_row[kind] += 1
        self.progress.message(f"fastdstn: skipped {where}: {err.what} ({pos.skipped_in_a_row[kind]} {kind} updates "
                              f"in a row of at most {limit})")
        if self.records:
            self.records.tb.add_scalar("train/skipped_updates", pos.skipped, pos.step)

    def _check_finite(self, when: str, *losses: float) -> None:
        """Diverged unless the network, its statistics, λ, ρ and the given losses are finite: run before
        anything is saved (one fused check; collective in a distributed run)."""
        tensors = [*self.model.parameters(), *floating_buffers(self.model), *self.space.parameters()]
        finite = all_finite(tensors) and all(math.isfinite(v) for v in losses)
        if self.world.any(not finite):
            what = "the network or its losses" + (f" (validation {losses[0]:.4g}, test {losses[1]:.4g})"
                                                  if losses else "")
            raise Diverged(f"{what} not finite {when}; nothing of it was saved, the last checkpoint holds the run "
                           f"before it; {ADVICE['general']}")

    def _hyper_steps(self, batches_per_epoch: int) -> None:
        pos = self.position
        for _ in range(self.config.train.valid_steps):
            x, y = next(self.valid_stream)
            try:
                with self._context("hyper"):
                    out = self.method.hyper_step(x, y, self.optimizers.hyper)
            except NonFiniteUpdate as err:
                self._not_applied(err, "hyper", f"hyper step {pos.hyper_step + 1} (after training step {pos.step})")
                continue
            pos.skipped_in_a_row["hyper"] = 0
            pos.hyper_step += 1
            values, scales = self.space.values(), self.space.scales()
            if not all(math.isfinite(v) for v in (*values.values(), *scales.values())):
                raise Diverged(f"λ or σ is not finite after hyper step {pos.hyper_step} (epoch {pos.epoch + 1}): "
                               f"{values}, σ {scales}; nothing of it was saved; {ADVICE['hyper']}")
            row = {"hyper_step": pos.hyper_step, "step": pos.step, "epoch": pos.epoch + pos.batch / batches_per_epoch,
                   "train_loss": pos.cycle_loss / max(pos.cycle_batches, 1), "val_loss": float(out["val_loss"]),
                   **values, **{f"sigma_{n}": s for n, s in scales.items()}}
            if self.world.distributed:    # the cycle's training loss over all ranks (val_loss is already a mean)
                total, count = self.world.sum([pos.cycle_loss, pos.cycle_batches])
                row["train_loss"] = total / max(count, 1)
            if self.records:
                self.records.schedule.write(row)
                tb = self.records.tb
                tb.add_scalar("hyper_step/val_loss", row["val_loss"], pos.step)
                for n in self.names:
                    tb.add_scalar(f"hyper/{n}", values[n], pos.step)
                    tb.add_scalar(f"sigma/{n}", scales[n], pos.step)
        pos.cycle_loss, pos.cycle_batches = 0.0, 0

    @torch.no_grad()
    def evaluate(self, loader, stream: str) -> Dict[str, float]:
        """Mean loss over the examples (tokens for language) and accuracy / RMSE / perplexity; in a
        distributed run over all ranks' shards together."""
        if hasattr(self.model, "reset_state"):
            self.model.reset_state(stream)
        total, correct, count = 0.0, 0, 0
        for x, y in loader.batches(0):
            with self._context(stream):
                out = self.method.predict(x)
            n = y.numel() if self.task == "language" else y.shape[0]
            logits = getattr(out, "logits", out)     # a tensor, or a model-output object (Hugging Face)
            total += float(self.loss_fn(out.float() if isinstance(out, torch.Tensor) else out, y)) * n
            if self.task == "classification":
                correct += int((logits.argmax(-1) == y).sum())
            count += n
        total, correct, count = self.world.sum([total, correct, count])
        loss = total / count
        metric = {"classification": correct / count, "regression": math.sqrt(loss),
                  "language": math.exp(min(loss, 50.0))}[self.task]
        return {"loss": loss, self.metric: metric}

    # ------------------------------------------------------------------------------------------ loop
    def _run_epoch(self) -> None:
        pos, t = self.position, self.config.train
        loader = self.train_loader
        batches = len(loader)
        tuning = self.mode != "fixed" and pos.epoch >= t.warmup_epochs
        if pos.batch == 0 and hasattr(self.model, "reset_state"):
            self.model.reset_state("train")
        self.progress.start_epoch(pos.epoch, batches, pos.batch)
        for x, y in loader.batches(pos.epoch, pos.batch):
            loss = self._train_step(x, y)
            pos.step += 1
            pos.batch += 1
            if loss is not None:    # a skipped step has no loss to average
                pos.epoch_loss, pos.epoch_batches = pos.epoch_loss + loss, pos.epoch_batches + 1
                pos.cycle_loss, pos.cycle_batches = pos.cycle_loss + loss, pos.cycle_batches + 1
            if tuning:
                pos.tuned_steps += 1
                if pos.tuned_steps % t.train_steps == 0:
                    self._hyper_steps(batches)
            if self.records and loss is not None and pos.step % t.log_every == 0:
                self.records.tb.add_scalar("train/loss", loss, pos.step)
            self.progress.step(math.nan if loss is None else loss, self.space.values())
            # Distributed: one 8-byte all-reduce per step, so that a signal that reached one rank stops
            # every rank at the same step (the checkpoint gathers all ranks' states).
            if self.out_dir is not None and self.world.any(self._signal is not None):
                self.progress.close()
                self._check_finite(f"at step {pos.step} (epoch {pos.epoch + 1})")
                raise Interrupted(self._signal or "a signal on another rank", self.save_checkpoint())

    def _end_epoch(self, epoch_started: float) -> None:
        pos, t = self.position, self.config.train
        lr = self._model_optimizers()[0].param_groups[0]["lr"]
        for s in self.schedulers:
            s.step()
        self.method.sync_buffers()
        val = self.evaluate(self.valid_loader, "valid")
        test = self.evaluate(self.test_loader, "test")
        self._check_finite(f"after epoch {pos.epoch + 1} (step {pos.step})", val["loss"], test["loss"])
        values = self.space.values()
        epoch_loss, epoch_batches = self.world.sum([pos.epoch_loss, pos.epoch_batches])
        train_loss = epoch_loss / max(epoch_batches, 1)
        row = {"epoch": pos.epoch + 1, "step": pos.step, "lr": lr, "train_loss": train_loss,
               "val_loss": val["loss"], f"val_{self.metric}": val[self.metric], "test_loss": test["loss"],
               f"test_{self.metric}": test[self.metric], "epoch_seconds": time.time() - epoch_started, **values}
        improved = val["loss"] < pos.best_val
        if improved:
            pos.best_val, pos.best_epoch, pos.bad_epochs = val["loss"], pos.epoch + 1, 0
        else:
            pos.bad_epochs += 1
        self._last = row
        pos.epoch, pos.batch = pos.epoch + 1, 0
        pos.epoch_loss, pos.epoch_batches = 0.0, 0
        if t.early_stopping and pos.bad_epochs >= t.early_stopping:
            pos.stopped_early = True
        self.progress.end_epoch(self._epoch_line(row))
        best_model = sharding.model_state(self.model, self.sharded) if improved and self.sharded else None
        if self.records:
            self.records.metrics.write(row)
            tb = self.records.tb
            for key in ("train_loss", "val_loss", "test_loss", f"val_{self.metric}", f"test_{self.metric}", "lr"):
                tb.add_scalar(f"epoch/{key}", row[key], pos.step)
            if improved:
                # best.ckpt first, last.ckpt second: a crash in between leaves last.ckpt one epoch behind,
                # never ahead of a best it does not know about. best.ckpt holds weights, λ and ρ only (to
                # deploy or inspect); last.ckpt and previous.ckpt resume.
                checkpoint.save({"model": best_model or self.model.state_dict(), "space": self.space.state_dict(),
                                 "epoch": pos.epoch, "val_loss": val["loss"], "test_loss": test["loss"]},
                                self._path("checkpoints", "best.ckpt"))
        if improved:
            self._best_row = row
        if self.out_dir is not None:
            self.save_checkpoint()
        if self.on_epoch is not None:
            self.on_epoch(row)

    def _epoch_line(self, row: Dict[str, Any]) -> str:
        m = self.metric
        fmt = (lambda v: f"{100 * v:.2f}%") if m == "acc" else (lambda v: f"{v:.4g}")
        hypers = " ".join(f"{n}={row[n]:.3g}" for n in self.names)
        return (f"epoch {row['epoch']}/{self.config.train.epochs} step {row['step']}: train {row['train_loss']:.4f} "
                f"| val {row['val_loss']:.4f} ({m} {fmt(row[f'val_{m}'])}) | test {row['test_loss']:.4f} "
                f"({m} {fmt(row[f'test_{m}'])}) | {hypers} | {row['epoch_seconds']:.1f}s")

    def fit(self, resume: bool = False, overwrite: bool = False) -> Dict[str, Any]:
        """Train to the configured number of epochs (or early stop); returns the summary.

        resume: continue the run in the run directory from its last checkpoint; train.epochs is then the total
        to reach (at least the epochs done). overwrite: start a new run in a directory that holds files (the
        previous run's files are deleted). Without either, a directory that holds files is refused, and so is
        a directory another process is using."""
        if self.out_dir is None and (resume or overwrite):
            raise ValueError("resume, overwrite: need the run directory (out_dir)")
        self._started = time.time()
        self._last: Optional[Dict[str, Any]] = None
        self._best_row: Optional[Dict[str, Any]] = None
        clean_exit = False
        try:
            with contextlib.ExitStack() as stack:
                if self.out_dir is not None:
                    self._open_run_directory(stack, resume, overwrite)
                self._started = time.time()
                self.progress.message(self._start_line(resume))
                with self._signals():
                    while self.position.epoch < self.config.train.epochs and not self.position.stopped_early:
                        started = time.time()
                        self._run_epoch()
                        self._end_epoch(started)
                        if self.out_dir is not None and self.world.any(self._signal is not None):
                            clean_exit = True  # world.any is collective: every rank stops here, together
                            raise Interrupted(self._signal or "a signal on another rank",
                                              self._path("checkpoints", "last.ckpt"))
                summary = self._finish()
            clean_exit = True
            return summary
        finally:
            self.progress.close()
            self.world.close(clean_exit)

    def _open_run_directory(self, stack: contextlib.ExitStack, resume: bool, overwrite: bool) -> None:
        """Lock the run directory for the run's lifetime (rank 0), prepare it, load the checkpoint on resume,
        then write config.yaml and open the records: nothing is written before every check has passed."""
        error: Optional[BaseException] = None
        removed: List[str] = []
        if self.world.is_main:
            try:
                directory = stack.enter_context(RunDirectory(self.out_dir))
                removed = directory.prepare(resume, overwrite)
            except (RunDirectoryError, OSError) as err:
                error = err
        if self.world.any(error is not None):    # every rank stops when rank 0 cannot have the directory
            raise error if error is not None else RunDirectoryError(
                f"rank 0 could not open the run directory {self.out_dir}")
        if removed:
            self.progress.message(f"fastdstn: removed {len(removed)} temporary file(s) a killed run left: "
                                  f"{', '.join(os.path.basename(p) for p in removed)}")
        rows = self._resume() if resume else None
        done = self.position.epoch
        if resume and self.config.train.epochs < done:
            raise ConfigError(f"train.epochs: the run in {self.out_dir} has completed {done} epochs; with --resume "
                              f"train.epochs (--epochs) is the total to reach, so at least {done}, received "
                              f"{self.config.train.epochs}")
        if not self.world.is_main:
            return
        self.records = Records(self.out_dir, self.names, self.metric, rows,
                               purge_step=self.position.step if resume else None)
        stack.callback(self.records.close)
        write_text(self._path("config.yaml"), yaml.safe_dump(self.config.to_dict(), sort_keys=False))
        if resume:
            self._best_row = self._read_best_row()

    def _start_line(self, resume: bool) -> str:
        pos, epochs = self.position, self.config.train.epochs
        if resume and (pos.epoch >= epochs or pos.stopped_early):
            where = f"; the run has finished ({pos.epoch} of {epochs} epochs), nothing to train"
        elif resume:
            where = f"; resuming at epoch {pos.epoch + 1}, batch {pos.batch}"
        else:
            where = ""
        return (f"fastdstn: mode {self.mode} on {self.device} (ops: {self.op_backend()}); {describe(self.bundle)}; "
                + (f"{self.world.size} processes ({torch.distributed.get_backend()}), batch "
                   f"{self.config.data.batch_size} per process; " if self.world.distributed else "")
                + f"model {self.config.model.name} with {len(self.names)} hyperparameters{where}")

    def op_backend(self) -> str:
        """Which fastdstn.ops implementation the STN layers run on this device (reference, cpp, triton)."""
        from ..ops.dispatch import choose

        return choose("stn_linear", self.device.type)[0]

    def _read_best_row(self) -> Optional[Dict[str, Any]]:
        rows = [r for r in read_csv(self._path("metrics.csv"), required=("epoch",))
                if int(r["epoch"]) == self.position.best_epoch]
        return rows[-1] if rows else None

    def _finish(self) -> Dict[str, Any]:
        pos = self.position
        last = self._last
        if last is None and self.out_dir is not None:
            metrics = read_csv(self._path("metrics.csv"))
            last = metrics[-1] if metrics else None
        m = self.metric

        def pick(row):
            return None if row is None else {k: row.get(k) for k in ("epoch", "val_loss", f"val_{m}", "test_loss",
                                                                      f"test_{m}")}

        summary = {"name": self.config.name, "mode": self.mode, "data": describe(self.bundle),
                   "synthetic_data": bool(getattr(self.bundle, "synthetic", False)), "device": str(self.device),
                   "processes": self.world.size,
                   "op_backend": self.op_backend(),
                   "epochs": pos.epoch, "steps": pos.step, "hyper_steps": pos.hyper_step,
                   "wall_time_s": round(self._elapsed(), 2), "stopped_early": pos.stopped_early,
                   "skipped_updates": pos.skipped,
                   "final": pick(last), "best": pick(self._best_row),
                   "final_hypers": self.space.values(), "final_sigmas": self.space.scales(),
                   "initial_hypers": {h.name: h.init for h in self.space.hypers},
                   "hyper_ranges": {h.name: [h.low, h.high] for h in self.space.hypers}}
        if self.out_dir is not None and self.world.is_main:
            write_text(self._path("summary.json"), json.dumps(summary, indent=2))
            from .plot import plot_run

            summary["plot"] = plot_run(self.out_dir)
        return summary


def config_from_run(run_dir: str) -> RunConfig:
    """The configuration a run directory recorded (ConfigError naming config.yaml when it is damaged)."""
    path = os.path.join(run_dir, "config.yaml")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{run_dir}: no config.yaml; is it a fastdstn run directory?")
    try:
        return from_dict(read_file(path))
    except ConfigError as err:
        raise ConfigError(f"{path} is damaged or edited: {err}") from err
