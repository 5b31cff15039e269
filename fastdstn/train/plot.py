"""schedule.png: the hyperparameter schedule (one panel per hyperparameter) and the loss curves."""
from __future__ import annotations

import math
import os
from typing import List, Optional

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

from .records import read_csv  # noqa: E402


def hyper_names(rows: List[dict]) -> List[str]:
    fixed = {"hyper_step", "step", "epoch", "train_loss", "val_loss"}
    return [k for k in rows[0] if k not in fixed and not k.startswith("sigma_")] if rows else []


def plot_run(run_dir: str, out: Optional[str] = None) -> str:
    """Write the plot of a run directory (schedule.csv, metrics.csv); returns its path."""
    schedule_path, metrics_path = os.path.join(run_dir, "schedule.csv"), os.path.join(run_dir, "metrics.csv")
    if not os.path.exists(metrics_path):
        raise FileNotFoundError(f"{run_dir}: no metrics.csv; is it a fastdstn run directory?")
    schedule = (read_csv(schedule_path, required=("step", "train_loss", "val_loss"))
                if os.path.exists(schedule_path) else [])
    metrics = read_csv(metrics_path, required=("step",))
    names = hyper_names(schedule)
    panels = len(names) + 1
    cols = min(3, panels)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    flat = axes.ravel()
    ax = flat[0]
    if schedule:
        ax.plot([r["step"] for r in schedule], [r["train_loss"] for r in schedule], lw=0.8, alpha=0.6,
                label="train (at hyper steps)")
        ax.plot([r["step"] for r in schedule], [r["val_loss"] for r in schedule], lw=0.8, alpha=0.6,
                label="val batch (hyper step)")
    for key, style in (("val_loss", "o-"), ("test_loss", "s-")):
        pts = [(r["step"], r[key]) for r in metrics if key in r]
        if pts:
            ax.plot(*zip(*pts), style, ms=4, label=f"{key.split('_')[0]} (epoch end)")
    ax.set_title("loss")
    ax.set_xlabel("training step")
    ax.legend(fontsize=7)
    for ax, name in zip(flat[1:], names):
        steps = [r["step"] for r in schedule]
        ax.plot(steps, [r[name] for r in schedule], lw=1.2)
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
