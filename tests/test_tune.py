"""The black-box baselines (fastdstn tune): search ranges, pruning, trajectory, resume."""
import csv
import json
import os

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
