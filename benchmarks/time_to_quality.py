"""Time to quality: one Δ-STN run against random search, TPE and GP-BO given a multiple of its wall-clock.

For each preset and seed: Δ-STN trains once (its wall time T is the budget), then each black-box method
runs `fixed`-mode trials of the same network until k·T is spent (`--methods tpe:5` gives TPE 5·T; a bare
name means 1·T). We record best validation loss against wall-clock for every method, and the test loss of
each method's best model. A method given k > 1 is also reported at 1·T, read from the same study: a study's
trials do not depend on its budget (seeded sampler, seeded trials), so the study cut after the first trial
that ends at or past T is the one a 1·T budget would have run.

    python benchmarks/time_to_quality.py --preset uci-linear --epochs 20 --seeds 0 1 2
    python benchmarks/time_to_quality.py --preset mnist-mlp-5k --epochs 20 --seeds 0 1 2 \
        --methods random tpe:5 gp --set train.warmup_epochs=1

Adds rows to benchmarks/time_to_quality.csv and writes benchmarks/time_to_quality_<preset>.png (or under --results);
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
FIELDS = ["preset", "settings", "seed", "method", "budget_x", "epochs", "runs", "wall_time_s", "best_val_loss", "best_test_loss",
          "synthetic_data", "hypers", "cpu", "threads", "torch", "fastdstn", "timestamp"]


def read_rows(path: str):
    """A CSV's rows as written (strings; empty cells stay empty)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def shown(hypers) -> str:
    """Hyperparameter values as `name=value` pairs, 3 significant digits."""
    return " ".join(f"{k}={v:.3g}" for k, v in (hypers or {}).items())


def delta_curve(run_dir: str):
    """(cumulative seconds, best val so far, test loss of that best) after every epoch of one run."""
    elapsed, best, best_test, curve = 0.0, math.inf, None, []
    for row in read_csv(os.path.join(run_dir, "metrics.csv")):
        elapsed += float(row["epoch_seconds"])
        if float(row["val_loss"]) < best:
            best, best_test = float(row["val_loss"]), float(row["test_loss"])
        curve.append((elapsed, best, best_test))
    return curve


def method_spec(text: str):
    """"tpe:5" → ("tpe", 5.0); "tpe" → ("tpe", 1.0)."""
    name, _, multiple = text.partition(":")
    if name not in ("random", "tpe", "gp"):
        raise SystemExit(f"--methods: expected random, tpe or gp, optionally with :MULTIPLE, received {text!r}")
    try:
        k = float(multiple) if multiple else 1.0
    except ValueError:
        k = 0.0
    if not k > 0:
        raise SystemExit(f"--methods: the budget multiple after ':' must be a number > 0, received {text!r}")
    return name, k


def study_dir(out: str, preset: str, seed: int, name: str, k: float) -> str:
    return os.path.join(out, preset, f"seed{seed}", name if k == 1 else f"{name}-{k:g}x")


def cut_at(trajectory, budget: float):
    """The study's trajectory as a `budget`-second study would have run it: trials start while the time spent
    is below the budget."""
    kept = []
    for row in trajectory:
        if kept and float(kept[-1]["wall_time_s"]) >= budget:
            break
        kept.append(row)
    return kept


def run(preset: str, epochs: int, seed: int, methods, overrides, out: str) -> None:
    """Δ-STN once, then each black-box method with k times the Δ-STN run's wall-clock as its budget."""
    config = load_config(preset, overrides=overrides + [f"train.epochs={epochs}", f"train.seed={seed}",
                                                        "train.mode=delta"])
    run_dir = os.path.join(out, preset, f"seed{seed}", "delta")
    Trainer(config, run_dir, progress=False).fit(overwrite=True)     # a rerun of the benchmark starts over
    budget = delta_curve(run_dir)[-1][0]
    print(f"seed {seed} delta: {budget:.1f}s", flush=True)
    for name, k in methods:
        result = tune(config, name, trials=10_000, out_dir=study_dir(out, preset, seed, name, k),
                      budget_seconds=k * budget, epochs=epochs, seed=seed, progress=False)
        print(f"seed {seed} {name} {k:g}x: {result['trials']} trials in {result['wall_time_s']:.1f}s", flush=True)


def report(preset: str, epochs: int, seeds, methods, out: str, results: str = HERE, overrides=(),
           plot_name: str = "") -> None:
    """Rows for benchmarks/time_to_quality.csv and the plot, read back from the run directories."""
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    common = {"preset": preset, "settings": " ".join(overrides), "epochs": epochs, "cpu": platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "fastdstn": fastdstn.__version__,
              "timestamp": stamp}
    rows, curves, budgets = [], {}, []
    for seed in seeds:
        run_dir = os.path.join(out, preset, f"seed{seed}", "delta")
        curve = delta_curve(run_dir)
        with open(os.path.join(run_dir, "summary.json")) as f:
            summary = json.load(f)
        synthetic = summary["synthetic_data"]
        budget = curve[-1][0]
        budgets.append(budget)
        curves.setdefault("delta", []).append([(t, v) for t, v, _ in curve])
        rows.append({**common, "seed": seed, "method": "delta", "budget_x": 1, "runs": 1,
                     "wall_time_s": round(budget, 2), "best_val_loss": curve[-1][1], "best_test_loss": curve[-1][2],
                     "synthetic_data": synthetic, "hypers": shown(summary["final_hypers"])})
        for name, k in methods:
            directory = study_dir(out, preset, seed, name, k)
            with open(os.path.join(directory, "tune_summary.json")) as f:
                study = json.load(f)
            synthetic = study["synthetic_data"]
            trajectory = read_rows(os.path.join(directory, "trajectory.csv"))
            curves.setdefault(f"{name} {k:g}x", []).append(
                [(float(r["wall_time_s"]), float(r["best_val_loss"])) for r in trajectory
                 if r["best_val_loss"] not in ("", None)])
            for multiple in sorted({1.0, k}):
                kept = cut_at(trajectory, multiple * budget)
                last = kept[-1] if kept else {"wall_time_s": 0.0, "best_val_loss": "", "best_test_loss": ""}
                rows.append({**common, "seed": seed, "method": name, "budget_x": f"{multiple:g}", "runs": len(kept),
                             "wall_time_s": float(last["wall_time_s"]), "best_val_loss": last["best_val_loss"],
                             "best_test_loss": last["best_test_loss"], "synthetic_data": synthetic,
                             "hypers": shown(study["best_hypers"]) if multiple == k else ""})

    csv_path = os.path.join(results, "time_to_quality.csv")
    kept = read_rows(csv_path) if os.path.exists(csv_path) else []
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        for row in kept:
            row.setdefault("budget_x", "1")     # rows from before budget_x were 1x
        writer.writeheader()
        writer.writerows(kept + rows)

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (method, runs) in enumerate(curves.items()):
        for j, points in enumerate(runs):
            if points:
                xs, ys = zip(*points)
                ax.step(xs, ys, where="post", color=f"C{i}", alpha=0.8, label=method if j == 0 else None,
                        marker="o" if method == "delta" else None, markersize=3)
    for budget in budgets:
        ax.axvline(budget, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xlabel("wall-clock (s); dotted: the Δ-STN run's time T per seed")
    ax.set_ylabel("best validation loss so far")
    ax.set_title(f"{preset}: {epochs} epochs per run, seeds {list(seeds)}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(results, plot_name or f"time_to_quality_{preset}.png"), dpi=120)
    print("| method | budget | seed | runs | wall s | best val | test of best | hyperparameters |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['budget_x']}x | {r['seed']} | {r['runs']} | {r['wall_time_s']} | "
              f"{r['best_val_loss']} | {r['best_test_loss']} | {r['hypers']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", required=True)
    parser.add_argument("--epochs", type=int, required=True, help="epochs of the Δ-STN run and of every trial")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", type=method_spec, default=[("random", 1.0), ("tpe", 1.0), ("gp", 1.0)],
                        metavar="NAME[:MULTIPLE]", help="random, tpe, gp; :K gives K times the Δ-STN run's time")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--out", default=os.path.join("runs", "time_to_quality"))
    parser.add_argument("--results", default=HERE, help="where time_to_quality.csv and the plot are written")
    parser.add_argument("--plot", default="", help="the plot's file name (default time_to_quality_PRESET.png)")
    parser.add_argument("--report-only", action="store_true",
                        help="read the finished run directories (an interrupted study resumes with `fastdstn tune`)")
    args = parser.parse_args()
    if not args.report_only:
        for seed in args.seeds:
            run(args.preset, args.epochs, seed, args.methods, args.set, args.out)
    report(args.preset, args.epochs, args.seeds, args.methods, args.out, args.results, args.set, args.plot)


if __name__ == "__main__":
    main()
