"""Smoke run of benchmarks/bench_attention.py: every provider, the block sweep, the routing-overhead steps
(small MLP) and the keep-mask comparison run once on tiny shapes."""
import pytest

import bench_attention
from fastdstn.ops import cpp

needs_cpp = pytest.mark.skipif(not cpp.AVAILABLE, reason="the compiled extension is not available")


@pytest.mark.parametrize("extra,rows", [([], 1), (["--block-sweep"], 5), (["--routing-overhead"], 2),
                                        pytest.param(["--keep-mask"], 1, marks=needs_cpp)])
def test_smoke(capsys, extra, rows):
    bench_attention.main(["--smoke", *extra])
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(table) == 1 + rows, out
