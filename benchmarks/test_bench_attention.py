"""Smoke run of benchmarks/bench_attention.py: every provider, the block sweep and the routing-overhead steps
run once on tiny shapes."""
import os
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "bench_attention.py")


@pytest.mark.parametrize("extra,rows", [([], 1), (["--block-sweep"], 5), (["--routing-overhead"], 6)])
def test_smoke(extra, rows):
    done = subprocess.run([sys.executable, SCRIPT, "--smoke", "--threads", "1", *extra], capture_output=True,
                          text=True, check=True, timeout=600)
    table = [line for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(table) == 1 + rows, done.stdout
