"""The GPU suite's code runs end to end at toy shapes on the CPU (`--smoke`), so a lent GPU session runs it
without surprises."""
import pytest

import gpu_suite

pytestmark = pytest.mark.slow


def test_smoke_writes_every_table(tmp_path):
    out = tmp_path / "suite.md"
    lines = gpu_suite.main(["--smoke", "--out", str(out)])
    tables = {line.split(" | ")[0].strip("| ") for line in lines[2:]}
    assert tables == {"ops linear", "ops conv", "attention", "steps"}
    assert all(line.split(" | ")[3] != "floor" or " | 1.00 | " in line for line in lines[2:])
    assert out.read_text().startswith("# GPU suite")
