"""The audit's bad inputs as one table: HyperSpace/Hyper, SelfTuning and make_optimizers arguments, config
keys and command lines. Each case names the error type expected and the argument (or key) its one-line
message must name. `outcome` sorts a case into clear (that error, one line naming the argument; for a command:
that exit status, one line on stderr, no traceback), unclear (an error, but another type, another status, a
traceback or a message that does not name it) or silent (accepted).

    python tests/test_bad_inputs.py      # the totals: tried / clear / unclear / silent
"""
import contextlib
import io
import math
import os
import shutil
import sys
import tempfile

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from fastdstn import Hyper, HyperSpace, SelfTuning, make_optimizers, ops
from fastdstn.cli import EXIT_CHECKPOINT, EXIT_CONFIG, main
from fastdstn.config import ConfigError
from fastdstn.train import Trainer

sys.path[:0] = [os.path.dirname(__file__), os.path.join(os.path.dirname(__file__), "train")]
from stn_test_models import MLP, small_space  # noqa: E402
from tiny_runs import tiny_config, tiny_values  # noqa: E402


def method(**kwargs):
    space = kwargs.pop("space", small_space())
    model = kwargs.pop("model", MLP(len(space)))
    return SelfTuning(model, space, kwargs.pop("mode", "delta"), **{"loss_fn": F.cross_entropy, **kwargs})


def optimizers(mode="delta", **kwargs):
    space = small_space()
    return make_optimizers(kwargs.pop("model", MLP(len(space))), kwargs.pop("space", space), mode, **kwargs)


def space(*hypers):
    return HyperSpace(hypers or [Hyper("p", 0.5, 0.0, 1.0)])


API = [  # (case, call, error type, named in the message)
    ("Hyper per_example='false'", lambda: Hyper("p", 0.5, 0.0, 1.0, per_example="false"), TypeError, "per_example"),
    ("Hyper discrete='yes'", lambda: Hyper("p", 0.5, 0.0, 1.0, discrete="yes"), TypeError, "discrete"),
    ("Hyper init='0.5'", lambda: Hyper("p", "0.5", 0.0, 1.0), TypeError, "init"),
    ("Hyper init=True", lambda: Hyper("p", True), TypeError, "init"),
    ("Hyper low=nan", lambda: Hyper("p", 0.5, math.nan, 1.0), ValueError, "low"),
    ("Hyper scale=1e-50", lambda: Hyper("p", 0.5, 0.0, 1.0, scale=1e-50), ValueError, "scale"),
    ("Hyper scale=inf", lambda: Hyper("p", 0.5, 0.0, 1.0, scale=math.inf), ValueError, "scale"),
    ("Hyper scale=1e300", lambda: Hyper("p", 0.5, 0.0, 1.0, scale=1e300), ValueError, "scale"),
    ("Hyper name=3", lambda: Hyper(3, 0.5), ValueError, "name"),
    ("Hyper init=1e300 (float32 λ)", lambda: space(Hyper("big", 1e300)), ValueError, "init"),
    ("HyperSpace(one Hyper)", lambda: HyperSpace(Hyper("p", 0.5)), TypeError, "HyperSpace"),
    ("HyperSpace([tuple])", lambda: HyperSpace([("p", 0.5)]), TypeError, "Hyper"),
    ("HyperSpace.sample(0)", lambda: space().sample(0), ValueError, "batch"),
    ("HyperSpace.sample(2.5)", lambda: space().sample(2.5), TypeError, "batch"),
    ("HyperSpace.example_values((4, 5))", lambda: space().example_values(torch.zeros(4, 5)), ValueError, "u"),
    ("HyperSpace.value('nope')", lambda: space().value("nope"), KeyError, "nope"),
    ("SelfTuning tau=-1", lambda: method(tau=-1), ValueError, "tau"),
    ("SelfTuning tau=nan", lambda: method(tau=math.nan), ValueError, "tau"),
    ("SelfTuning tau='0.1'", lambda: method(tau="0.1"), TypeError, "tau"),
    ("SelfTuning per-example weight_decay", lambda: method(weight_decay="drop_in"), ValueError, "weight_decay"),
    ("SelfTuning weight_decay=3", lambda: method(weight_decay=3), TypeError, "weight_decay"),
    ("SelfTuning weight_decay='l2'", lambda: method(weight_decay="l2"), KeyError, "l2"),
    ("SelfTuning loss_fn=None", lambda: method(loss_fn=None), TypeError, "loss_fn"),
    ("SelfTuning augment='flip'", lambda: method(augment="flip"), TypeError, "augment"),
    ("SelfTuning penalty=1", lambda: method(penalty=1), TypeError, "penalty"),
    ("SelfTuning batch_dim=-1", lambda: method(batch_dim=-1), ValueError, "batch_dim"),
    ("SelfTuning linearized_hyper='yes'", lambda: method(linearized_hyper="yes"), TypeError, "linearized_hyper"),
    ("SelfTuning mode='deltaa'", lambda: method(mode="deltaa"), ValueError, "mode"),
    ("SelfTuning model without STN layers", lambda: method(model=nn.Linear(2, 2)), ValueError, "model"),
    ("SelfTuning model='mlp'", lambda: method(model="mlp"), TypeError, "model"),
    ("SelfTuning space of another size", lambda: method(model=MLP(2)), ValueError, "space"),
    ("make_optimizers lr=0", lambda: optimizers(lr=0), ValueError, "lr"),
    ("make_optimizers lr=nan", lambda: optimizers(lr=math.nan), ValueError, "lr"),
    ("make_optimizers lr='0.1'", lambda: optimizers(lr="0.1"), TypeError, "lr"),
    ("make_optimizers response_lr=0", lambda: optimizers(response_lr=0), ValueError, "response_lr"),
    ("make_optimizers response_lr in stn mode", lambda: optimizers("stn", response_lr=0.1), ValueError, "response_lr"),
    ("make_optimizers momentum=1", lambda: optimizers(momentum=1.0), ValueError, "momentum"),
    ("make_optimizers hyper_lr=-1", lambda: optimizers(hyper_lr=-1), ValueError, "hyper_lr"),
    ("make_optimizers hyper_optimizer='sgd'", lambda: optimizers(hyper_optimizer="sgd"), ValueError, "hyper_optimizer"),
    ("make_optimizers space='x'", lambda: optimizers(space="x"), TypeError, "space"),
    ("dropout_dual shared_dims=(5,) on 4-d x",
     lambda: ops.dropout_dual(torch.ones(2, 3, 4, 5), None, torch.full((2,), 0.5), 1, 0, (5,)), ValueError,
     "shared_dims"),
]


def build(**sections):
    """A Trainer of the tiny run with `sections` changed: where a config is checked against the model and data."""
    return lambda: Trainer(tiny_config(**sections), None, progress=False)


REGRESSION = dict(data={"name": "synthetic-regression"}, model={"name": "linear", "options": {}})

CONFIG = [  # (case, call, error type, key named)
    ("hypers per_example = 'false'", build(hypers={"dropout_in": {"per_example": "false"}}), ConfigError,
     "per_example"),
    ("hypers discrete = 'yes'", build(hypers={"dropout_in": {"discrete": "yes"}}), ConfigError, "discrete"),
    ("hypers scale = 1e-50", build(hypers={"dropout_in": {"scale": 1e-50}}), ConfigError, "scale"),
    ("hypers init = '0.1'", build(hypers={"dropout_in": {"init": "0.1"}}), ConfigError, "init"),
    ("per-example weight decay", build(**REGRESSION, hypers={"weight_decay": {"per_example": True}}), ConfigError,
     "weight_decay"),
    ("train.tau = -1", build(train={"tau": -1.0}), ConfigError, "train.tau"),
    ("train.lr = nan", build(train={"lr": math.nan}), ConfigError, "train.lr"),
    ("train.amp = 'yes'", build(train={"amp": "yes"}), ConfigError, "train.amp"),
    ("train.linearized_hyper = 'true'", build(train={"linearized_hyper": "true"}), ConfigError,
     "train.linearized_hyper"),
    ("data.download = 'false'", build(data={"download": "false"}), ConfigError, "data.download"),
    ("train.skip_nonfinite = -1", build(train={"skip_nonfinite": -1}), ConfigError, "train.skip_nonfinite"),
    ("train.epochs = 0", build(train={"epochs": 0}), ConfigError, "train.epochs"),
    ("train.response_lr in stn mode", build(train={"mode": "stn", "response_lr": 0.1}), ConfigError, "response_lr"),
    ("name = '../elsewhere'", build(name="../elsewhere"), ConfigError, "name"),
    ("data.name = 'concret'", build(data={"name": "concret"}), ConfigError, "data.name"),
    ("data.root = /nonexistent", build(data={"root": "/nonexistent"}), ConfigError, "data.root"),
    ("data.train_size > the data", build(data={"train_size": 100000}), ConfigError, "data.train_size"),
]


def finished_run(root):
    """A finished two-epoch tiny run (and its config file) under `root`."""
    config = os.path.join(root, "tiny.yaml")
    with open(config, "w") as f:
        yaml.safe_dump(tiny_values(), f)
    out = os.path.join(root, "run")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["train", config, "--out", out, "--no-progress"]) == 0
    return config, out


def damage(name, text="garbage\n"):
    def apply(out):
        with open(os.path.join(out, name), "w") as f:
            f.write(text)
    return apply


CLI = [  # (case, argv with {config} and {out}, a change to the finished run first or None, exit status, named)
    ("tune --budget-seconds -5", ["tune", "uci-linear", "--budget-seconds", "-5", "--out", "{out}/t"], None,
     EXIT_CONFIG, "--budget-seconds"),
    ("tune --epochs 0", ["tune", "uci-linear", "--epochs", "0", "--out", "{out}/t"], None, EXIT_CONFIG, "--epochs"),
    ("tune --trials 0", ["tune", "uci-linear", "--trials", "0", "--out", "{out}/t"], None, EXIT_CONFIG, "--trials"),
    ("train --epochs 0", ["train", "{config}", "--epochs", "0", "--out", "{out}/new"], None, EXIT_CONFIG,
     "train.epochs"),
    ("--set data.root=/nonexistent", ["train", "{config}", "--set", "data.root=/nonexistent", "--out", "{out}/new"],
     None, EXIT_CONFIG, "data.root"),
    ("--set data.name=concret", ["train", "{config}", "--set", "data.name=concret", "--out", "{out}/new"], None,
     EXIT_CONFIG, "data.name"),
    ("--set data.train_size=100000", ["train", "{config}", "--set", "data.train_size=100000", "--out", "{out}/new"],
     None, EXIT_CONFIG, "data.train_size"),
    ("--set hypers.dropout_in.per_example='false'",
     ["train", "{config}", "--set", "hypers.dropout_in.per_example='false'", "--out", "{out}/new"], None,
     EXIT_CONFIG, "per_example"),
    ("--set train.tau=-1", ["train", "{config}", "--set", "train.tau=-1", "--out", "{out}/new"], None, EXIT_CONFIG,
     "train.tau"),
    ("--set without =", ["train", "{config}", "--set", "train.lr", "--out", "{out}/new"], None, EXIT_CONFIG, "--set"),
    ("a new run into a finished run", ["train", "{config}", "--out", "{out}"], None, EXIT_CHECKPOINT, "--overwrite"),
    ("--resume --overwrite", ["train", "{config}", "--out", "{out}", "--resume", "--overwrite"], None,
     EXIT_CHECKPOINT, "--overwrite"),
    ("--resume --epochs 1 on a finished 2-epoch run", ["train", "--out", "{out}", "--resume", "--epochs", "1"], None,
     EXIT_CONFIG, "train.epochs"),
    ("--resume of a directory without a run", ["train", "--out", "{out}/none", "--resume"], None, EXIT_CONFIG,
     "config.yaml"),
    ("--resume with a damaged config.yaml", ["train", "--out", "{out}", "--resume", "--epochs", "3"],
     damage("config.yaml", "train: [epochs: 3\n  mode"), EXIT_CONFIG, "config.yaml"),
    ("--resume with a damaged metrics.csv", ["train", "{config}", "--out", "{out}", "--resume", "--epochs", "3"],
     damage("metrics.csv"), EXIT_CHECKPOINT, "metrics.csv"),
    ("--resume with a damaged schedule.csv", ["train", "{config}", "--out", "{out}", "--resume", "--epochs", "3"],
     damage("schedule.csv", "hyper_step\n1\n"), EXIT_CHECKPOINT, "schedule.csv"),
    ("replay of a damaged schedule.csv", ["replay", "{out}", "--no-progress"],
     damage("schedule.csv", "hyper_step,step\n1,x\n"), EXIT_CHECKPOINT, "schedule.csv"),
    ("plot of a damaged metrics.csv", ["plot", "{out}"], damage("metrics.csv", "epoch\n1\n"), EXIT_CHECKPOINT,
     "metrics.csv"),
]


def outcome(call, error, named) -> str:
    """clear, unclear or silent (see the module docstring) for an API or config case."""
    try:
        call()
    except error as err:
        text = str(err)
        return "clear" if named in text and "\n" not in text.strip() else "unclear"
    except Exception:
        return "unclear"
    return "silent"


def cli_outcome(argv, change, status, named, root) -> str:
    """clear, unclear or silent for a command line, run on a fresh copy of the finished run."""
    config, template = root
    with tempfile.TemporaryDirectory() as work:
        out = os.path.join(work, "run")
        shutil.copytree(template, out)
        if change is not None:
            change(out)
        args = [a.format(config=config, out=out) for a in argv]
        err = io.StringIO()
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                code = main(args)
        except SystemExit as done:
            code = done.code
        except Exception:
            return "unclear"    # a traceback
    lines = err.getvalue().strip().splitlines()
    if code == 0:
        return "silent"
    clear = code == status and len(lines) == 1 and named in lines[0] and "Traceback" not in lines[0]
    return "clear" if clear else "unclear"


@pytest.fixture(scope="module")
def run_root(tmp_path_factory):
    return finished_run(str(tmp_path_factory.mktemp("finished")))


@pytest.mark.parametrize("case, call, error, named", API + CONFIG, ids=[c[0] for c in API + CONFIG])
def test_bad_arguments_and_config_values_are_refused_clearly(case, call, error, named):
    assert outcome(call, error, named) == "clear", case


@pytest.mark.parametrize("case, argv, change, status, named", CLI, ids=[c[0] for c in CLI])
def test_bad_command_lines_get_one_line_and_a_status(case, argv, change, status, named, run_root):
    assert cli_outcome(argv, change, status, named, run_root) == "clear", case


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as root:
        finished = finished_run(root)
        results = [(case, outcome(call, error, named)) for case, call, error, named in API + CONFIG]
        results += [(case, cli_outcome(argv, change, status, named, finished))
                    for case, argv, change, status, named in CLI]
    for case, result in results:
        print(f"{result:8s} {case}")
    counts = {k: sum(r == k for _, r in results) for k in ("clear", "unclear", "silent")}
    print(f"tried {len(results)}: clear {counts['clear']}, unclear {counts['unclear']}, silent {counts['silent']}")
