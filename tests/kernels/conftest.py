"""Settings for the Triton kernel tests (CPU under TRITON_INTERPRET=1, set by tests/conftest.py, or a GPU).
The shared helpers live in kernel_checks.py: importing them from a module named `conftest` would be
ambiguous next to tests/conftest.py."""
import os

import pytest

# One pinned launch config in tests (xformers' habit): read when fastdstn.kernels is first imported.
os.environ.setdefault("FASTDSTN_TRITON_PIN", "1")
kernels = pytest.importorskip("fastdstn.kernels")
if not kernels.AVAILABLE:  # pragma: no cover
    pytest.skip(f"triton backend unavailable: {kernels.UNAVAILABLE_REASON}", allow_module_level=True)
