"""Smoke run of benchmarks/bench_step_cost.py at toy sizes: every model's plain step, Δ-STN step and sub-steps run,
the profiler split adds up, and the table is written."""
import sys

import bench_step_cost


def test_bench_step_cost_writes_its_table(tmp_path, monkeypatch):
    out = tmp_path / "step_cost.md"
    monkeypatch.setattr(sys, "argv", ["bench_step_cost.py", "--smoke", "--threads", "1", "--out", str(out)])
    bench_step_cost.main()
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and "×" not in line
            and not line.startswith("|---")]
    assert len(rows) == len(bench_step_cost.TARGETS), rows
    assert all(row.count("|") == 17 for row in rows), rows
