"""Trainer.for_model: a model, DataLoaders and loss of one's own get the run directory of the built-in models
(checkpoints with exact resume, schedule.csv, metrics.csv, TensorBoard, schedule.png) and export afterwards."""
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fastdstn
from fastdstn import Hyper, HyperSpace, Trainer, convert
from fastdstn.train import checkpoint
from fastdstn.train.records import read_csv

OPTIONS = dict(epochs=2, warmup_epochs=0, train_steps=2, valid_steps=1, lr=0.05, hyper_lr=0.02, device="cpu")


class Pair(nn.Module):
    """Takes its inputs as two tensors, model(x, scale)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 3))

    def forward(self, x, scale):
        return self.body(x * scale)


def own_run(out_dir, **options):
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
    return Trainer.for_model(model, space, train, valid, test, loss_fn=F.cross_entropy, out_dir=out_dir,
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


def test_own_data_and_options_are_checked(tmp_path):
    loader = DataLoader(TensorDataset(torch.randn(8, 6), torch.zeros(8, dtype=torch.long)), shuffle=True)
    space = HyperSpace([Hyper("drop", 0.2, 0.0, 0.9)])
    model = convert(nn.Sequential(nn.Linear(6, 2), nn.Dropout()), space, dropout={"1": "drop"})
    with pytest.raises(ValueError, match=r"train: a shuffling DataLoader needs generator=torch.Generator\(\)"):
        Trainer.for_model(model, space, loader, loader, loader, loss_fn=F.cross_entropy)
    with pytest.raises(fastdstn.config.ConfigError, match=r"train.'lrr'; did you mean train.'lr'"):
        own_run(None, lrr=0.1)
