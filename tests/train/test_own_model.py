"""Trainer.for_model: a model, DataLoaders and loss of one's own get the run directory of the built-in models
(checkpoints with exact resume, schedule.csv, metrics.csv, TensorBoard, schedule.png) and export afterwards."""
import os
import signal

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fastdstn
from fastdstn import Hyper, HyperSpace, Trainer, convert
from fastdstn.config import ConfigError
from fastdstn.train import Interrupted, Schedule, checkpoint
from fastdstn.train.records import read_csv

OPTIONS = dict(epochs=2, warmup_epochs=0, train_steps=2, valid_steps=1, lr=0.05, hyper_lr=0.02, device="cpu")


class Pair(nn.Module):
    """Takes its inputs as two tensors, model(x, scale)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 3))

    def forward(self, x, scale):
        return self.body(x * scale)


def own_run(out_dir, trainer=Trainer, **options):
    torch.manual_seed(0)
    space = HyperSpace([Hyper("drop", 0.2, 0.0, 0.9), Hyper("wd", 1e-3, 0.0, 0.1, per_example=False)])
    model = convert(Pair(), space, dropout={"body.2": "drop"})
    g = torch.Generator().manual_seed(5)
    x = torch.randn(96, 6, generator=g)
    y = (x[:, :3].argmax(1))
    pairs = TensorDataset(x, torch.ones(96, 1), y)
    batches = lambda part, **kw: DataLoader(part, batch_size=16, collate_fn=lambda rows: (  # noqa: E731
        (torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])), torch.stack([r[2] for r in rows])),
        **kw)
    train = batches(torch.utils.data.Subset(pairs, range(64)), shuffle=True, generator=torch.Generator())
    valid, test = batches(torch.utils.data.Subset(pairs, range(64, 80))), batches(torch.utils.data.Subset(pairs,
                                                                                                       range(80, 96)))
    return trainer.for_model(model, space, train, valid, test, loss_fn=F.cross_entropy, out_dir=out_dir,
                             weight_decay="wd", progress=False, **{**OPTIONS, **options})


def test_an_own_model_gets_the_run_directory_and_exports(tmp_path):
    out = str(tmp_path / "mine")
    trainer = own_run(out)
    summary = trainer.fit()
    assert summary["epochs"] == 2 and summary["hyper_steps"] == 4 and summary["name"] == "mine"
    for name in ("checkpoints/last.ckpt", "checkpoints/best.ckpt", "schedule.png", "summary.json", "config.yaml"):
        assert os.path.isfile(os.path.join(out, name)), name
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(out, "tensorboard")))
    assert len(read_csv(os.path.join(out, "schedule.csv"))) == 4
    assert [int(r["epoch"]) for r in read_csv(os.path.join(out, "metrics.csv"))] == [1, 2]
    plain = fastdstn.export(trainer.method)
    assert plain.body[2].p == pytest.approx(trainer.space.value("drop"))
    x, scale = torch.randn(4, 6), torch.ones(4, 1)
    with torch.no_grad():
        torch.testing.assert_close(plain(x, scale), trainer.method.predict((x, scale)))


def test_an_own_run_resumes_exactly(tmp_path):
    whole = own_run(str(tmp_path / "whole"))
    whole.fit()
    first = own_run(str(tmp_path / "resumed"), epochs=1)
    first.fit()
    resumed = own_run(str(tmp_path / "resumed"))
    resumed.fit(resume=True)
    state = checkpoint.load(str(tmp_path / "resumed" / "checkpoints" / "last.ckpt"))
    assert all(torch.equal(state["model"][k], v) for k, v in whole.model.state_dict().items())
    assert torch.equal(state["space"]["lam"], whole.space.lam.detach())


def rows_without_times(path):
    return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in read_csv(path)]


class TerminatedAt(Trainer):
    """Sends itself SIGTERM before training step `at` (0-based): the mid-epoch checkpoint of a stopped run."""
    at = 2

    def _train_step(self, x, y):
        if self.position.step == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return super()._train_step(x, y)


def test_an_own_run_stopped_mid_epoch_resumes_exactly(tmp_path):
    whole = own_run(str(tmp_path / "whole"))
    whole.fit()
    out = str(tmp_path / "stopped")
    with pytest.raises(Interrupted, match="SIGTERM"):
        own_run(out, trainer=TerminatedAt).fit()
    position = checkpoint.load(os.path.join(out, "checkpoints", "last.ckpt"))["ranks"][0]["position"]
    assert (position["epoch"], position["batch"]) == (0, TerminatedAt.at + 1)
    resumed = own_run(out)
    resumed.fit(resume=True)
    assert all(torch.equal(a, b) for a, b in zip(whole.model.state_dict().values(),
                                                  resumed.model.state_dict().values()))
    assert torch.equal(whole.space.lam, resumed.space.lam) and torch.equal(whole.space.rho, resumed.space.rho)
    for name in ("schedule.csv", "metrics.csv"):
        assert rows_without_times(os.path.join(out, name)) == rows_without_times(
            os.path.join(tmp_path / "whole", name)), name


class Watching(Trainer):
    """Records the hyperparameter values each training step runs with."""
    seen = []

    def _train_step(self, x, y):
        loss = super()._train_step(x, y)
        self.seen.append((self.position.step, self.space.values()))
        return loss


def test_an_own_run_replays_through_the_python_api(tmp_path):
    run = str(tmp_path / "mine")
    own_run(run).fit()
    recorded = read_csv(os.path.join(run, "schedule.csv"))
    Watching.seen = []
    replayed = own_run(str(tmp_path / "replayed"), trainer=Watching, replay=run)
    summary = replayed.fit()
    assert summary["mode"] == "fixed" and summary["hyper_steps"] == 0 and summary["epochs"] == 2
    schedule = Schedule(recorded, ["drop", "wd"])
    for step, values in Watching.seen:          # values used by the step after `step` completed steps
        assert values == pytest.approx(schedule.values_at(step) or summary["initial_hypers"], rel=1e-5), step
    followed = read_csv(str(tmp_path / "replayed" / "schedule.csv"))
    assert [int(r["hyper_step"]) for r in followed] == list(range(1, len(recorded)))
    assert all(row[n] == recorded[int(row["hyper_step"]) - 1][n] for row in followed for n in ("drop", "wd"))
    with pytest.raises(ConfigError, match="train.mode: replaying a schedule needs mode 'fixed', received 'delta'"):
        own_run(str(tmp_path / "refused"), replay=run, mode="delta")
    with pytest.raises(FileNotFoundError, match="no schedule.csv to replay"):
        own_run(str(tmp_path / "refused"), replay=str(tmp_path / "nothing"))


def test_own_data_and_options_are_checked(tmp_path):
    loader = DataLoader(TensorDataset(torch.randn(8, 6), torch.zeros(8, dtype=torch.long)), shuffle=True)
    space = HyperSpace([Hyper("drop", 0.2, 0.0, 0.9)])
    model = convert(nn.Sequential(nn.Linear(6, 2), nn.Dropout()), space, dropout={"1": "drop"})
    with pytest.raises(ValueError, match=r"train: a shuffling DataLoader needs generator=torch.Generator\(\)"):
        Trainer.for_model(model, space, loader, loader, loader, loss_fn=F.cross_entropy)
    with pytest.raises(fastdstn.config.ConfigError, match=r"train.'lrr'; did you mean train.'lr'"):
        own_run(None, lrr=0.1)
