"""pytest-benchmark suite. `make test` runs it with --benchmark-disable (each body once, as a smoke
test); `pytest benchmarks` times it. Benchmark scripts beside it import as top-level modules."""
import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, os.path.dirname(__file__))
