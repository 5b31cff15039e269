"""The run directory: one owner at a time, no run silently replaced, previous.ckpt when last.ckpt is damaged,
temporaries of a killed writer removed, damaged records refused, and what --epochs means with --resume."""
import os

import pytest
import torch
import yaml

from fastdstn.config import ConfigError
from fastdstn.train import CheckpointError, RunDirectoryError, Trainer, checkpoint
from fastdstn.train.records import read_csv
from fastdstn.train.rundir import RunDirectory

from tiny_runs import tiny_config

FILES = ("config.yaml", "metrics.csv", "schedule.csv", "summary.json", os.path.join("checkpoints", "last.ckpt"))


def run(out, resume=False, overwrite=False, **train):
    trainer = Trainer(tiny_config(train={"epochs": 1, **train}), str(out), progress=False)
    trainer.fit(resume=resume, overwrite=overwrite)
    return trainer


def snapshot(out):
    return {name: (out / name).read_bytes() for name in FILES if (out / name).exists()}


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path):
    out = tmp_path / "run"
    with RunDirectory(str(out)):                  # another process's run, as far as the lock is concerned
        for resume in (False, True):
            with pytest.raises(RunDirectoryError, match=f"is in use by process {os.getpid()} on "):
                run(out, resume=resume)
    assert os.listdir(out) == [".lock"], "the refused run wrote nothing"
    run(out)                                      # the lock went with its holder


def test_the_lock_is_released_when_a_run_fails(tmp_path):
    out = tmp_path / "run"
    trainer = Trainer(tiny_config(train={"epochs": 1}), str(out), progress=False)
    trainer._run_epoch = lambda: (_ for _ in ()).throw(RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit()
    with RunDirectory(str(out)):
        pass


def test_a_new_run_never_replaces_an_existing_one_without_overwrite(tmp_path):
    out = tmp_path / "run"
    run(out)
    before = snapshot(out)
    with pytest.raises(RunDirectoryError, match=r"is not empty \(checkpoints, config.yaml, metrics.csv, .*--resume"):
        run(out, lr=0.1)
    assert snapshot(out) == before, "nothing of the existing run changed"
    (out / "notes.txt").write_text("mine")
    run(out, overwrite=True, lr=0.1)
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["lr"] == 0.1
    assert len(read_csv(str(out / "metrics.csv"))) == 1
    assert not (out / "checkpoints" / "previous.ckpt").exists(), "the old run's checkpoints are gone"
    assert (out / "notes.txt").read_text() == "mine", "files that are not the run's are left alone"
    with pytest.raises(RunDirectoryError, match="pass one of them"):
        run(out, resume=True, overwrite=True)


def test_resume_keeps_the_finished_runs_config_and_epochs_is_the_total(tmp_path):
    out = tmp_path / "run"
    run(out, epochs=2)
    config = (out / "config.yaml").read_bytes()
    with pytest.raises(ConfigError, match="has completed 2 epochs; .* at least 2, received 1"):
        run(out, resume=True, epochs=1)
    assert (out / "config.yaml").read_bytes() == config
    finished = run(out, resume=True, epochs=2)              # nothing left to train
    assert finished.position.epoch == 2 and len(read_csv(str(out / "metrics.csv"))) == 2
    longer = run(out, resume=True, epochs=3)
    assert longer.position.epoch == 3 and yaml.safe_load((out / "config.yaml").read_text())["train"]["epochs"] == 3


def test_a_cosine_schedule_does_not_resume_with_other_epochs(tmp_path):
    out = tmp_path / "run"
    run(out, epochs=2, lr_schedule="cosine")
    with pytest.raises(ConfigError, match="cosine schedule .* anneals over its 2 epochs; it cannot resume with 3"):
        run(out, resume=True, epochs=3, lr_schedule="cosine")


def test_a_damaged_last_checkpoint_resumes_from_the_previous_one(tmp_path, capsys):
    straight = run(tmp_path / "straight", epochs=3)
    out = tmp_path / "run"
    run(out, epochs=2)
    previous = checkpoint.load(str(out / "checkpoints" / "previous.ckpt"))
    assert previous["ranks"][0]["position"]["epoch"] == 1, "previous.ckpt is the epoch before last.ckpt"
    last = out / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:-10])
    resumed = Trainer(tiny_config(train={"epochs": 3}), str(out), progress=True)
    resumed.fit(resume=True)
    err = capsys.readouterr()
    assert "last.ckpt is damaged: truncated" in err.err + err.out and "resuming from" in err.err + err.out
    assert all(torch.equal(a, b) for a, b in zip(straight.model.state_dict().values(),
                                                  resumed.model.state_dict().values()))
    assert torch.equal(straight.space.lam, resumed.space.lam)
    assert [r["epoch"] for r in read_csv(str(out / "metrics.csv"))] == [1, 2, 3]


def test_when_both_checkpoints_are_damaged_both_are_named(tmp_path):
    out = tmp_path / "run"
    run(out, epochs=2)
    for name in ("last.ckpt", "previous.ckpt"):
        (out / "checkpoints" / name).write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="last.ckpt is damaged.*; and .*previous.ckpt is damaged"):
        run(out, resume=True, epochs=3)


def test_best_checkpoint_holds_weights_only_and_says_so(tmp_path):
    out = tmp_path / "run"
    run(out)
    best = checkpoint.load(str(out / "checkpoints" / "best.ckpt"))
    assert set(best) == {"model", "space", "epoch", "val_loss", "test_loss"}
    os.remove(out / "checkpoints" / "last.ckpt")
    with pytest.raises(CheckpointError, match="not found .*best.ckpt holds weights only"):
        run(out, resume=True, epochs=2)


def test_torch_load_reads_a_runs_checkpoints_with_its_default_weights_only(tmp_path):
    out = tmp_path / "run"
    run(out, epochs=2)
    for name in ("last.ckpt", "previous.ckpt", "best.ckpt"):
        path = str(out / "checkpoints" / name)
        plain, checked = torch.load(path), checkpoint.load(path)
        assert plain.keys() == checked.keys() and torch.equal(plain["space"]["lam"], checked["space"]["lam"]), name


def test_temporaries_of_a_killed_writer_are_removed_on_start(tmp_path, capsys):
    out = tmp_path / "run"
    run(out)
    for name in ("checkpoints/.tmp-1a2b3c4d-last.ckpt", ".tmp-5e6f7a8b-config.yaml"):
        (out / name).write_bytes(b"half")
    run(out, resume=True, epochs=2)
    assert "removed 2 temporary file(s)" in capsys.readouterr().out
    assert not [f for d in (out, out / "checkpoints") for f in os.listdir(d) if f.startswith(".tmp-")]


@pytest.mark.parametrize("name, damage, message", [
    ("metrics.csv", lambda text: "garbage\n", "header is not this run's"),
    ("metrics.csv", lambda text: text.splitlines()[0] + "\n", "holds 0 rows, but the checkpoint has seen 1"),
    ("schedule.csv", lambda text: text.replace("0.", "x.", 1), "is damaged at line 2"),
    ("schedule.csv", None, "is missing, but the checkpoint has seen 4 rows"),
    ("metrics.csv", lambda text: "\0" * 10, "is damaged"),
])
def test_damaged_records_stop_a_resume_before_anything_is_written(tmp_path, name, damage, message):
    out = tmp_path / "run"
    run(out)
    path = out / name
    if damage is None:
        path.unlink()
    else:
        path.write_text(damage(path.read_text()))
    before = snapshot(out)
    with pytest.raises(RunDirectoryError, match=message):
        run(out, resume=True, epochs=2)
    assert snapshot(out) == before


def test_rows_a_killed_run_wrote_after_its_checkpoint_are_dropped(tmp_path):
    out = tmp_path / "run"
    run(out)
    with open(out / "schedule.csv", "a") as f:
        f.write("5,10,1.25,0.5,0.5,0.1,0.1,1.0,1.")      # half a row, as a kill leaves it
    run(out, resume=True, epochs=2)
    assert [r["hyper_step"] for r in read_csv(str(out / "schedule.csv"))] == list(range(1, 9))
