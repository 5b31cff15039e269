"""Black-box baselines (`fastdstn tune`): random search, TPE and GP-based Bayesian optimization with Optuna.

Each trial is one `fixed`-mode training run of the preset's network at hyperparameters drawn from the
same ranges the self-tuning modes use, so Δ-STN (one run) and the baselines (many runs) are compared on
one footing. Trials report their validation loss every epoch to Optuna's median pruner. A trial that
diverges (or whose sampled values the model refuses) is recorded as failed, with its wall time, and the
search goes on. The study lives in SQLite inside the study directory together with the configuration it
searches: an interrupted search resumes where it stopped (trials that were running are marked failed and
re-drawn), and a rerun under another configuration is refused, never mixed in. Every finished trial adds a
row to `trajectory.csv`: cumulative wall-clock (failed trials included) against the best validation loss so
far — the curve to put beside Δ-STN's.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional

from .config import ConfigError, RunConfig, differences, from_dict
from .extras import require
from .hyper import Hyper
from .train.loaders import load_data
from .train.files import write_text
from .train.building import apply_hyper_overrides, build_model, resolve_device
from .train.trainer import Diverged, Trainer

optuna = require("optuna", "tune", "fastdstn tune")
TrialState = optuna.trial.TrialState

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
    """The preset run in fixed mode at `values` (the initial value of a fixed run is its value), checked."""
    data = base.to_dict()
    data["train"]["mode"] = "fixed"
    if epochs is not None:
        data["train"]["epochs"] = epochs
    for name, value in values.items():
        data["hypers"].setdefault(name, {})["init"] = value
    return from_dict(data)


def _mark_interrupted(study: optuna.Study) -> None:
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)


def _finished(trial: optuna.trial.FrozenTrial) -> bool:
    """A trial that counts: complete, pruned, or failed by itself (diverged); not one a kill interrupted."""
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and "failure" in trial.user_attrs)


def _trajectory(study: optuna.Study) -> List[Dict[str, Any]]:
    """Finished trials in order: cumulative wall seconds and the best validation loss so far."""
    rows, elapsed, best, best_test = [], 0.0, math.inf, None
    for trial in sorted(study.trials, key=lambda t: t.number):
        if not _finished(trial):
            continue
        elapsed += trial.user_attrs.get("wall_time_s", 0.0)
        if trial.state == TrialState.COMPLETE and trial.value < best:
            best, best_test = trial.value, trial.user_attrs.get("test_loss")
        rows.append({"trial": trial.number, "state": trial.state.name.lower(), "wall_time_s": round(elapsed, 3),
                     "val_loss": trial.user_attrs.get("val_loss"), "best_val_loss": best if best < math.inf else None,
                     "best_test_loss": best_test})
    return rows


def _check_arguments(method: str, trials: int, budget_seconds: Optional[float], epochs: Optional[int]) -> None:
    if method not in SAMPLERS:
        raise ConfigError(f"--method: expected one of {', '.join(SAMPLERS)}, received {method!r}")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"--trials: expected >= 1, received {trials!r}")
    if budget_seconds is not None and not (isinstance(budget_seconds, (int, float)) and math.isfinite(budget_seconds)
                                           and budget_seconds > 0):
        raise ConfigError(f"--budget-seconds: expected a number of seconds > 0, received {budget_seconds!r}")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise ConfigError(f"--epochs: expected >= 1 epochs per trial, received {epochs!r}")


def _open_study(out_dir: str, name: str, searched: Dict[str, Any], method: str, seed: int) -> optuna.Study:
    """The study of `out_dir` (created on the first run), refused when the directory holds another study or
    this one was started under another configuration: trials of two configurations are never mixed."""
    storage = f"sqlite:///{os.path.abspath(os.path.join(out_dir, 'study.db'))}"
    others = [n for n in optuna.get_all_study_names(storage) if n != name]
    if others:
        raise ConfigError(f"--out {out_dir} holds the study {others[0]!r}; the study {name!r} needs another --out")
    study = optuna.create_study(study_name=name, direction="minimize", load_if_exists=True, storage=storage,
                                sampler=SAMPLERS[method](seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1))
    searched = json.loads(json.dumps(searched))    # as the storage gives it back
    recorded = study.user_attrs.get("config")
    if recorded is None:
        study.set_user_attr("config", searched)
    elif recorded != searched:
        details = ", ".join(f"{k}: {a!r} → {b!r}" for k, (a, b) in differences(recorded, searched).items())
        raise ConfigError(f"--out {out_dir} holds a study of another configuration ({details}); rerun with the "
                          f"same configuration, --set values and --epochs to continue it, or choose another --out")
    return study


def tune(config: RunConfig, method: str, trials: int, out_dir: str, *, budget_seconds: Optional[float] = None,
         epochs: Optional[int] = None, seed: int = 0, progress: bool = True) -> Dict[str, Any]:
    """Run (or resume) a black-box search; returns and writes `tune_summary.json`.

    trials: finished trials in all (complete, pruned or failed; a resumed study counts those done);
    budget_seconds: start no trial once the trials' wall time adds up to this."""
    _check_arguments(method, trials, budget_seconds, epochs)
    searched = trial_config(config, {}, epochs)
    os.makedirs(out_dir, exist_ok=True)
    bundle = load_data(config.data, config.train.seed, resolve_device(config.train.device))
    hypers = apply_hyper_overrides(build_model(config.model, bundle).hypers, config.hypers)
    study = _open_study(out_dir, f"{config.name}-{method}", searched.to_dict(), method, seed)
    _mark_interrupted(study)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def run_trial() -> None:
        trial = study.ask()
        values = suggest(trial, hypers)
        started = time.time()

        def report(row: Dict[str, Any]) -> None:
            trial.report(row["val_loss"], row["epoch"])
            trial.set_user_attr("val_loss", row["val_loss"])
            if trial.should_prune():
                raise optuna.TrialPruned()

        def say(line: str) -> None:
            if progress:
                print(f"trial {trial.number}: {line} {json.dumps({k: round(v, 5) for k, v in values.items()})}",
                      flush=True)

        try:
            # A trial's epoch lines go to trials.log; the terminal gets one line per trial.
            with open(os.path.join(out_dir, "trials.log"), "a") as log, contextlib.redirect_stdout(log):
                print(f"trial {trial.number}: {json.dumps(values)}")
                summary = Trainer(trial_config(config, values, epochs), None, bundle=bundle, progress=False,
                                  on_epoch=report).fit()
        except optuna.TrialPruned:
            trial.set_user_attr("wall_time_s", time.time() - started)
            study.tell(trial, state=TrialState.PRUNED)
            say(f"pruned after {time.time() - started:.1f}s")
            return
        except (Diverged, ConfigError) as err:    # this trial's values fail; the search goes on
            trial.set_user_attr("wall_time_s", time.time() - started)
            trial.set_user_attr("failure", str(err))
            study.tell(trial, state=TrialState.FAIL)
            say(f"failed after {time.time() - started:.1f}s ({type(err).__name__}: {err})")
            return
        best = summary["best"]
        trial.set_user_attr("wall_time_s", time.time() - started)
        trial.set_user_attr("val_loss", best["val_loss"])
        trial.set_user_attr("test_loss", best["test_loss"])
        study.tell(trial, best["val_loss"])
        say(f"val {best['val_loss']:.4f} test {best['test_loss']:.4f}")

    while True:
        done = study.get_trials(deepcopy=False)
        spent = sum(t.user_attrs.get("wall_time_s", 0.0) for t in done)
        if sum(map(_finished, done)) >= trials or (budget_seconds is not None and spent >= budget_seconds):
            break
        run_trial()

    trajectory = _trajectory(study)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=["trial", "state", "wall_time_s", "val_loss", "best_val_loss",
                                               "best_test_loss"])
    writer.writeheader()
    writer.writerows(trajectory)
    write_text(os.path.join(out_dir, "trajectory.csv"), table.getvalue())
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    best_trial = min(complete, key=lambda t: t.value) if complete else None
    summary = {"name": config.name, "method": method, "trials": len(trajectory),
               "failed": sum(r["state"] == "fail" for r in trajectory),
               "wall_time_s": trajectory[-1]["wall_time_s"] if trajectory else 0.0,
               "best_hypers": None if best_trial is None else best_trial.params,
               "best_val_loss": None if best_trial is None else best_trial.value,
               "best_test_loss": None if best_trial is None else best_trial.user_attrs.get("test_loss"),
               "synthetic_data": bool(getattr(bundle, "synthetic", False))}
    write_text(os.path.join(out_dir, "tune_summary.json"), json.dumps(summary, indent=2))
    return summary
