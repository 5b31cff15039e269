"""Smoke run of benchmarks/bench_zoo.py on one zoo model: every provider steps, and the table is written."""
import sys

import bench_zoo


def test_bench_zoo_writes_its_table(tmp_path, monkeypatch):
    out = tmp_path / "zoo.md"
    monkeypatch.setattr(sys, "argv", ["bench_zoo.py", "--models", "gpt", "--token-batch", "2", "--budget", "0",
                                      "--min-rounds", "1", "--threads", "2", "--out", str(out)])
    bench_zoo.main()
    rows = [line for line in out.read_text().splitlines() if line.startswith("| gpt |")]
    assert len(rows) == 1 and rows[0].count("|") == 13, rows
