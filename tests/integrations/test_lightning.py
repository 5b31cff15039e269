"""fastdstn.integrations.lightning against the real library: SelfTuning's steps inside Lightning's loop, its
global_step, logging and checkpoints (λ and ρ included), and a run continued from a checkpoint."""
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fastdstn import Hyper, HyperSpace, SelfTuning, convert

lightning = pytest.importorskip("lightning")
from fastdstn.integrations.lightning import SelfTuningModule  # noqa: E402


def module(mode="delta"):
    torch.manual_seed(0)
    space = HyperSpace([Hyper("drop", 0.2, 0.0, 0.9)])
    model = convert(nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 3)), space,
                    dropout={"2": "drop"})
    method = SelfTuning(model, space, mode, loss_fn=F.cross_entropy)
    x = torch.randn(80, 6)
    data = TensorDataset(x, x[:, :3].argmax(1))
    valid = DataLoader(torch.utils.data.Subset(data, range(64, 80)), batch_size=8)
    return SelfTuningModule(method, valid, train_steps=2, lr=0.05, hyper_lr=0.05), data, valid


def fit(mod, data, valid, root, epochs, ckpt_path=None):
    trainer = lightning.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, default_root_dir=str(root),
                                logger=lightning.pytorch.loggers.CSVLogger(str(root)), enable_progress_bar=False,
                                enable_model_summary=False)
    train = DataLoader(torch.utils.data.Subset(data, range(64)), batch_size=8)
    trainer.fit(mod, train, valid, ckpt_path=ckpt_path)
    return trainer


@pytest.mark.parametrize("mode", ["delta", "stn"])
def test_lightning_trains_logs_checkpoints_and_resumes(mode, tmp_path):
    mod, data, valid = module(mode)
    lam = mod.space.lam.detach().clone()
    trainer = fit(mod, data, valid, tmp_path, epochs=1)
    assert trainer.global_step > 0
    assert not torch.equal(mod.space.lam.detach(), lam), "the hyper steps moved λ"
    logged = trainer.logged_metrics
    assert "train/train_loss" in logged and "hyper/drop" in logged and "val/loss" in logged
    checkpoints = [os.path.join(d, f) for d, _, files in os.walk(tmp_path) for f in files if f.endswith(".ckpt")]
    assert len(checkpoints) == 1
    state = torch.load(checkpoints[0], weights_only=False)
    torch.testing.assert_close(state["state_dict"]["space.lam"], mod.space.lam.detach())

    resumed, _, _ = module(mode)
    steps = trainer.global_step
    again = fit(resumed, data, valid, tmp_path / "again", epochs=2, ckpt_path=checkpoints[0])
    assert again.global_step == 2 * steps
    assert not torch.equal(resumed.space.lam.detach(), state["state_dict"]["space.lam"])


def test_the_module_refuses_what_is_not_a_self_tuning():
    with pytest.raises(TypeError, match=r"method: expected a fastdstn.SelfTuning, received Linear"):
        SelfTuningModule(nn.Linear(2, 2), [])
