"""Smoke run of benchmarks/bench_attention.py: every provider, the block sweep and the routing-overhead steps
(small MLP) run once on tiny shapes."""
import pytest

import bench_attention


@pytest.mark.parametrize("extra,rows", [([], 1), (["--block-sweep"], 5), (["--routing-overhead"], 2)])
def test_smoke(capsys, extra, rows):
    bench_attention.main(["--smoke", *extra])
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(table) == 1 + rows, out
