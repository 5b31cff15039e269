"""The training loop: every mode runs and records its schedule; warm-up, schedules, early stopping."""
import json
import math
import os

import pytest
import torch

from fastdstn.models import BUILDERS
from fastdstn.nn import response_parameters
from fastdstn.train import Trainer
from fastdstn.train.records import read_csv

from tiny_runs import tiny_config

STEPS_PER_EPOCH = 128 // 16


@pytest.mark.parametrize("mode", ["delta", "centered", "stn"])
def test_tuned_modes_record_the_schedule(tmp_path, mode):
    out = str(tmp_path / mode)
    trainer = Trainer(tiny_config(train={"mode": mode}), out, progress=False)
    before = trainer.space.values()
    summary = trainer.fit()
    schedule = read_csv(os.path.join(out, "schedule.csv"))
    # a hyper step after every 2 training steps, 2 epochs of 8 steps
    assert summary["hyper_steps"] == len(schedule) == 2 * STEPS_PER_EPOCH // 2
    assert [r["step"] for r in schedule] == list(range(2, 2 * STEPS_PER_EPOCH + 1, 2))
    for name in trainer.names:
        assert all(math.isfinite(r[name]) and r[f"sigma_{name}"] > 0 for r in schedule)
    assert schedule[-1]["dropout_in"] == pytest.approx(trainer.space.value("dropout_in"))
    assert trainer.space.values() != before                       # λ moved
    metrics = read_csv(os.path.join(out, "metrics.csv"))
    assert [r["epoch"] for r in metrics] == [1, 2]
    assert all(0 <= r["val_acc"] <= 1 and math.isfinite(r["test_loss"]) for r in metrics)
    with open(os.path.join(out, "summary.json")) as f:
        saved = json.load(f)
    assert saved["final"]["val_loss"] == metrics[-1]["val_loss"] and saved["steps"] == 2 * STEPS_PER_EPOCH
    assert saved["synthetic_data"] is True and saved["wall_time_s"] > 0
    assert os.path.getsize(os.path.join(out, "schedule.png")) > 10_000
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(out, "tensorboard")))
    assert os.path.exists(os.path.join(out, "config.yaml"))


def test_fixed_mode_trains_the_general_network_at_fixed_values(tmp_path):
    trainer = Trainer(tiny_config(train={"mode": "fixed"}), str(tmp_path), progress=False)
    lam = trainer.space.lam.detach().clone()
    response = [p.detach().clone() for p in response_parameters(trainer.model)]
    general = trainer.model.net[1].weight.detach().clone()
    summary = trainer.fit()
    assert summary["hyper_steps"] == 0 and read_csv(str(tmp_path / "schedule.csv")) == []
    assert torch.equal(trainer.space.lam, lam)
    assert all(torch.equal(a, b) for a, b in zip(response, response_parameters(trainer.model)))
    assert not torch.equal(trainer.model.net[1].weight, general)


def test_warmup_epochs_run_training_steps_only(tmp_path):
    trainer = Trainer(tiny_config(train={"warmup_epochs": 1, "epochs": 2}), str(tmp_path), progress=False)
    trainer.fit()
    steps = [r["step"] for r in read_csv(str(tmp_path / "schedule.csv"))]
    assert steps[0] == STEPS_PER_EPOCH + 2 and len(steps) == STEPS_PER_EPOCH // 2


@pytest.mark.parametrize("schedule, expected", [
    ({"lr_schedule": "step", "lr_step_size": 1, "lr_gamma": 0.5}, [0.05, 0.025, 0.0125]),
    ({"lr_schedule": "multistep", "lr_milestones": [2], "lr_gamma": 0.1}, [0.05, 0.05, 0.005]),
    ({"lr_schedule": "cosine", "lr_min": 0.0}, [0.05, 0.0375, 0.0125]),
])
def test_learning_rate_schedules(tmp_path, schedule, expected):
    trainer = Trainer(tiny_config(train={"epochs": 3, **schedule}, data={"synthetic_size": [32, 16]}), None,
                      progress=False)
    records = []
    trainer._end_epoch = lambda started, end=trainer._end_epoch: (records.append(
        trainer.optimizers.general.param_groups[0]["lr"]), end(started))
    trainer.fit()
    assert records == pytest.approx(expected)
    assert trainer.optimizers.response.param_groups[0]["lr"] == trainer.optimizers.general.param_groups[0]["lr"]


def test_early_stopping_on_validation_loss(tmp_path, monkeypatch):
    trainer = Trainer(tiny_config(train={"epochs": 10, "early_stopping": 2}), str(tmp_path), progress=False)
    monkeypatch.setattr(trainer, "evaluate", lambda loader, stream: {"loss": 1.0, "acc": 0.5})
    summary = trainer.fit()
    assert summary["stopped_early"] and summary["epochs"] == 3 and summary["best"]["epoch"] == 1


def test_gradient_clipping_bounds_the_step(tmp_path):
    trainer = Trainer(tiny_config(train={"clip_grad": 1e-3, "momentum": 0.0, "lr": 1.0, "epochs": 1}), None,
                      progress=False)
    before = [p.detach().clone() for p in trainer.optimizers.general.param_groups[0]["params"]]
    x, y = next(iter(trainer.bundle.train.batches(0)))
    trainer.method.train_step(x, y, trainer.optimizers)
    after = trainer.optimizers.general.param_groups[0]["params"]
    moved = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(after, before)))
    assert moved <= 1e-3 * (1 + 1e-4)


def test_without_a_run_directory_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary = Trainer(tiny_config(train={"epochs": 1}), None, progress=False).fit()
    assert summary["final"]["val_loss"] > 0 and os.listdir(tmp_path) == []


def test_every_model_builds():
    assert set(BUILDERS) == {"linear", "mlp", "simple-cnn", "alexnet", "vgg16", "resnet18", "lstm", "gpt"}
