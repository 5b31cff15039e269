"""Settings for the Triton kernel tests (CPU under TRITON_INTERPRET=1, set by tests/conftest.py, or a GPU).
The shared helpers live in kernel_checks.py: importing them from a module named `conftest` would be
ambiguous next to tests/conftest.py."""
import os

import pytest

# One pinned launch config in tests (xformers' habit): read when the Triton kernels are first imported.
os.environ.setdefault("FASTDSTN_TRITON_PIN", "1")
pytest.importorskip("fastdstn.ops.triton_config")
