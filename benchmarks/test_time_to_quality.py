"""time_to_quality.py's budget arithmetic: method specs and the 1×T cut of a longer study."""
import pytest

from time_to_quality import cut_at, method_spec


def test_method_spec_reads_a_budget_multiple():
    assert method_spec("tpe:5") == ("tpe", 5.0)
    assert method_spec("gp") == ("gp", 1.0)
    for bad in ("tpe:0", "tpe:x", "grid"):
        with pytest.raises(SystemExit, match="--methods"):
            method_spec(bad)


def test_cut_keeps_the_trials_a_shorter_budget_starts():
    """A budget-T study starts trials while the time spent is below T: the trial that crosses T is its last."""
    trajectory = [{"wall_time_s": str(t)} for t in (4.0, 9.0, 13.0, 20.0)]
    assert [r["wall_time_s"] for r in cut_at(trajectory, 10.0)] == ["4.0", "9.0", "13.0"]
    assert [r["wall_time_s"] for r in cut_at(trajectory, 9.0)] == ["4.0", "9.0"]
    assert cut_at(trajectory, 100.0) == trajectory
