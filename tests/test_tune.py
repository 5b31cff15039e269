"""The black-box baselines (fastdstn tune): search ranges, pruning, trajectory, resume."""
import csv
import json
import math
import os
import re
import time

import optuna
import pytest

from fastdstn import Hyper
from fastdstn.config import ConfigError, load
from fastdstn.tune import search_range, trial_config, tune


def test_search_ranges_follow_the_hyperparameter():
    low, high, log = search_range(Hyper("p", 0.2, 0.0, 0.9))
    assert 0 < low < 1e-5 and 0.9 - 1e-5 < high < 0.9 and not log
    assert search_range(Hyper("wd", 1e-3, 1e-6, 1e-1))[2], "positive ranges over two decades are log-scaled"
    low, high, _ = search_range(Hyper("lr", 0.1, low=0.0))
    assert low > 0 and high == pytest.approx(1.0, rel=1e-5)


def test_trial_config_is_fixed_mode_at_the_values():
    base = load("uci-linear")
    config = trial_config(base, {"dropout_in": 0.3}, epochs=2)
    assert config.train.mode == "fixed" and config.train.epochs == 2
    assert config.hypers["dropout_in"]["init"] == 0.3
    assert base.train.mode == "delta" and "dropout_in" not in base.hypers, "the base config is not changed"


def test_tune_writes_trajectory_and_resumes(tmp_path):
    config = load("uci-linear")
    out = str(tmp_path / "study")
    first = tune(config, "random", trials=3, out_dir=out, epochs=2, progress=False)
    assert first["trials"] == 3 and first["best_val_loss"] > 0 and set(first["best_hypers"]) == {"dropout_in", "weight_decay"}
    with open(os.path.join(out, "trajectory.csv")) as f:
        rows = list(csv.DictReader(f))
    times = [float(r["wall_time_s"]) for r in rows]
    assert times == sorted(times), "the trajectory is cumulative wall-clock"
    best = [float(r["best_val_loss"]) for r in rows if r["best_val_loss"]]
    assert best == sorted(best, reverse=True), "best-so-far never gets worse"
    # An interrupted study: a trial left RUNNING is marked failed; the next call runs only what is missing.
    study = optuna.load_study(study_name="uci-linear-random", storage=f"sqlite:///{os.path.join(out, 'study.db')}")
    study.ask()
    second = tune(config, "random", trials=5, out_dir=out, epochs=2, progress=False)
    assert second["trials"] == 5
    states = [t.state for t in optuna.load_study(study_name="uci-linear-random",
                                                  storage=f"sqlite:///{os.path.join(out, 'study.db')}").trials]
    assert states.count(optuna.trial.TrialState.FAIL) == 1
    with open(os.path.join(out, "tune_summary.json")) as f:
        assert json.load(f)["trials"] == 5


def test_tune_rejects_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="--method"):
        tune(load("uci-linear"), "grid", trials=2, out_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="--trials"):
        tune(load("uci-linear"), "tpe", trials=0, out_dir=str(tmp_path))


class DivergesFirst:
    """Stands in for Trainer in tune: the first trial diverges after `seconds`, the others train normally."""
    seconds, made = 0.3, 0

    def __init__(self, config, *args, **kwargs):
        from fastdstn.train import Trainer

        DivergesFirst.made += 1
        self.first, self.trainer = DivergesFirst.made == 1, Trainer(config, *args, **kwargs)

    def fit(self):
        from fastdstn.train import Diverged

        if self.first:
            time.sleep(self.seconds)
            raise Diverged("the general sub-step of training step 3 (epoch 1): loss is nan")
        return self.trainer.fit()


def test_a_diverging_trial_is_recorded_as_failed_with_its_time_and_the_study_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(DivergesFirst, "made", 0)
    monkeypatch.setattr("fastdstn.tune.Trainer", DivergesFirst)
    out = str(tmp_path / "study")
    summary = tune(load("uci-linear"), "random", trials=3, out_dir=out, epochs=1)
    assert summary["trials"] == 3 and summary["failed"] == 1 and summary["best_val_loss"] > 0
    assert "trial 0: failed after 0." in capsys.readouterr().out
    with open(os.path.join(out, "trajectory.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["state"] for r in rows] == ["fail", "complete", "complete"]
    assert float(rows[0]["wall_time_s"]) >= DivergesFirst.seconds, "a failed trial's time counts"
    study = optuna.load_study(study_name="uci-linear-random", storage=f"sqlite:///{os.path.join(out, 'study.db')}")
    assert "loss is nan" in study.trials[0].user_attrs["failure"]


def test_the_budget_counts_failed_trials(tmp_path, monkeypatch):
    monkeypatch.setattr(DivergesFirst, "made", 0)
    monkeypatch.setattr("fastdstn.tune.Trainer", DivergesFirst)
    summary = tune(load("uci-linear"), "random", trials=5, out_dir=str(tmp_path), epochs=1,
                   budget_seconds=DivergesFirst.seconds / 2, progress=False)
    assert summary["trials"] == 1 and summary["failed"] == 1 and summary["best_val_loss"] is None
    assert os.path.exists(os.path.join(tmp_path, "tune_summary.json"))


def test_a_study_is_never_continued_under_another_configuration(tmp_path):
    out = str(tmp_path / "study")
    tune(load("uci-linear"), "random", trials=1, out_dir=out, epochs=1, progress=False)
    with pytest.raises(ConfigError, match=r"another configuration \(train.lr: 0.01 → 0.05\)"):
        tune(load("uci-linear", ["train.lr=0.05"]), "random", trials=2, out_dir=out, epochs=1, progress=False)
    with pytest.raises(ConfigError, match=r"another configuration \(train.epochs: 1 → 2\)"):
        tune(load("uci-linear"), "random", trials=2, out_dir=out, epochs=2, progress=False)
    with pytest.raises(ConfigError, match="holds the study 'uci-linear-random'"):
        tune(load("uci-linear"), "tpe", trials=2, out_dir=out, epochs=1, progress=False)
    study = optuna.load_study(study_name="uci-linear-random", storage=f"sqlite:///{os.path.join(out, 'study.db')}")
    assert len(study.trials) == 1, "nothing was added to the study"


@pytest.mark.parametrize("kwargs, message", [
    (dict(epochs=0), "--epochs: expected >= 1 epochs per trial, received 0"),
    (dict(budget_seconds=-5), "--budget-seconds: expected a number of seconds > 0, received -5"),
    (dict(budget_seconds=math.nan), "--budget-seconds"),
])
def test_bad_tune_arguments_are_refused_before_a_study_exists(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        tune(load("uci-linear"), "tpe", trials=2, out_dir=str(tmp_path / "study"), **kwargs)
    assert not os.path.exists(tmp_path / "study")
