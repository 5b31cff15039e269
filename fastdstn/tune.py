"""Black-box baselines (`fastdstn tune`): random search, TPE and GP-based Bayesian optimization with Optuna.

Each trial is one `fixed`-mode training run of the preset's network at hyperparameters drawn from the
same ranges the self-tuning modes use, so Δ-STN (one run) and the baselines (many runs) are compared on
one footing. Trials report their validation loss every epoch to Optuna's median pruner. The study
lives in SQLite inside the run directory: an interrupted search resumes where it stopped (trials that
were running are marked failed and re-drawn). Every finished trial adds a row to `trajectory.csv`:
cumulative wall-clock against the best validation loss so far — the curve to put beside Δ-STN's.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import json
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional

import optuna

from .config import ConfigError, RunConfig
from .hyper import Hyper
from .train.data import load_data
from .train.setup import apply_hyper_overrides, build_model, resolve_device
from .train.trainer import Trainer

SAMPLERS: Dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed),
    "gp": lambda seed: optuna.samplers.GPSampler(seed=seed),
}
# Hyperparameters without a finite bound are searched over init·[1/RANGE_FACTOR, RANGE_FACTOR].
RANGE_FACTOR = 10.0


def search_range(h: Hyper) -> tuple:
    """(low, high, log) that Optuna samples for one hyperparameter. The transform's range is open,
    so the bounds are pulled in by 1e-6 of its width; a range with a positive lower bound spanning over
    two decades is log-scaled (a rate in [0, 0.9] is searched uniformly)."""
    low = h.low if h.low is not None else (h.init / RANGE_FACTOR if h.init > 0 else h.init - RANGE_FACTOR)
    high = h.high if h.high is not None else (h.init * RANGE_FACTOR if h.init > 0 else h.init + RANGE_FACTOR)
    log = low > 0 and high / low > 100
    inset = 1e-6 * (high - low)
    return low + inset, high - inset, log


def suggest(trial: optuna.Trial, hypers: List[Hyper]) -> Dict[str, float]:
    values = {}
    for h in hypers:
        low, high, log = search_range(h)
        values[h.name] = trial.suggest_float(h.name, low, high, log=log)
    return values


def trial_config(base: RunConfig, values: Dict[str, float], epochs: Optional[int]) -> RunConfig:
    """The preset run in fixed mode at `values` (the initial value of a fixed run is its value)."""
    config = copy.deepcopy(base)
    config.train.mode = "fixed"
    if epochs is not None:
        config.train.epochs = epochs
    for name, value in values.items():
        config.hypers.setdefault(name, {})["init"] = value
    return config


def _mark_interrupted(study: optuna.Study) -> None:
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)


def _trajectory(study: optuna.Study) -> List[Dict[str, Any]]:
    """Finished trials in order: cumulative wall seconds and the best validation loss so far."""
    rows, elapsed, best, best_test = [], 0.0, math.inf, None
    for trial in sorted(study.trials, key=lambda t: t.number):
        if trial.state not in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
            continue
        elapsed += trial.user_attrs.get("wall_time_s", 0.0)
        if trial.state == optuna.trial.TrialState.COMPLETE and trial.value < best:
            best, best_test = trial.value, trial.user_attrs.get("test_loss")
        rows.append({"trial": trial.number, "state": trial.state.name.lower(), "wall_time_s": round(elapsed, 3),
                     "val_loss": trial.user_attrs.get("val_loss"), "best_val_loss": best if best < math.inf else None,
                     "best_test_loss": best_test})
    return rows


def tune(config: RunConfig, method: str, trials: int, out_dir: str, *, budget_seconds: Optional[float] = None,
         epochs: Optional[int] = None, seed: int = 0, progress: bool = True) -> Dict[str, Any]:
    """Run (or resume) a black-box search; returns and writes `tune_summary.json`."""
    if method not in SAMPLERS:
        raise ConfigError(f"--method: expected one of {', '.join(SAMPLERS)}, received {method!r}")
    if trials < 1:
        raise ConfigError(f"--trials: expected >= 1, received {trials}")
    os.makedirs(out_dir, exist_ok=True)
    bundle = load_data(config.data, config.train.seed, resolve_device(config.train.device))
    hypers = apply_hyper_overrides(build_model(config.model, bundle).hypers, config.hypers)
    study = optuna.create_study(study_name=f"{config.name}-{method}", direction="minimize", load_if_exists=True,
                                storage=f"sqlite:///{os.path.abspath(os.path.join(out_dir, 'study.db'))}",
                                sampler=SAMPLERS[method](seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1))
    _mark_interrupted(study)
    spent = sum(t.user_attrs.get("wall_time_s", 0.0) for t in study.trials)
    done = sum(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in study.trials)

    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, hypers)
        started = time.time()

        def report(row: Dict[str, Any]) -> None:
            trial.report(row["val_loss"], row["epoch"])
            if trial.should_prune():
                trial.set_user_attr("wall_time_s", time.time() - started)
                trial.set_user_attr("val_loss", row["val_loss"])
                raise optuna.TrialPruned()

        # A trial's epoch lines go to trials.log; the terminal gets one line per trial.
        with open(os.path.join(out_dir, "trials.log"), "a") as log, contextlib.redirect_stdout(log):
            print(f"trial {trial.number}: {json.dumps(values)}")
            summary = Trainer(trial_config(config, values, epochs), None, bundle=bundle, progress=False,
                              on_epoch=report).fit()
        best = summary["best"]
        trial.set_user_attr("wall_time_s", time.time() - started)
        trial.set_user_attr("val_loss", best["val_loss"])
        trial.set_user_attr("test_loss", best["test_loss"])
        if progress:
            print(f"trial {trial.number}: val {best['val_loss']:.4f} test {best['test_loss']:.4f} "
                  f"{json.dumps({k: round(v, 5) for k, v in values.items()})}", flush=True)
        return best["val_loss"]

    remaining_time = None if budget_seconds is None else max(budget_seconds - spent, 0.0)
    if trials - done > 0 and (remaining_time is None or remaining_time > 0):
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study.optimize(objective, n_trials=trials - done, timeout=remaining_time, catch=(ConfigError,))

    trajectory = _trajectory(study)
    with open(os.path.join(out_dir, "trajectory.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["trial", "state", "wall_time_s", "val_loss", "best_val_loss",
                                               "best_test_loss"])
        writer.writeheader()
        writer.writerows(trajectory)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best_trial = min(complete, key=lambda t: t.value) if complete else None
    summary = {"name": config.name, "method": method, "trials": len(trajectory),
               "wall_time_s": trajectory[-1]["wall_time_s"] if trajectory else 0.0,
               "best_hypers": None if best_trial is None else best_trial.params,
               "best_val_loss": None if best_trial is None else best_trial.value,
               "best_test_loss": None if best_trial is None else best_trial.user_attrs.get("test_loss"),
               "synthetic_data": bool(getattr(bundle, "synthetic", False))}
    with open(os.path.join(out_dir, "tune_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary
