"""The `fastdstn` command: train / resume / replay / plot / info / presets, and how it reports errors."""
import json
import os
import sys

import pytest
import yaml

from fastdstn.cli import EXIT_CHECKPOINT, EXIT_CONFIG, EXIT_INTERNAL, main
from fastdstn.config import ConfigError
from fastdstn.train.plot import starting_values

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "train"))
from tiny_runs import tiny_values  # noqa: E402


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "tiny.toml"
    values = tiny_values(train={"epochs": 1})
    lines = [f'name = "{values["name"]}"']
    for section in ("data", "model", "train"):
        lines.append(f"[{section}]")
        for key, value in values[section].items():
            if isinstance(value, dict):
                inner = ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items())
                lines.append(f"{key} = {{ {inner} }}")
            else:
                lines.append(f"{key} = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_train_resume_replay_plot(config_file, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", config_file, "--out", out, "--seed", "1", "--set", "train.hyper_lr=0.02",
                 "--set", "train.response_lr=0.05"]) == 0     # a response_lr the replay (mode fixed) drops
    printed = capsys.readouterr().out
    assert f"plot:    {os.path.join(out, 'schedule.png')}" in printed
    assert f"summary: {os.path.join(out, 'summary.json')}" in printed
    with open(os.path.join(out, "config.yaml")) as f:
        resolved = yaml.safe_load(f)
    assert resolved["train"]["seed"] == 1 and resolved["train"]["hyper_lr"] == 0.02
    # the run directory alone is enough to continue it
    assert main(["train", "--out", out, "--resume", "--epochs", "2"]) == 0
    with open(os.path.join(out, "summary.json")) as f:
        assert json.load(f)["epochs"] == 2
    assert main(["replay", out, "--no-progress"]) == 0
    with open(os.path.join(out, "replay", "summary.json")) as f:
        assert json.load(f)["mode"] == "fixed"
    os.remove(os.path.join(out, "schedule.png"))
    assert main(["plot", out]) == 0
    assert os.path.exists(os.path.join(out, "schedule.png"))
    with open(os.path.join(out, "summary.json")) as f:     # the plot's line for each starting value
        assert starting_values(out) == json.load(f)["initial_hypers"] != {}


def test_version(capsys):
    from fastdstn import __version__

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out == f"fastdstn {__version__}\n"


@pytest.mark.parametrize("args, message", [
    (["train", "fmnist-quik"], "did you mean 'fmnist-quick'?"),
    (["train", "fmnist-quick", "--set", "train.lrr=0.1"], "unknown config key train.'lrr'; did you mean train.'lr'?"),
    (["train", "fmnist-quick", "--set", "train.hyper_lr=-1"], "train.hyper_lr: expected a value > 0, received -1"),
    (["train", "fmnist-quick", "--set", "hypers.dropout_inn.init=0.1"], "hypers.dropout_inn: the model has no"),
    (["train", "fmnist-quick", "--set", "hypers.dropout_in.init=1.5"], "hypers.dropout_in: Hyper 'dropout_in': init"),
    (["train", "fmnist-quick", "--set", "model.options.widht=3"], "model.options.widht: not an option"),
    (["train", "fmnist-quick", "--set", "model.name=resnet"], "did you mean 'resnet18'?"),
    (["train"], "name a preset or config file"),
])
def test_bad_configs_fail_clearly(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("fastdstn.train.trainer.load_data", _no_data)
    assert main(args + ["--out", str(tmp_path / "x")]) == EXIT_CONFIG
    assert message in capsys.readouterr().err


def _no_data(cfg, seed, device):
    """Loading Fashion-MNIST is not what these tests are about: a stand-in bundle of the same shape."""
    from fastdstn.data import DataBundle
    from fastdstn.data.loader import TensorLoader
    import torch

    loader = TensorLoader(torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long), 2)
    return DataBundle("fashion-mnist", loader, loader, loader, (1, 28, 28), 10, "classification", True, "stand-in",
                      mean=(0.5,), std=(0.5,))


def test_damaged_checkpoint_is_reported(config_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", config_file, "--out", str(out)]) == 0
    ckpt = out / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    assert main(["train", config_file, "--out", str(out), "--resume", "--epochs", "2"]) == EXIT_CHECKPOINT
    assert "is damaged: truncated" in capsys.readouterr().err


def test_info_and_presets(capsys):
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert "torch" in text and "op backends:" in text and "reference" in text and "_build_info.json" in text
    assert main(["presets"]) == 0
    assert "fmnist-quick" in capsys.readouterr().out


def test_help_lists_the_commands(capsys):
    # `python -m fastdstn` itself runs in test_resume's SIGKILL test
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert all(c in text for c in ("train", "replay", "plot", "info", "presets"))


def test_errors_are_one_line_and_debug_shows_the_traceback(config_file, tmp_path, capsys, monkeypatch):
    bad = ["train", config_file, "--set", "train.tau=-1", "--out", str(tmp_path / "x")]
    assert main(bad) == EXIT_CONFIG
    assert capsys.readouterr().err.strip().splitlines() == [
        "fastdstn: config error: train.tau: expected a value >= 0, received -1"]
    for argv in (["--debug", *bad], [*bad, "--debug"]):
        with pytest.raises(ConfigError, match="train.tau"):
            main(argv)

    def broken(args):
        raise RuntimeError("something\nunforeseen")

    monkeypatch.setattr("fastdstn.cli._info", broken)
    assert main(["info"]) == EXIT_INTERNAL
    assert capsys.readouterr().err.strip().splitlines() == [
        "fastdstn: unexpected error: RuntimeError: something unforeseen (run with --debug for the traceback)"]


def test_overwrite_replaces_a_run_and_a_second_run_without_it_is_refused(config_file, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", config_file, "--out", out]) == 0
    assert main(["train", config_file, "--out", out]) == EXIT_CHECKPOINT
    assert "is not empty" in capsys.readouterr().err
    assert main(["train", config_file, "--out", out, "--overwrite", "--seed", "5"]) == 0
    with open(os.path.join(out, "config.yaml")) as f:
        assert yaml.safe_load(f)["train"]["seed"] == 5
    assert main(["replay", out, "--no-progress"]) == 0
    assert main(["replay", out, "--no-progress"]) == EXIT_CHECKPOINT
    assert main(["replay", out, "--no-progress", "--overwrite"]) == 0
