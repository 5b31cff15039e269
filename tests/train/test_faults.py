"""Faults a run survives with nothing lost: divergence in each sub-step, a full disk, an unwritable run
directory, a second Ctrl-C, two writers. Each ends with one line and an exit status, and the run resumes to
exactly what an uninterrupted run computes."""
import contextlib
import errno
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from fastdstn.cli import EXIT_CHECKPOINT, EXIT_DIVERGED, EXIT_FILES, EXIT_INTERRUPTED, main
from fastdstn.nn import general_parameters, response_parameters
from fastdstn.train import Diverged, Trainer, checkpoint, files
from fastdstn.train.records import read_csv

from tiny_runs import tiny_config, tiny_values

STEPS_PER_EPOCH = 128 // 16


class PoisonAt(Trainer):
    """A NaN enters the gradients of one sub-step (`target`) during training step `at` (1-based), or, for the hyper
    step, the hyper steps that follow it."""
    target, at, times = "general", STEPS_PER_EPOCH + 3, 1

    def _train_step(self, x, y):
        if self.position.step + 1 == self.at:
            param = {"general": lambda: general_parameters(self.model)[0],
                     "joint": lambda: general_parameters(self.model)[0],
                     "response": lambda: response_parameters(self.model)[0],
                     "hyper": lambda: self.space.lam}[self.target]()
            left = [self.times]

            def nan(grad):
                left[0] -= 1
                if left[0] == 0:
                    handle.remove()
                return grad * math.nan

            handle = param.register_hook(nan)
        return super()._train_step(x, y)


def finite_everywhere(out):
    """No NaN or infinity in any checkpoint or record of the run directory."""
    for name in ("last.ckpt", "previous.ckpt", "best.ckpt"):
        path = out / "checkpoints" / name
        if path.exists():
            state = checkpoint.load(str(path))
            tensors = [*state["model"].values(), *state["space"].values()]
            assert all(torch.isfinite(t).all() for t in tensors if t.is_floating_point()), name
    for name in ("schedule.csv", "metrics.csv"):
        for row in read_csv(str(out / name)):
            assert all(math.isfinite(v) for v in row.values() if isinstance(v, float)), (name, row)


@pytest.mark.parametrize("mode, target", [("delta", "general"), ("delta", "response"), ("centered", "response"),
                                          ("delta", "hyper"), ("stn", "joint")])
def test_divergence_in_any_sub_step_stops_the_run_naming_it_and_saves_nothing_non_finite(tmp_path, mode, target):
    out = tmp_path / "run"
    trainer = PoisonAt(tiny_config(train={"mode": mode}), str(out), progress=False)
    trainer.target = target
    with pytest.raises(Diverged) as err:
        trainer.fit()
    step = "hyper step 6 (after training step 12)" if target == "hyper" else f"training step {PoisonAt.at}"
    assert f"the {target} sub-step of {step} (epoch 2): gradient of " in str(err.value)
    assert "it was not applied and nothing non-finite was saved" in str(err.value)
    assert "train.skip_nonfinite" in str(err.value)
    finite_everywhere(out)
    assert checkpoint.load(str(out / "checkpoints" / "last.ckpt"))["ranks"][0]["position"]["epoch"] == 1


def test_a_diverged_run_resumes_with_skip_nonfinite(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Diverged):
        PoisonAt(tiny_config(), str(out), progress=False).fit()
    trainer = PoisonAt(tiny_config(train={"skip_nonfinite": 1}), str(out), progress=False)
    assert trainer.fit(resume=True)["skipped_updates"] == 1 and trainer.position.epoch == 2
    finite_everywhere(out)


def test_weights_that_overflow_at_an_epoch_end_are_never_saved(tmp_path):
    class Overflows(Trainer):
        def _train_step(self, x, y):
            loss = super()._train_step(x, y)
            if self.position.step + 1 == 2 * STEPS_PER_EPOCH:      # the last step of epoch 2
                with torch.no_grad():
                    general_parameters(self.model)[0].mul_(1e38).mul_(1e38)
            return loss

    out = tmp_path / "run"
    with pytest.raises(Diverged, match=r"the network or its losses \(validation .*\) not finite after epoch 2 "):
        # train_steps 3: no hyper step right after step 16, which would catch the overflow first
        Overflows(tiny_config(train={"epochs": 3, "train_steps": 3}), str(out), progress=False).fit()
    finite_everywhere(out)
    assert len(read_csv(str(out / "metrics.csv"))) == 1
    assert checkpoint.load(str(out / "checkpoints" / "last.ckpt"))["ranks"][0]["position"]["epoch"] == 1


@pytest.mark.parametrize("target", ["general", "response", "hyper"])
def test_skip_nonfinite_skips_and_logs_the_update_and_the_run_goes_on(tmp_path, capsys, target):
    out = tmp_path / "run"
    trainer = PoisonAt(tiny_config(train={"skip_nonfinite": 2}), str(out), progress=False)
    trainer.target, trainer.times = target, 2
    summary = trainer.fit()
    assert summary["skipped_updates"] == 2 and summary["epochs"] == 2
    printed = capsys.readouterr().out
    assert printed.count(f"fastdstn: skipped the {target} sub-step of ") == 2
    kind = "hyper" if target == "hyper" else "train"
    assert f"(2 {kind} updates in a row of at most 2)" in printed
    finite_everywhere(out)


def test_skip_nonfinite_stops_after_that_many_in_a_row(tmp_path):
    trainer = PoisonAt(tiny_config(train={"skip_nonfinite": 2}), str(tmp_path / "run"), progress=False)
    trainer.times = 3
    with pytest.raises(Diverged, match="general sub-step of training step 13 .* after 2 skipped train updates in a"):
        trainer.fit()


def test_the_audits_diverging_run_now_stops_as_diverged(tmp_path, capsys):
    """`fastdstn train uci-linear --set train.lr=0.3` saved NaN response weights and died on a ValueError."""
    out = tmp_path / "uci"
    assert main(["train", "uci-linear", "--epochs", "3", "--set", "train.lr=0.3", "--out", str(out),
                 "--no-progress"]) == EXIT_DIVERGED
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("fastdstn: diverged: the response sub-step of training step ") and "(epoch 1)" in err[-1]
    finite_everywhere(out)


def test_a_huge_hyper_lr_keeps_sigma_finite_and_positive(tmp_path):
    """`--set train.hyper_lr=100` drove σ to 0 and then NaN. The response loss may still overflow at the extreme
    λ this reaches (epoch 3 since b_r starts like b_g): the run then stops cleanly (exit 4), and σ stays in (0, ∞)
    in every recorded row either way."""
    out = tmp_path / "run"
    assert main(["train", "uci-linear", "--epochs", "4", "--set", "train.hyper_lr=100", "--out", str(out),
                 "--no-progress"]) in (0, 4)
    rows = read_csv(str(out / "schedule.csv"))
    assert rows and all(0 < r[k] < math.inf for r in rows for k in r if k.startswith("sigma_"))


def _straight(tmp_path, epochs):
    trainer = Trainer(tiny_config(train={"epochs": epochs}), str(tmp_path / "straight"), progress=False)
    trainer.fit()
    return trainer


def _same_as(straight, out, straight_dir=None):
    state = checkpoint.load(str(out / "checkpoints" / "last.ckpt"))
    assert all(torch.equal(state["model"][k], v) for k, v in straight.model.state_dict().items())
    assert torch.equal(state["space"]["lam"], straight.space.lam)
    a = [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in read_csv(str(out / "metrics.csv"))]
    b = [{k: v for k, v in r.items() if k != "epoch_seconds"}
         for r in read_csv(str((straight_dir or out.parent / "straight") / "metrics.csv"))]
    assert a == b


@pytest.fixture
def tiny_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_values(train={"epochs": 3})))
    return str(path)


@pytest.mark.parametrize("failing_write", [2, 4, 7])
def test_a_full_disk_stops_with_one_line_and_the_run_resumes_to_the_same_result(tmp_path, tiny_file, capsys,
                                                                                  monkeypatch, failing_write):
    straight = _straight(tmp_path, 3)
    out = tmp_path / "run"
    real, writes = files.replace_atomically, []

    def full_disk(path, chunks, keep_previous=None):
        writes.append(path)
        if len(writes) == failing_write:
            raise files.with_path(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), path)
        return real(path, chunks, keep_previous)

    monkeypatch.setattr(files, "replace_atomically", full_disk)
    for module in ("fastdstn.train.checkpoint", "fastdstn.train.records"):
        monkeypatch.setattr(f"{module}.replace_atomically", full_disk)
    monkeypatch.setattr("fastdstn.train.trainer.write_text", lambda p, t: full_disk(p, [t.encode()]))
    assert main(["train", tiny_file, "--out", str(out), "--no-progress"]) == EXIT_FILES
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"fastdstn: cannot read or write a file ({writes[-1]}): No space left on device"]
    monkeypatch.undo()
    resume = ["--resume"] if (out / "checkpoints" / "last.ckpt").exists() else ["--overwrite"]
    assert main(["train", tiny_file, "--out", str(out), "--no-progress", *resume]) == 0
    _same_as(straight, out)


@contextlib.contextmanager
def tmpfs(path, options):
    """A small tmpfs at `path` (root only; skips where mounting is not permitted)."""
    path.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                                           capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_really_full_disk(tmp_path, tiny_file, capsys):
    straight = _straight(tmp_path, 3)
    with tmpfs(tmp_path / "disk", "size=100k") as disk:
        out = disk / "run"
        assert main(["train", tiny_file, "--out", str(out), "--no-progress"]) == EXIT_FILES
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].endswith("No space left on device"), err
        subprocess.run(["mount", "-o", "remount,size=10m", str(disk)], check=True)
        assert main(["train", tiny_file, "--out", str(out), "--no-progress", "--resume"]) == 0
        _same_as(straight, out, tmp_path / "straight")


def test_an_unwritable_run_directory_is_one_line(tmp_path, tiny_file, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["train", tiny_file, "--out", str(blocker / "run")]) == EXIT_FILES
    assert capsys.readouterr().err.strip().splitlines() == [
        f"fastdstn: cannot read or write a file ({blocker / 'run'}): Not a directory"]
    with tmpfs(tmp_path / "ro", "ro,size=64k") as readonly:
        assert main(["train", tiny_file, "--out", str(readonly / "run")]) == EXIT_FILES
        assert capsys.readouterr().err.strip().splitlines() == [
            f"fastdstn: cannot read or write a file ({readonly / 'run'}): Read-only file system"]


def test_a_second_ctrl_c_stops_at_once_with_one_line_and_the_run_resumes(tmp_path, tiny_file, capsys, monkeypatch):
    straight = _straight(tmp_path, 3)
    out = tmp_path / "run"

    class TwoInterrupts(Trainer):
        def _train_step(self, x, y):
            if self.position.step == STEPS_PER_EPOCH + 2:
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)
            return super()._train_step(x, y)

    monkeypatch.setattr("fastdstn.train.Trainer", TwoInterrupts)
    assert main(["train", tiny_file, "--out", str(out), "--no-progress"]) == EXIT_INTERRUPTED
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastdstn: stopped by an interrupt"), err
    monkeypatch.undo()
    assert main(["train", tiny_file, "--out", str(out), "--no-progress", "--resume"]) == 0
    _same_as(straight, out)


def test_two_writers_never_share_a_run_directory(tmp_path, capsys):
    values = tiny_values(train={"epochs": 200}, data={"synthetic_size": [512, 64]})
    config = tmp_path / "long.yaml"
    config.write_text(yaml.safe_dump(values))
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "fastdstn", "train", str(config), "--out", str(out),
                              "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (out / "checkpoints" / "last.ckpt").exists() and time.time() < deadline:
            time.sleep(0.05)
        for extra in ([], ["--resume"], ["--overwrite"]):
            assert main(["train", str(config), "--out", str(out), *extra]) == EXIT_CHECKPOINT
            assert f"is in use by process {first.pid} on " in capsys.readouterr().err
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=120)
    assert first.returncode == EXIT_INTERRUPTED, first.stderr.read()
    epochs = [r["epoch"] for r in read_csv(str(out / "metrics.csv"))]
    assert epochs == list(range(1, len(epochs) + 1)), "one writer's rows, in order"
