"""Regression guard: compare a fresh benchmark run against the committed benchmarks/results.csv.

    python benchmarks/compare.py                                   # fresh quick run, compared with the CSV
    python benchmarks/compare.py --fresh /tmp/new.csv              # compare an existing run instead
    python benchmarks/compare.py --threshold 0.15 --suites steps --models mlp

What is compared are RATIOS, never absolute times: provider / floor for the ops (same op, mode and
shape), step / plain SGD step for the steps (same model), and saved-for-backward bytes / plain's.
Machines differ and this one is shared, but an interleaved ratio is measured against a denominator that
ran in the same process under the same load (run_all records per-round paired ratios; their median is
what is compared). A ratio that grew by more than the threshold (fresh >
baseline × (1 + threshold)) is a regression; exit status 1 if there is any, 0 otherwise. Keys that only
one side has are listed, not flagged (a new shape or backend is not a regression).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import results  # noqa: E402

Key = Tuple[str, ...]


@dataclass
class Change:
    key: Key
    baseline: float
    fresh: float

    @property
    def relative(self) -> float:
        return self.fresh / self.baseline - 1.0

    def describe(self) -> str:
        suite, op, provider, mode, shape, metric = self.key
        return (f"{suite:5s} {op:16s} {provider:9s} {mode:4s} {shape:40s} {metric:8s} "
                f"{self.baseline:6.2f}x -> {self.fresh:6.2f}x ({self.relative:+.0%})")


def _ratios(rows, stat: str) -> Dict[Key, float]:
    """results.ratios on the chosen statistic (p50 by default; p20 is steadier under heavy load)."""
    if stat != "p50":
        rows = [dict(r, p50=r[stat]) for r in rows]
    return results.ratios(rows)


def compare(baseline_rows: Sequence[dict], fresh_rows: Sequence[dict], threshold: float,
            stat: str = "p50") -> Tuple[List[Change], List[Change], List[Key], List[Key]]:
    """(regressions, improvements beyond the threshold, keys only in the baseline, keys only in the fresh run)."""
    return compare_ratios(_ratios(baseline_rows, stat), _ratios(fresh_rows, stat), threshold)


def best_of(runs: Sequence[Dict[Key, float]]) -> Dict[Key, float]:
    """Per key, the smallest ratio over repeated fresh runs: noise only ever adds time to one side of a
    ratio at random, while a real regression shows in every run."""
    out: Dict[Key, float] = {}
    for run in runs:
        for k, v in run.items():
            out[k] = min(v, out.get(k, v))
    return out


def compare_ratios(base: Dict[Key, float], fresh: Dict[Key, float], threshold: float):
    worse, better = [], []
    for k in sorted(base.keys() & fresh.keys()):
        change = Change(k, base[k], fresh[k])
        if fresh[k] > base[k] * (1 + threshold):
            worse.append(change)
        elif fresh[k] < base[k] / (1 + threshold):
            better.append(change)
    return worse, better, sorted(base.keys() - fresh.keys()), sorted(fresh.keys() - base.keys())


def main(argv: Optional[List[str]] = None) -> int:
    import run_all

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", default=results.RESULTS_CSV, help="the committed CSV (default: %(default)s)")
    p.add_argument("--fresh", default=None, help="a CSV from run_all.py; without it, a --quick run is made now")
    p.add_argument("--threshold", type=float, default=0.15, help="allowed relative growth of a ratio")
    p.add_argument("--stat", default="p50", choices=("p20", "p50", "p80"))
    p.add_argument("--full", action="store_true", help="make the fresh run a full run, not --quick")
    p.add_argument("--suites", default="ops,steps")
    p.add_argument("--models", default="mlp,cnn,lstm")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--confirm", type=int, default=1,
                   help="when this command measured the fresh run and something regressed, measure up to this many "
                        "more times and keep each ratio's best: only a regression that persists is flagged")
    p.add_argument("--verbose", action="store_true", help="print every compared ratio")
    args = p.parse_args(argv)

    baseline = results.read_csv(args.baseline)
    base = _ratios(baseline, args.stat)
    run_args = ["--suites", args.suites, "--models", args.models, "--threads", str(args.threads)]
    run_args += [] if args.full else ["--quick"]

    path = os.path.join(tempfile.gettempdir(), "fastdstn-bench-fresh.csv")
    measured: List[int] = []

    def measure() -> Dict[Key, float]:
        rows = run_all.run(run_all.parser().parse_args(run_args))
        results.write_csv(path, rows, append=bool(measured))     # this invocation's runs, one file
        measured.append(len(rows))
        print(f"fresh run {len(measured)} written to {path}")
        return _ratios(rows, args.stat)

    runs = [_ratios(results.read_csv(args.fresh), args.stat) if args.fresh is not None else measure()]
    worse, better, gone, new = compare_ratios(base, runs[0], args.threshold)
    while worse and args.fresh is None and len(runs) <= args.confirm:
        print(f"{len(worse)} ratio(s) beyond the threshold: measuring again to tell a regression from noise")
        runs.append(measure())
        worse, better, gone, new = compare_ratios(base, best_of(runs), args.threshold)
    now = best_of(runs)
    if args.verbose:
        for k in sorted(base.keys() & now.keys()):
            print("  " + Change(k, base[k], now[k]).describe())
    compared = len(base.keys() & now.keys())
    print(f"compared {compared} ratios ({args.stat}) against {args.baseline}, threshold {args.threshold:.0%}")
    if gone:
        print(f"{len(gone)} ratio(s) only in the baseline (not measured now): "
              + "; ".join(" ".join(k) for k in gone[:5]) + (" ..." if len(gone) > 5 else ""))
    if new:
        print(f"{len(new)} ratio(s) only in the fresh run (no baseline yet)")
    for change in better:
        print("improved   " + change.describe())
    for change in worse:
        print("REGRESSION " + change.describe())
    print(f"{len(worse)} regression(s), {len(better)} improvement(s) beyond {args.threshold:.0%}")
    return 1 if worse else 0


if __name__ == "__main__":
    sys.exit(main())
