"""Smoke run of benchmarks/bench_cpu_env.py (each part spawns its own processes): it runs and reports each setting."""
import os
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "bench_cpu_env.py")


@pytest.mark.parametrize("part,lines,marker", [("malloc", 2, "freed memory kept"), ("isa", 3, "isa: "),
                                               ("pooling", 1, "channels-last copy ms"),
                                               ("inductor", 1, "mask, compiled scalar ms")])
def test_parts_run(part, lines, marker):
    done = subprocess.run([sys.executable, SCRIPT, part], capture_output=True, text=True, check=True, timeout=600)
    rows = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(rows) == lines and all(marker in row for row in rows), done.stdout


def test_inductor_step_part_runs():
    done = subprocess.run([sys.executable, SCRIPT, "inductor-step", "--quick"], capture_output=True, text=True,
                          check=True, timeout=600)
    assert "general sub-step compiled ms" in done.stdout and "compiled kernel graph_" in done.stdout, done.stdout


def test_gemm_part_runs():
    done = subprocess.run([sys.executable, SCRIPT, "gemm", "--quick"], capture_output=True, text=True, check=True,
                          timeout=600)
    rows = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(rows) == 3 and all("ATen / kernel" in row for row in rows), done.stdout
