"""Suite-wide settings. TRITON_INTERPRET must be set before any @triton.jit decorator runs, so it is
set here, before a test module imports a Triton kernel, whenever no GPU is visible."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield


# Shared test helpers (tests/stn_test_models.py) import as top-level modules.
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
