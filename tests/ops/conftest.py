"""Settings for the op tests. The Triton kernels run on CPU under TRITON_INTERPRET=1 (tests/conftest.py) or on a
GPU, with one pinned launch config (xformers' habit), read when a kernel module is first imported. The shared
helpers live in op_cases.py (importing them from a module named `conftest` would be ambiguous next to
tests/conftest.py); tests/ops/machine imports them too."""
import os
import sys

import pytest

from fastdstn import ops

os.environ.setdefault("FASTDSTN_TRITON_PIN", "1")
sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture
def reference_backend():
    """The public ops on the reference backend."""
    with ops.use_backend("reference"):
        yield
