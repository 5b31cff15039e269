"""schedule.png: the run's loss and metric curves, then one panel per hyperparameter with its schedule, its
starting value and the range its perturbations explore. A replay's schedule.csv holds the values it followed
and no losses or σ.

The σ band is c(λ − σ) to c(λ + σ), c the hyperparameter's transform and σ the perturbation scale of the
unconstrained λ: the values that about 68% of the perturbed draws take, in the units of the schedule beside it
(asymmetric near a bound, where the transform flattens). σ itself is in unconstrained units (logits for a
bounded range), which a reader of the value axis cannot place."""
from __future__ import annotations

import json
import math
import os
from typing import Dict, List, Optional, Tuple

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..hyper import Hyper  # noqa: E402
from .records import read_csv  # noqa: E402
from .replay import unconstrained  # noqa: E402

# The metric each task reports (Trainer's METRIC), as metrics.csv names its columns and the plot titles it.
METRIC_TITLES = {"acc": "accuracy", "rmse": "RMSE", "ppl": "perplexity"}
# One colour per split in every panel.
COLORS = {"train": "tab:blue", "val": "tab:orange", "test": "tab:green"}


def hyper_names(rows: List[dict]) -> List[str]:
    fixed = {"hyper_step", "step", "epoch", "train_loss", "val_loss"}
    return [k for k in rows[0] if k not in fixed and not k.startswith("sigma_")] if rows else []


def _summary(run_dir: str) -> dict:
    """summary.json (written when a run finishes; empty before)."""
    path = os.path.join(run_dir, "summary.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def starting_values(run_dir: str) -> Dict[str, float]:
    """Each hyperparameter's initial value, from summary.json."""
    return _summary(run_dir).get("initial_hypers", {})


def hyper_definitions(run_dir: str) -> Dict[str, Hyper]:
    """Each hyperparameter's starting value and range (summary.json), for its transform."""
    summary = _summary(run_dir)
    start, ranges = summary.get("initial_hypers", {}), summary.get("hyper_ranges", {})
    return {n: Hyper(n, start[n], *ranges[n]) for n in start if n in ranges}


def sigma_band(hyper: Hyper, value: float, sigma: float) -> Tuple[float, float]:
    """(c(λ − σ), c(λ + σ)) around a recorded value; the transforms increase, so low ≤ value ≤ high."""
    lam = unconstrained(hyper, value)
    low, high = hyper.constrain(torch.tensor([lam - sigma, lam + sigma], dtype=torch.float64)).tolist()
    return low, high


def _metric(metrics: List[dict]) -> Optional[str]:
    keys = metrics[0] if metrics else {}
    return next((m for m in METRIC_TITLES if f"val_{m}" in keys or f"test_{m}" in keys), None)


def _epoch_curves(ax, metrics: List[dict], columns) -> None:
    for key, style in columns:
        points = [(r["step"], r[key]) for r in metrics if key in r]
        split = key.split("_")[0]
        if points:
            ax.plot(*zip(*points), style, ms=4, color=COLORS[split], label=f"{split} (epoch end)")


def _hyper_panel(ax, name: str, schedule: List[dict], last_step: float, start: Optional[float],
                 hyper: Optional[Hyper]) -> None:
    # Piecewise constant: a hyper step's value holds from its step to the next; the start holds until the first.
    head = [0.0] if start is not None else []
    steps = head + [r["step"] for r in schedule] + [last_step]
    values = [start] * len(head) + [r[name] for r in schedule]
    ax.plot(steps, values + values[-1:], drawstyle="steps-post", lw=1.2, label="value")
    sigmas = [r.get(f"sigma_{name}") for r in schedule]
    if hyper is not None and schedule and all(s is not None for s in sigmas):
        bands = [sigma_band(hyper, r[name], s) for r, s in zip(schedule, sigmas)]
        band_steps = [r["step"] for r in schedule] + [last_step]
        lows, highs = [b[0] for b in bands], [b[1] for b in bands]
        ax.fill_between(band_steps, lows + lows[-1:], highs + highs[-1:], step="post", alpha=0.25, lw=0,
                        label="c(λ ± σ)")
    if start is not None:
        ax.axhline(start, color="0.4", ls="--", lw=0.8, label=f"start {start:.3g}")
    ax.legend(fontsize=7)
    ax.set_title(name)
    ax.set_xlabel("training step")


def schedule_figure(run_dir: str) -> Figure:
    """The figure of a run directory (schedule.csv, metrics.csv, summary.json)."""
    schedule_path, metrics_path = os.path.join(run_dir, "schedule.csv"), os.path.join(run_dir, "metrics.csv")
    if not os.path.exists(metrics_path):
        raise FileNotFoundError(f"{run_dir}: no metrics.csv; is it a fastdstn run directory?")
    schedule = (read_csv(schedule_path, required=("step",))
                if os.path.exists(schedule_path) else [])
    metrics = read_csv(metrics_path, required=("step",))
    names, metric = hyper_names(schedule), _metric(metrics)
    curve_panels = 1 + (metric is not None)
    panels = curve_panels + len(names)
    cols = min(3, panels)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    flat = axes.ravel()

    ax = flat[0]
    for key, label in (("train_loss", "train (hyper-step cycles)"), ("val_loss", "val batch (hyper steps)")):
        points = [(r["step"], r[key]) for r in schedule if key in r]
        if points:
            ax.plot(*zip(*points), lw=0.8, alpha=0.4, color=COLORS[key.split("_")[0]], label=label)
    _epoch_curves(ax, metrics, (("train_loss", "^-"), ("val_loss", "o-"), ("test_loss", "s-")))
    ax.set_title("loss")
    if metric is not None:
        _epoch_curves(flat[1], metrics, ((f"val_{metric}", "o-"), (f"test_{metric}", "s-")))
        flat[1].set_title(METRIC_TITLES[metric])
    for ax in flat[:curve_panels]:
        ax.set_xlabel("training step")
        if ax.lines:
            ax.legend(fontsize=7)

    start, definitions = starting_values(run_dir), hyper_definitions(run_dir)
    last_step = max([r["step"] for r in metrics + schedule], default=0)
    for ax, name in zip(flat[curve_panels:], names):
        _hyper_panel(ax, name, schedule, last_step, start.get(name), definitions.get(name))
    for ax in flat[:panels]:
        for row in metrics:                     # epoch boundaries
            ax.axvline(row["step"], color="0.85", lw=0.6, zorder=0)
    for ax in flat[panels:]:
        ax.axis("off")
    fig.suptitle(os.path.basename(os.path.abspath(run_dir)) + ": hyperparameter schedule", fontsize=10)
    fig.tight_layout()
    return fig


def plot_run(run_dir: str, out: Optional[str] = None) -> str:
    """Write the plot of a run directory; returns its path."""
    fig = schedule_figure(run_dir)
    out = out or os.path.join(run_dir, "schedule.png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
