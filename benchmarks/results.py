"""The benchmark results table, benchmarks/results.csv: its columns, rows, ratios and the CSV file.

One row per (suite, op, provider, mode, shape, metric) and run, with p20/p50/p80 and the machine it ran on.
`run_all.py` writes the ops and steps suites, the benchmarks of one subject append theirs (`append_rows`:
bench_ops_cpp.py → ops_cpp, bench_attention.py → attention, bench_augment.py → augment); `report.py` renders
them, `compare.py` compares the ratios of two tables.
"""
from __future__ import annotations

import csv
import datetime
import os
import platform
from typing import Dict, Iterable, List, Optional, Tuple

import torch

import fastdstn
from timing import paired, percentiles

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_CSV = os.path.join(HERE, "results.csv")
FIELDS = ["suite", "op", "provider", "mode", "shape", "metric", "p20", "p50", "p80", "rounds", "device", "cpu",
          "threads", "torch", "fastdstn", "timestamp", "loadavg", "malloc", "cpu_isa", "small_gemm"]

Row = Dict[str, str]


def machine_info(device: torch.device) -> Dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return dict(device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", cpu=cpu,
                threads=str(torch.get_num_threads()), torch=torch.__version__, fastdstn=fastdstn.__version__,
                timestamp=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))


def make_row(info, suite, op, provider, mode, shape, metric, values: Tuple[float, float, float], rounds) -> Row:
    row = dict(suite=suite, op=op, provider=provider, mode=mode, shape=shape, metric=metric,
               p20=f"{values[0]:.6g}", p50=f"{values[1]:.6g}", p80=f"{values[2]:.6g}", rounds=str(rounds),
               loadavg=f"{os.getloadavg()[0]:.2f}")     # the machine's 1-min load when the case finished
    row.update(info)
    return row


def time_rows(info, suite, op, mode, shape, seconds: Dict[str, List[float]], denominator: Optional[str]) -> List[Row]:
    """The rows of one interleaved measurement (provider → seconds per round): each provider's time_ms, and its
    time_ratio, the per-round ratios to the `denominator` provider (none for the denominator itself)."""
    rows = []
    for provider, times in seconds.items():
        rows.append(make_row(info, suite, op, provider, mode, shape, "time_ms",
                             percentiles([t * 1e3 for t in times]), len(times)))
        if denominator is not None and provider != denominator:
            rows.append(make_row(info, suite, op, provider, mode, shape, "time_ratio",
                                 percentiles(paired(times, seconds[denominator])), len(times)))
    return rows


def key(row: Row) -> Tuple[str, ...]:
    return tuple(row[k] for k in ("suite", "op", "provider", "mode", "shape", "metric"))


def denominator(row: Row) -> Optional[Tuple[str, ...]]:
    """The row a ratio divides by: ops → the floor of the same op/mode/shape; steps → the plain step of
    the same model. None for the denominators themselves."""
    if row["suite"] == "ops":
        return None if row["provider"] == "floor" else ("ops", row["op"], "floor", row["mode"], row["shape"],
                                                          row["metric"])
    if row["suite"] == "steps":
        return None if row["op"] == "plain" else ("steps", "plain", "torch", row["mode"], row["shape"],
                                                    row["metric"])
    return None


def latest(rows: Iterable[Row]) -> Dict[Tuple[str, ...], Row]:
    """The newest row per key (results.csv may hold appended runs)."""
    out: Dict[Tuple[str, ...], Row] = {}
    for row in rows:
        k = key(row)
        if k not in out or row["timestamp"] >= out[k]["timestamp"]:
            out[k] = row
    return out


def ratios(rows: Iterable[Row]) -> Dict[Tuple[str, ...], float]:
    """Every row's ratio to its denominator, keyed like the row: for times, the median of the paired
    per-round ratios (the "time_ratio" row) when the run recorded them, else p50 / denominator's p50;
    for memory, p50 / p50."""
    table = latest(rows)
    out = {}
    for k, row in table.items():
        d = denominator(row)
        if row["metric"] == "time_ratio" or d is None or d not in table:
            continue
        pair = table.get(k[:5] + ("time_ratio",)) if row["metric"] == "time_ms" else None
        if pair is not None:
            out[k] = float(pair["p50"])
        elif float(table[d]["p50"]) > 0:
            out[k] = float(row["p50"]) / float(table[d]["p50"])
    return out


def read_csv(path: str) -> List[Row]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def append_rows(rows: List[Row], path: str = RESULTS_CSV) -> None:
    """Add a benchmark's rows to the table, keeping the rows of every other suite (the report reads the newest
    row of each key)."""
    write_csv(path, rows, append=True)
    print(f"appended {len(rows)} rows to {path}; `python benchmarks/report.py` renders them")


def write_csv(path: str, rows: List[Row], append: bool = False) -> None:
    old = read_csv(path) if append and os.path.exists(path) else []
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(old + rows)
