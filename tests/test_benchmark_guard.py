"""The benchmark regression guard (benchmarks/compare.py), the results table (benchmarks/results.py), its
rendering (benchmarks/report.py) and the timer's percentiles (benchmarks/timing.py), on synthetic CSVs: fast,
no timing; and run_all.py's smoke run end to end."""
import os
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCH)

import compare  # noqa: E402
import report  # noqa: E402
import results  # noqa: E402
import run_all  # noqa: E402
import timing  # noqa: E402

INFO = dict(device="cpu", cpu="test cpu", threads="2", torch="x", fastdstn="y", timestamp="2026-01-01T00:00:00Z")


def rows(cpp_ms=2.0, floor_ms=1.0, delta_ms=30.0, plain_ms=10.0, delta_mb=20.0, plain_mb=8.0, info=INFO,
         spread=0.1):
    """A small results table: one op (floor, reference, cpp) and one model (plain, Δ-STN train step)."""
    def r(suite, op, provider, mode, shape, metric, v):
        values = (v * (1 - spread), v, v * (1 + spread))
        return results.make_row(info, suite, op, provider, mode, shape, metric, values, 9)
    out = []
    for mode, scale in (("fwd", 0.6), ("bwd", 0.4), ("full", 1.0)):
        out += [r("ops", "stn_linear_dual", "floor", mode, "B8 4->4", "time_ms", floor_ms * scale),
                r("ops", "stn_linear_dual", "reference", mode, "B8 4->4", "time_ms", 3.0 * floor_ms * scale),
                r("ops", "stn_linear_dual", "cpp", mode, "B8 4->4", "time_ms", cpp_ms * scale)]
    out += [r("steps", "plain", "torch", "full", "MLP", "time_ms", plain_ms),
            r("steps", "delta:train", "cpp", "full", "MLP", "time_ms", delta_ms),
            r("steps", "plain", "torch", "full", "MLP", "saved_MB", plain_mb),
            r("steps", "delta:train", "cpp", "full", "MLP", "saved_MB", delta_mb)]
    return out


def run_guard(tmp_path, baseline, fresh, *extra):
    b, f = tmp_path / "baseline.csv", tmp_path / "fresh.csv"
    results.write_csv(str(b), baseline)
    results.write_csv(str(f), fresh)
    return compare.main(["--baseline", str(b), "--fresh", str(f), *extra])


def test_identical_runs_pass(tmp_path, capsys):
    assert run_guard(tmp_path, rows(), rows()) == 0
    assert "0 regression(s)" in capsys.readouterr().out


def test_slower_provider_is_flagged(tmp_path, capsys):
    assert run_guard(tmp_path, rows(), rows(cpp_ms=2.6)) == 1     # cpp / floor: 2.0x -> 2.6x (+30%)
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "cpp" in out and "3 regression(s)" in out   # fwd, bwd, full


def test_uniformly_slower_machine_is_not_a_regression(tmp_path):
    # Everything 3x slower (a busier or older machine): every ratio is unchanged.
    slow = rows(cpp_ms=6.0, floor_ms=3.0, delta_ms=90.0, plain_ms=30.0)
    assert run_guard(tmp_path, rows(), slow) == 0


def test_growth_below_threshold_passes_and_threshold_is_configurable(tmp_path):
    assert run_guard(tmp_path, rows(), rows(delta_ms=33.0)) == 0                        # +10% < 15%
    assert run_guard(tmp_path, rows(), rows(delta_ms=33.0), "--threshold", "0.05") == 1


def test_faster_plain_step_makes_the_stn_step_ratio_worse(tmp_path, capsys):
    # The denominator matters: plain got 25% faster, the Δ-STN step did not: 3.0x -> 4.0x.
    assert run_guard(tmp_path, rows(), rows(plain_ms=7.5)) == 1
    assert "delta:train" in capsys.readouterr().out


def test_improvement_is_reported_not_flagged(tmp_path, capsys):
    assert run_guard(tmp_path, rows(), rows(cpp_ms=1.2)) == 0
    assert "improved" in capsys.readouterr().out


def test_saved_bytes_regression_is_flagged(tmp_path, capsys):
    assert run_guard(tmp_path, rows(), rows(delta_mb=30.0)) == 1
    assert "saved_MB" in capsys.readouterr().out


def test_missing_and_new_keys_are_listed_not_flagged(tmp_path, capsys):
    fresh = [r for r in rows() if r["provider"] != "cpp"]
    fresh.append(results.make_row(INFO, "ops", "stn_conv2d_dual", "floor", "full", "conv", "time_ms", (1, 1, 1), 3))
    fresh.append(results.make_row(INFO, "ops", "stn_conv2d_dual", "cpp", "full", "conv", "time_ms", (2, 2, 2), 3))
    assert run_guard(tmp_path, rows(), fresh) == 0
    out = capsys.readouterr().out
    assert "only in the baseline" in out and "only in the fresh run" in out


def test_stat_option_compares_that_percentile(tmp_path):
    # Same medians, but the fresh p20 of cpp is much higher: flagged with --stat p20 only.
    fresh = rows()
    for r in fresh:
        if r["provider"] == "cpp" and r["suite"] == "ops":
            r["p20"] = str(float(r["p50"]) * 1.5)
    assert run_guard(tmp_path, rows(), fresh) == 0
    assert run_guard(tmp_path, rows(), fresh, "--stat", "p20") == 1


def test_appended_runs_use_the_newest_rows(tmp_path):
    newer = dict(INFO, timestamp="2026-02-01T00:00:00Z")
    baseline = rows(cpp_ms=4.0) + rows(info=newer)        # an old slow run, then the current one
    assert results.ratios(baseline)[("ops", "stn_linear_dual", "cpp", "full", "B8 4->4", "time_ms")] == \
        pytest.approx(2.0)
    assert run_guard(tmp_path, baseline, rows()) == 0


def test_ratio_denominators():
    r = results.ratios(rows())
    assert r[("ops", "stn_linear_dual", "reference", "bwd", "B8 4->4", "time_ms")] == pytest.approx(3.0)
    assert r[("steps", "delta:train", "cpp", "full", "MLP", "time_ms")] == pytest.approx(3.0)
    assert r[("steps", "delta:train", "cpp", "full", "MLP", "saved_MB")] == pytest.approx(2.5)
    assert not any(k[2] == "floor" or k[1] == "plain" for k in r)     # denominators have no ratio


def test_paired_ratio_rows_take_precedence():
    # The run recorded per-round paired ratios: their median is the ratio, not p50 / floor's p50.
    table = rows() + [results.make_row(INFO, "ops", "stn_linear_dual", "cpp", "full", "B8 4->4", "time_ratio",
                                       (1.5, 1.7, 1.9), 9)]
    r = results.ratios(table)
    assert r[("ops", "stn_linear_dual", "cpp", "full", "B8 4->4", "time_ms")] == pytest.approx(1.7)
    assert r[("ops", "stn_linear_dual", "cpp", "fwd", "B8 4->4", "time_ms")] == pytest.approx(2.0)
    assert not any(k[5] == "time_ratio" for k in r)


def test_best_of_repeated_runs_keeps_each_smallest_ratio():
    a, b = {("k", "1"): 2.0, ("k", "2"): 1.0}, {("k", "1"): 1.5, ("k", "2"): 3.0, ("k", "3"): 4.0}
    assert compare.best_of([a, b]) == {("k", "1"): 1.5, ("k", "2"): 1.0, ("k", "3"): 4.0}


def test_csv_round_trip_and_markdown(tmp_path):
    path = str(tmp_path / "r.csv")
    results.write_csv(path, rows())
    back = results.read_csv(path)
    assert [results.key(r) for r in back] == [results.key(r) for r in rows()]
    assert set(back[0]) == set(results.FIELDS)
    results.write_csv(path, rows(), append=True)
    assert len(results.read_csv(path)) == 2 * len(rows())
    md = report.render_markdown(back, directory=str(tmp_path))
    assert "| stn_linear_dual | B8 4->4 | full | 1.000 |" in md      # floor column
    assert "2.00x" in md and "3.00x" in md                          # cpp / floor, Δ-STN × plain
    assert "ratios" in md.lower() and "test cpu" in md


def test_percentiles():
    assert timing.percentiles([5.0]) == (5.0, 5.0, 5.0)
    p20, p50, p80 = timing.percentiles([float(i) for i in range(11)])
    assert (p20, p50, p80) == pytest.approx((2.0, 5.0, 8.0))


def test_run_all_smoke_end_to_end(tmp_path):
    """run_all --smoke (tiny shapes, one round) writes a CSV with every column, report.py renders RESULTS.md,
    and the guard accepts a run compared with itself."""
    csv_path, md_path = str(tmp_path / "results.csv"), str(tmp_path / "RESULTS.md")
    run_all.main(["--smoke", "--threads", "1", "--models", "mlp,lstm", "--csv", csv_path, "--silent"])
    report.main(["--csv", csv_path, "--md", md_path, "--no-plots"])
    written = results.read_csv(csv_path)
    assert {r["suite"] for r in written} == {"ops", "steps"}
    assert {r["metric"] for r in written if r["suite"] == "steps"} >= {"time_ms", "time_ratio", "saved_MB"}
    assert {r["mode"] for r in written if r["suite"] == "ops"} == {"fwd", "bwd", "full"}
    assert all(r[f] for r in written for f in results.FIELDS)
    assert "delta:train" in open(md_path).read()
    assert compare.main(["--baseline", csv_path, "--fresh", csv_path]) == 0
