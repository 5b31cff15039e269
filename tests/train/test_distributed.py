"""Data-parallel training under torchrun: 2 CPU processes on gloo (127.0.0.1, `torchrun --standalone`).

Every rank must end with the same parameters and λ, ρ (DDP in both sub-steps, the hyper step's all-reduce)
while drawing its own perturbations; rank 0 alone writes the run directory; a run stopped after one epoch
and resumed with `--resume` ends bit-identical to a straight run; a checkpoint of 2 processes is refused by
a run of 1.
"""
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from fastdstn.train import Trainer, checkpoint
from fastdstn.train.records import read_csv
from tiny_runs import tiny_config, tiny_values

pytestmark = pytest.mark.slow
WORKER = os.path.join(os.path.dirname(__file__), "ddp_worker.py")
LM = dict(data={"name": "synthetic-tokens", "batch_size": 4, "eval_batch_size": 4, "bptt": 6,
                "synthetic_size": [200, 80], "classes": 12},
          model={"name": "lstm", "options": {"size": 8, "layers": 2}})


def torchrun(*args: str, cwd: str) -> str:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def train_two_ranks(values: dict, out: str) -> list:
    torchrun(WORKER, json.dumps(values), out, cwd=os.path.dirname(out))
    return [torch.load(os.path.join(out, f"rank{r}.pt"), weights_only=False) for r in (0, 1)]


def assert_equal_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """The tiny Δ-STN run, 2 epochs on 2 processes."""
    out = str(tmp_path_factory.mktemp("ddp") / "straight")
    return out, train_two_ranks(tiny_values(), out)


def test_ranks_hold_the_same_model_and_hyperparameters(straight_run):
    out, (rank0, rank1) = straight_run
    assert_equal_tensors(rank0["model"], rank1["model"])
    assert_equal_tensors(rank0["space"], rank1["space"])
    assert rank0["summary"]["final"] == rank1["summary"]["final"]     # metrics reduced over the ranks
    assert not torch.equal(rank0["draw"], rank1["draw"])              # independent perturbations
    # Each rank trained on half of the 128 examples per epoch, 16 per batch.
    assert rank0["train_batches"] == rank1["train_batches"] == 4
    assert rank0["summary"]["steps"] == 8 and rank0["summary"]["processes"] == 2


def test_the_loss_falls_and_only_rank_0_writes(straight_run):
    out, _ = straight_run
    metrics = read_csv(os.path.join(out, "metrics.csv"))
    assert [int(r["epoch"]) for r in metrics] == [1, 2]              # one writer, one row per epoch
    assert float(metrics[1]["train_loss"]) < float(metrics[0]["train_loss"])
    assert float(metrics[1]["val_loss"]) < float(metrics[0]["val_loss"])
    assert len(read_csv(os.path.join(out, "schedule.csv"))) == 4       # 8 steps / T_train = 2
    assert {"schedule.png", "summary.json", "config.yaml"} <= set(os.listdir(out))
    assert not [f for f in os.listdir(out) if f.startswith(".tmp")]


def test_a_resumed_two_process_run_continues_exactly(straight_run, tmp_path):
    reference, _ = straight_run
    config = str(tmp_path / "tiny.yaml")
    with open(config, "w") as f:
        yaml.safe_dump(tiny_values(), f)
    torchrun("-m", "fastdstn", "train", config, "--epochs", "1", "--out", "run", "--no-progress", cwd=str(tmp_path))
    torchrun("-m", "fastdstn", "train", config, "--out", "run", "--resume", "--no-progress", cwd=str(tmp_path))
    straight = checkpoint.load(os.path.join(reference, "checkpoints", "last.ckpt"))
    resumed = checkpoint.load(str(tmp_path / "run" / "checkpoints" / "last.ckpt"))
    assert_equal_tensors(straight["model"], resumed["model"])
    assert_equal_tensors(straight["space"], resumed["space"])
    for a, b in zip(straight["ranks"], resumed["ranks"]):
        assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
        assert a["position"]["step"] == b["position"]["step"] == 8
    # The hyper optimizer's running statistics (RMSprop's square_avg by default) carried over exactly.
    assert_equal_tensors(straight["optimizers"]["hyper"]["state"][0], resumed["optimizers"]["hyper"]["state"][0])


def test_a_checkpoint_resumes_only_with_the_same_number_of_processes(straight_run):
    out, _ = straight_run
    with pytest.raises(checkpoint.CheckpointError, match="run of 2 process.*this run has 1"):
        Trainer(tiny_config(train={"epochs": 3}), out, progress=False).fit(resume=True)


def test_batchnorm_statistics_are_rank_0s_on_every_rank(tmp_path):
    """sync_buffers broadcasts float and integer buffers in the same order on every rank."""
    torchrun(os.path.join(os.path.dirname(__file__), "ddp_buffers.py"), str(tmp_path), cwd=str(tmp_path))
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert_equal_tensors(rank0, rank1)
    assert rank1["running_mean"].eq(1.0).all() and int(rank1["num_batches_tracked"]) == 5


def test_a_language_model_trains_on_contiguous_shards(tmp_path):
    out = str(tmp_path / "lm")
    rank0, rank1 = train_two_ranks(tiny_values(**LM), out)
    assert_equal_tensors(rank0["model"], rank1["model"])
    assert_equal_tensors(rank0["space"], rank1["space"])
    # The carried hidden states are each rank's own (its own stretch of text), saved per rank.
    saved = checkpoint.load(os.path.join(out, "checkpoints", "last.ckpt"))
    states = [r["model_extra_state"] for r in saved["ranks"]]
    key = next(iter(states[0]))
    assert not torch.equal(states[0][key]["train"][0], states[1][key]["train"][0])
