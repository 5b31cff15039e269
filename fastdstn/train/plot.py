"""schedule.png: the hyperparameter schedule (one panel per hyperparameter, with its starting value) and the loss
curves. A replay's schedule.csv holds the values it followed and no losses."""
from __future__ import annotations

import json
import math
import os
from typing import Dict, List, Optional

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

from .records import read_csv  # noqa: E402


def hyper_names(rows: List[dict]) -> List[str]:
    fixed = {"hyper_step", "step", "epoch", "train_loss", "val_loss"}
    return [k for k in rows[0] if k not in fixed and not k.startswith("sigma_")] if rows else []


def starting_values(run_dir: str) -> Dict[str, float]:
    """Each hyperparameter's initial value, from summary.json (written when a run finishes; empty before)."""
    path = os.path.join(run_dir, "summary.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f).get("initial_hypers", {})


def plot_run(run_dir: str, out: Optional[str] = None) -> str:
    """Write the plot of a run directory (schedule.csv, metrics.csv); returns its path."""
    schedule_path, metrics_path = os.path.join(run_dir, "schedule.csv"), os.path.join(run_dir, "metrics.csv")
    if not os.path.exists(metrics_path):
        raise FileNotFoundError(f"{run_dir}: no metrics.csv; is it a fastdstn run directory?")
    schedule = (read_csv(schedule_path, required=("step",))
                if os.path.exists(schedule_path) else [])
    metrics = read_csv(metrics_path, required=("step",))
    names = hyper_names(schedule)
    panels = len(names) + 1
    cols = min(3, panels)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    flat = axes.ravel()
    ax = flat[0]
    for key, label in (("train_loss", "train (at hyper steps)"), ("val_loss", "val batch (hyper step)")):
        pts = [(r["step"], r[key]) for r in schedule if key in r]
        if pts:
            ax.plot(*zip(*pts), lw=0.8, alpha=0.6, label=label)
    for key, style in (("val_loss", "o-"), ("test_loss", "s-")):
        pts = [(r["step"], r[key]) for r in metrics if key in r]
        if pts:
            ax.plot(*zip(*pts), style, ms=4, label=f"{key.split('_')[0]} (epoch end)")
    ax.set_title("loss")
    ax.set_xlabel("training step")
    ax.legend(fontsize=7)
    start = starting_values(run_dir)
    last_step = max([r["step"] for r in metrics + schedule], default=0)
    for ax, name in zip(flat[1:], names):
        # Piecewise constant: a hyper step's value holds from its step to the next; the start holds until the first.
        steps = [0.0] * (name in start) + [r["step"] for r in schedule] + [last_step]
        values = [start[name]] * (name in start) + [r[name] for r in schedule]
        ax.plot(steps, values + values[-1:], drawstyle="steps-post", lw=1.2)
        if name in start:
            ax.axhline(start[name], color="0.4", ls="--", lw=0.8, label=f"start {start[name]:.3g}")
            ax.legend(fontsize=7)
        ax.set_title(name)
        ax.set_xlabel("training step")
    for ax in flat[:panels]:
        for row in metrics:                     # epoch boundaries
            ax.axvline(row["step"], color="0.85", lw=0.6, zorder=0)
    for ax in flat[panels:]:
        ax.axis("off")
    fig.suptitle(os.path.basename(os.path.abspath(run_dir)) + ": hyperparameter schedule", fontsize=10)
    fig.tight_layout()
    out = out or os.path.join(run_dir, "schedule.png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
