"""Checkpoint files: atomic replacement, checksummed reads, RNG state round trips."""
import os
import random

import numpy as np
import pytest
import torch

from fastdstn.train import checkpoint
from fastdstn.train.checkpoint import CheckpointError


def test_round_trip(tmp_path):
    path = str(tmp_path / "a.ckpt")
    obj = {"w": torch.randn(5, 3), "n": 3, "nested": [1.5, {"k": torch.arange(4)}]}
    checkpoint.save(obj, path)
    back = checkpoint.load(path)
    assert torch.equal(back["w"], obj["w"]) and back["n"] == 3 and torch.equal(back["nested"][1]["k"], torch.arange(4))
    assert os.listdir(tmp_path) == ["a.ckpt"]       # no temporary file left behind


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = str(tmp_path / "a.ckpt")
    checkpoint.save({"v": 1}, path)

    def crash(src, dst):
        raise OSError("disk vanished")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk vanished"):
        checkpoint.save({"v": 2}, path)
    monkeypatch.undo()
    assert checkpoint.load(path) == {"v": 1}
    assert os.listdir(tmp_path) == ["a.ckpt"]


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[: len(b) // 2], "truncated"),
    (lambda b: b[:20], "truncated"),
    (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "checksum mismatch"),
    (lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:], "checksum mismatch"),
    (lambda b: b[:100] + b[101:], "truncated"),
    (lambda b: b[:100] + b"x" + b[100:], "grown"),
    (lambda b: b"NOTACKPT" + b[8:], "bad magic"),
    (lambda b: b"", "truncated"),
])
def test_damaged_checkpoints_are_refused(tmp_path, damage, message):
    path = tmp_path / "a.ckpt"
    checkpoint.save({"w": torch.randn(100)}, str(path))
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=message) as err:
        checkpoint.load(str(path))
    assert "damaged" in str(err.value)


def test_torch_load_reads_a_checkpoint_with_its_default_weights_only(tmp_path):
    path = str(tmp_path / "a.ckpt")
    obj = {"w": torch.randn(5, 3), "config": {"train": {"lr": 0.1, "mode": "delta"}}, "rng": checkpoint.rng_state()}
    checkpoint.save(obj, path)
    plain = torch.load(path)                # the zip comment that holds the checksum is skipped by zip readers
    checked = checkpoint.load(path)
    assert torch.equal(plain["w"], obj["w"]) and plain["config"] == obj["config"] == checked["config"]
    assert torch.equal(plain["rng"]["torch"], checked["rng"]["torch"])


def test_a_plain_torch_file_is_not_taken_for_a_checkpoint(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"w": torch.randn(100)}, str(path))
    with pytest.raises(CheckpointError, match="damaged: truncated, or not a fastdstn checkpoint"):
        checkpoint.load(str(path))


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        checkpoint.load(str(tmp_path / "none.ckpt"))


def test_rng_states_round_trip(tmp_path):
    path = str(tmp_path / "rng.ckpt")
    checkpoint.save(checkpoint.rng_state(), path)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    checkpoint.set_rng_state(checkpoint.load(path))
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]
