"""FSDP2 (`SelfTuning.distribute(strategy="fsdp")`) under torchrun, 2 CPU processes on gloo: the same Δ-STN
steps end where DDP's end (float64: the two reduce in another order), on both ranks, with half the parameters
per rank; `fastdstn train` with train.strategy = "fsdp" resumes exactly."""
import os

import pytest
import torch
import yaml

from fastdstn.train import checkpoint
from test_distributed import torchrun
from tiny_runs import tiny_values

pytestmark = pytest.mark.slow
WORKER = os.path.join(os.path.dirname(__file__), "fsdp_worker.py")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    torchrun(WORKER, str(out), cwd=str(out))
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


def test_fsdp_steps_equal_ddp_steps_on_every_rank(ranks):
    for result in ranks:
        ddp, fsdp = result["ddp"], result["fsdp"]
        for group in ("parameters", "space"):
            assert ddp[group].keys() == fsdp[group].keys()
            for name, expected in ddp[group].items():
                torch.testing.assert_close(fsdp[group][name], expected, rtol=1e-10, atol=1e-12, msg=name)
    first = ranks[0]["fsdp"]["parameters"]
    for name, value in ranks[1]["fsdp"]["parameters"].items():
        assert torch.equal(value, first[name]), name


def test_each_rank_holds_half_the_parameters(ranks):
    whole = ranks[0]["ddp"]["local_elements"]
    assert [r["fsdp"]["local_elements"] for r in ranks] == pytest.approx([whole / 2, whole / 2], rel=0.05)


def test_fastdstn_train_with_fsdp_resumes_exactly_and_matches_ddp(tmp_path):
    """`fastdstn train --set train.strategy=fsdp` under torchrun: 1 epoch + a resumed epoch end where 2 straight
    epochs end (its checkpoints hold full tensors), and where the same run under DDP ends."""
    config = str(tmp_path / "tiny.yaml")
    with open(config, "w") as f:
        yaml.safe_dump(tiny_values(), f)

    def train(out, *args):
        torchrun("-m", "fastdstn", "train", config, "--out", out, "--no-progress", *args, cwd=str(tmp_path))
        return checkpoint.load(str(tmp_path / out / "checkpoints" / "last.ckpt"))

    fsdp = ("--set", "train.strategy=fsdp")
    straight = train("straight", *fsdp)
    train("resumed", "--epochs", "1", *fsdp)
    resumed = train("resumed", "--resume", *fsdp)
    ddp = train("ddp")
    for key in ("model", "space"):
        for name, value in straight[key].items():
            assert torch.equal(resumed[key][name], value), name
            torch.testing.assert_close(ddp[key][name], value, rtol=1e-5, atol=1e-6, msg=name)
