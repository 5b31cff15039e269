"""Exact resume: epoch-end and mid-epoch (SIGTERM) checkpoints, SIGKILL, damaged checkpoints, replay."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from fastdstn.config import ConfigError
from fastdstn.train import CheckpointError, Interrupted, Schedule, Trainer, checkpoint, replay
from fastdstn.train.records import read_csv

from tiny_runs import tiny_config, tiny_values


def assert_same_state(a: Trainer, b: Trainer) -> None:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        if isinstance(sa[key], torch.Tensor):
            assert torch.equal(sa[key], sb[key]), f"{key} differs"
        else:   # a module's extra state, e.g. the language model's carried hidden states
            assert sa[key].keys() == sb[key].keys()
    assert torch.equal(a.space.lam, b.space.lam) and torch.equal(a.space.rho, b.space.rho)


def straight(tmp_path, mode="delta", epochs=2, **sections):
    trainer = Trainer(tiny_config(train={"mode": mode, "epochs": epochs}, **sections), str(tmp_path / "straight"),
                      progress=False)
    trainer.fit()
    return trainer


@pytest.mark.parametrize("mode", ["delta", "stn", "fixed"])
def test_one_epoch_then_resume_is_bit_identical_to_two_epochs(tmp_path, mode):
    reference = straight(tmp_path, mode)
    out = str(tmp_path / "split")
    Trainer(tiny_config(train={"mode": mode, "epochs": 1}), out, progress=False).fit()
    resumed = Trainer(tiny_config(train={"mode": mode, "epochs": 2}), out, progress=False)
    resumed.fit(resume=True)
    assert_same_state(reference, resumed)
    assert resumed.position.step == reference.position.step
    for name in ("schedule.csv", "metrics.csv"):
        a = [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in read_csv(str(tmp_path / "straight" / name))]
        b = [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in read_csv(os.path.join(out, name))]
        assert a == b, name


class SignalAt(Trainer):
    """Sends itself a real signal before training step `at` (0-based)."""
    at, signum = 5, signal.SIGTERM

    def _train_step(self, x, y):
        if self.position.step == self.at:
            os.kill(os.getpid(), self.signum)
        return super()._train_step(x, y)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_epoch_checkpoints_and_resumes_exactly(tmp_path, signum):
    reference = straight(tmp_path)
    out = str(tmp_path / "signalled")
    interrupted = SignalAt(tiny_config(), out, progress=False)
    interrupted.signum = signum
    before = signal.getsignal(signum)     # SIG_IGN when the suite runs in a background job
    with pytest.raises(Interrupted, match=signal.Signals(signum).name):
        interrupted.fit()
    saved = checkpoint.load(os.path.join(out, "checkpoints", "last.ckpt"))
    position = saved["ranks"][0]["position"]
    assert position["batch"] == SignalAt.at + 1 and position["epoch"] == 0
    assert signal.getsignal(signum) == before   # handlers restored
    resumed = Trainer(tiny_config(), out, progress=False)
    resumed.fit(resume=True)
    assert_same_state(reference, resumed)
    assert len(read_csv(os.path.join(out, "schedule.csv"))) == resumed.position.hyper_step


def test_language_model_resumes_exactly_mid_epoch(tmp_path):
    lm = dict(data={"name": "synthetic-tokens", "batch_size": 4, "eval_batch_size": 4, "bptt": 6,
                    "synthetic_size": [100, 40], "classes": 12},
              model={"name": "lstm", "options": {"size": 8, "layers": 2}})
    reference = straight(tmp_path, **lm)
    assert "ppl" in read_csv(str(tmp_path / "straight" / "metrics.csv"))[0].__repr__()
    out = str(tmp_path / "lm")
    with pytest.raises(Interrupted):
        SignalAt(tiny_config(**lm), out, progress=False).fit()
    resumed = Trainer(tiny_config(**lm), out, progress=False)
    resumed.fit(resume=True)
    assert_same_state(reference, resumed)


def test_resume_refuses_a_changed_configuration(tmp_path):
    out = str(tmp_path / "run")
    Trainer(tiny_config(train={"epochs": 1}), out, progress=False).fit()
    with pytest.raises(ConfigError, match=r"train.lr: 0.05 → 0.1"):
        Trainer(tiny_config(train={"epochs": 2, "lr": 0.1}), out, progress=False).fit(resume=True)


def test_resume_refuses_a_damaged_checkpoint(tmp_path):
    out = tmp_path / "run"
    Trainer(tiny_config(train={"epochs": 1}), str(out), progress=False).fit()
    path = out / "checkpoints" / "last.ckpt"
    path.write_bytes(path.read_bytes()[:-100])
    trainer = Trainer(tiny_config(train={"epochs": 2}), str(out), progress=False)
    lam = trainer.space.lam.detach().clone()
    with pytest.raises(CheckpointError, match="damaged"):
        trainer.fit(resume=True)
    assert torch.equal(trainer.space.lam, lam) and trainer.position.step == 0     # nothing loaded


def _cli(*args, cwd):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return [sys.executable, "-m", "fastdstn", "train", *args], dict(cwd=cwd, env=env, stdout=subprocess.PIPE,
                                                                    stderr=subprocess.STDOUT, text=True)


def test_sigkill_mid_run_resumes_from_the_last_checkpoint(tmp_path):
    values = tiny_values(train={"epochs": 4}, data={"synthetic_size": [384, 64]})
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(values))
    killed, whole = str(tmp_path / "killed"), str(tmp_path / "whole")
    cmd, kw = _cli(str(config), "--out", killed, cwd=tmp_path)
    proc = subprocess.Popen(cmd, **kw)
    ckpt = os.path.join(killed, "checkpoints", "last.ckpt")
    deadline = time.time() + 60
    while not os.path.exists(ckpt) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read()
    first = checkpoint.load(ckpt)["ranks"][0]["position"]
    assert 1 <= first["epoch"] < 4                       # killed after a checkpoint, before the end
    cmd, kw = _cli(str(config), "--out", killed, "--resume", cwd=tmp_path)
    done = subprocess.run(cmd, **kw, timeout=120)
    assert done.returncode == 0, done.stdout
    assert f"resuming at epoch {first['epoch'] + 1}" in done.stdout
    reference = Trainer(tiny_config(**values), whole, progress=False)    # uninterrupted, in this process
    reference.fit()
    a = checkpoint.load(os.path.join(killed, "checkpoints", "last.ckpt"))
    assert all(torch.equal(a["model"][k], v) for k, v in reference.model.state_dict().items())
    assert torch.equal(a["space"]["lam"], reference.space.lam)
    assert len(read_csv(os.path.join(killed, "metrics.csv"))) == 4


def test_replay_follows_the_recorded_schedule(tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config(), str(run), progress=False).fit()
    rows = read_csv(str(run / "schedule.csv"))
    seen = []

    class Watching(Trainer):
        def _train_step(self, x, y):
            loss = super()._train_step(x, y)
            seen.append((self.position.step, self.space.values()))
            return loss

    import fastdstn.train as train_pkg
    original = train_pkg.Trainer
    train_pkg.Trainer = Watching
    try:
        summary = replay(str(run), str(tmp_path / "replayed"), progress=False)
    finally:
        train_pkg.Trainer = original
    assert summary["mode"] == "fixed" and summary["epochs"] == 2 and summary["hyper_steps"] == 0
    schedule = Schedule(rows, list(seen[0][1]))
    initial = summary["initial_hypers"]
    for step, values in seen:                       # values used by the step after `step` completed steps
        expected = schedule.values_at(step) or initial
        assert values == pytest.approx(expected, rel=1e-5), step
    # every recorded hyper step but the last (made after the final training step) was followed
    assert len({tuple(v.values()) for _, v in seen}) == len(rows)
    # and the replay's own schedule.csv records each row it followed, where it took it up
    followed = read_csv(str(tmp_path / "replayed" / "schedule.csv"))
    assert [int(r["hyper_step"]) for r in followed] == list(range(1, len(rows)))
    for row in followed:
        source = rows[int(row["hyper_step"]) - 1]
        assert row["step"] == source["step"] and all(row[n] == source[n] for n in schedule.names)
