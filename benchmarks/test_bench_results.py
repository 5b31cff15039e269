"""Smoke runs of the benchmarks of one subject that append to results.csv (bench_ops_cpp.py, bench_augment.py,
bench_attention.py): their rows go to a given CSV and report.py renders them; --smoke writes nothing."""
import os

import pytest

import bench_attention
import bench_augment
import bench_ops_cpp
import report
from results import read_csv


def test_ops_cpp_rows_are_rendered(tmp_path):
    pytest.importorskip("fastdstn._C")
    path = str(tmp_path / "results.csv")
    bench_ops_cpp.main(["--budget", "0", "--only", "linear (32, 256, 256)", "--csv", path])
    rows = read_csv(path)
    assert {r["suite"] for r in rows} == {"ops_cpp"}
    assert {r["provider"] for r in rows} == {"cpp", "reference", "mm-floor"}
    assert {r["metric"] for r in rows} == {"time_ms", "time_ratio"}
    md = str(tmp_path / "RESULTS.md")
    report.main(["--csv", path, "--md", md, "--no-plots"])
    assert "## Compiled ops against the reference and the GEMM floor" in open(md).read()


def test_augment_smoke_writes_nothing(tmp_path, capsys):
    path = str(tmp_path / "results.csv")
    bench_augment.main(["--smoke", "--csv", path])
    assert not os.path.exists(path)
    assert "tv2-functional (per image)" in capsys.readouterr().out


def test_attention_rows_are_appended_to_the_other_suites(tmp_path):
    path = str(tmp_path / "results.csv")
    bench_attention.main(["--lengths", "32", "--rounds", "1", "--heads", "1", "--head-dim", "8", "--csv", path])
    first = read_csv(path)
    bench_attention.main(["--block-sweep", "--lengths", "32", "--rounds", "1", "--heads", "1", "--head-dim", "8",
                          "--csv", path])
    rows = read_csv(path)
    assert rows[:len(first)] == first and {r["op"] for r in rows} == {"attention_dual", "block_sweep"}
    assert {r["metric"] for r in rows} == {"time_ms", "time_ratio", "peak_MB"}
    md = str(tmp_path / "RESULTS.md")
    report.main(["--csv", path, "--md", md, "--no-plots"])
    assert "| block_sweep | B1 h1 d8 T32 fp32 | BLOCK_ROWS=64 | dual |" in open(md).read()
