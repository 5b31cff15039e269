"""Time to quality: one Δ-STN run against random search, TPE and GP-BO given the same wall-clock.

For each preset and seed: Δ-STN trains once (its wall time is the budget), then each black-box method
runs `fixed`-mode trials of the same network until the budget is spent. We record best validation
loss against wall-clock for every method, and the test loss of each method's best model.

    python benchmarks/time_to_quality.py --preset uci-linear --epochs 20 --seeds 0 1 2
    python benchmarks/time_to_quality.py --preset fmnist-cnn --epochs 3 --set data.train_size=6000

Appends rows to benchmarks/time_to_quality.csv and writes benchmarks/time_to_quality_<preset>.png;
--report-only rebuilds both from the run directories.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import os
import platform

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import fastdstn  # noqa: E402
from fastdstn.config import load as load_config  # noqa: E402
from fastdstn.train.records import read_csv  # noqa: E402
from fastdstn.train.trainer import Trainer  # noqa: E402
from fastdstn.tune import tune  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FIELDS = ["preset", "seed", "method", "epochs", "runs", "wall_time_s", "best_val_loss", "best_test_loss",
          "synthetic_data", "cpu", "threads", "torch", "fastdstn", "timestamp"]


def delta_curve(run_dir: str):
    """(cumulative seconds, best val so far, test loss of that best) after every epoch of one run."""
    elapsed, best, best_test, curve = 0.0, math.inf, None, []
    for row in read_csv(os.path.join(run_dir, "metrics.csv")):
        elapsed += float(row["epoch_seconds"])
        if float(row["val_loss"]) < best:
            best, best_test = float(row["val_loss"]), float(row["test_loss"])
        curve.append((elapsed, best, best_test))
    return curve


def run(preset: str, epochs: int, seed: int, methods, overrides, out: str) -> None:
    """Δ-STN once, then each black-box method with the Δ-STN run's wall-clock as its budget."""
    config = load_config(preset, overrides=overrides + [f"train.epochs={epochs}", f"train.seed={seed}",
                                                        "train.mode=delta"])
    run_dir = os.path.join(out, preset, f"seed{seed}", "delta")
    Trainer(config, run_dir, progress=False).fit(overwrite=True)     # a rerun of the benchmark starts over
    budget = delta_curve(run_dir)[-1][0]
    print(f"seed {seed} delta: {budget:.1f}s", flush=True)
    for method in methods:
        result = tune(config, method, trials=10_000, out_dir=os.path.join(out, preset, f"seed{seed}", method),
                      budget_seconds=budget, epochs=epochs, seed=seed, progress=False)
        print(f"seed {seed} {method}: {result['trials']} trials in {result['wall_time_s']:.1f}s", flush=True)


def report(preset: str, epochs: int, seeds, methods, out: str) -> None:
    """Rows for benchmarks/time_to_quality.csv and the plot, read back from the run directories."""
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    common = {"preset": preset, "epochs": epochs, "cpu": platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "fastdstn": fastdstn.__version__,
              "timestamp": stamp}
    rows, curves = [], {}
    for seed in seeds:
        run_dir = os.path.join(out, preset, f"seed{seed}", "delta")
        curve = delta_curve(run_dir)
        with open(os.path.join(run_dir, "summary.json")) as f:
            synthetic = json.load(f)["synthetic_data"]
        curves.setdefault("delta", []).append([(t, v) for t, v, _ in curve])
        rows.append({**common, "seed": seed, "method": "delta", "runs": 1, "wall_time_s": round(curve[-1][0], 2),
                     "best_val_loss": curve[-1][1], "best_test_loss": curve[-1][2], "synthetic_data": synthetic})
        for method in methods:
            study_dir = os.path.join(out, preset, f"seed{seed}", method)
            with open(os.path.join(study_dir, "tune_summary.json")) as f:
                result = json.load(f)
            trajectory = read_csv(os.path.join(study_dir, "trajectory.csv"))
            curves.setdefault(method, []).append([(float(r["wall_time_s"]), float(r["best_val_loss"]))
                                                  for r in trajectory if r["best_val_loss"] not in ("", None)])
            rows.append({**common, "seed": seed, "method": method, "runs": result["trials"],
                         "wall_time_s": result["wall_time_s"], "best_val_loss": result["best_val_loss"],
                         "best_test_loss": result["best_test_loss"], "synthetic_data": result["synthetic_data"]})

    csv_path = os.path.join(HERE, "time_to_quality.csv")
    new_file = not os.path.exists(csv_path)
    with open(csv_path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new_file:
            writer.writeheader()
        writer.writerows(rows)

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (method, runs) in enumerate(curves.items()):
        for j, points in enumerate(runs):
            if points:
                xs, ys = zip(*points)
                ax.step(xs, ys, where="post", color=f"C{i}", alpha=0.8, label=method if j == 0 else None,
                        marker="o" if method == "delta" else None, markersize=3)
    ax.set_xlabel("wall-clock (s)")
    ax.set_ylabel("best validation loss so far")
    ax.set_title(f"{preset}: {epochs} epochs per run, seeds {list(seeds)}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, f"time_to_quality_{preset}.png"), dpi=120)
    print("| method | seed | runs | wall s | best val | test of best |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['seed']} | {r['runs']} | {r['wall_time_s']} | {r['best_val_loss']} | "
              f"{r['best_test_loss']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", required=True)
    parser.add_argument("--epochs", type=int, required=True, help="epochs of the Δ-STN run and of every trial")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=["random", "tpe", "gp"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--out", default=os.path.join("runs", "time_to_quality"))
    parser.add_argument("--report-only", action="store_true",
                        help="read the finished run directories (an interrupted study resumes with `fastdstn tune`)")
    args = parser.parse_args()
    if not args.report_only:
        for seed in args.seeds:
            run(args.preset, args.epochs, seed, args.methods, args.set, args.out)
    report(args.preset, args.epochs, args.seeds, args.methods, args.out)


if __name__ == "__main__":
    main()
