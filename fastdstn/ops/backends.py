"""Which implementation of an op runs: the backend registry and `use_backend`.

Backends: "reference" (fastdstn.ops.reference, always there), "cpp" (fastdstn.ops.cpp: the compiled
ATen/OpenMP and CUDA extension) and "triton" (fastdstn.kernels: CUDA tensors only). "auto" picks, per
device, the first available of cpp → triton → reference on CUDA and cpp → reference on CPU. A
backend that is asked for but missing (not built, no GPU) falls back to the reference with one
warning; an op a backend does not implement runs the reference silently.
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib
import warnings
from types import ModuleType
from typing import Dict, Iterator, Optional

from . import reference

BACKEND_MODULES = {"reference": "fastdstn.ops.reference", "cpp": "fastdstn.ops.cpp", "triton": "fastdstn.kernels"}
# CUDA: the compiled ops first. Measured on an H100 (torch 2.11, benchmarks/RESULTS_gpu.md): at the
# SPEC §8 layer sizes the dual ops are launch-bound and cpp runs them 1.15–1.56x faster than the
# reference, the Triton backend 1.4–3x slower than cpp; the fmnist-quick epoch takes 0.7–0.9 s with cpp,
# 1.2–1.3 s with triton. Triton serves CUDA when the extension was built without CUDA kernels.
AUTO_ORDER = {"cuda": ("cpp", "triton", "reference"), "cpu": ("cpp", "reference")}

_forced: contextvars.ContextVar[str] = contextvars.ContextVar("fastdstn_backend", default="auto")
_loaded: Dict[str, Optional[ModuleType]] = {"reference": reference}
_load_errors: Dict[str, str] = {}
_warned: set = set()


def load(name: str) -> Optional[ModuleType]:
    """The backend's module, or None (with the reason in `load_error(name)`) when it cannot load."""
    if name not in _loaded:
        try:
            module = importlib.import_module(BACKEND_MODULES[name])
            if not getattr(module, "AVAILABLE", True):
                raise ImportError(getattr(module, "UNAVAILABLE_REASON", f"backend {name!r} is not available"))
            _loaded[name] = module
        except ImportError as error:
            _loaded[name] = None
            _load_errors[name] = str(error)
    return _loaded[name]


def load_error(name: str) -> str:
    return _load_errors.get(name, "")


def supports(module: ModuleType, device_type: str) -> bool:
    return device_type in getattr(module, "DEVICE_TYPES", ("cpu", "cuda"))


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Force a backend inside the block: "auto", "reference", "cpp" or "triton"."""
    if name != "auto" and name not in BACKEND_MODULES:
        raise ValueError(f"use_backend: expected one of 'auto', {', '.join(map(repr, BACKEND_MODULES))}; "
                         f"received {name!r}")
    token = _forced.set(name)
    try:
        yield
    finally:
        _forced.reset(token)


def current_backend() -> str:
    return _forced.get()


def _warn_once(name: str, device_type: str) -> None:
    key = (name, device_type)
    if key not in _warned:
        _warned.add(key)
        reason = load_error(name) or f"it does not run on {device_type} tensors"
        warnings.warn(f"fastdstn: backend {name!r} is unavailable ({reason}); using the reference backend. "
                      f"`fastdstn info` shows what was built.", RuntimeWarning, stacklevel=4)


def choose(op: str, device_type: str):
    """(backend name, callable) that runs `op` on tensors of `device_type` under the current backend choice."""
    forced = _forced.get()
    candidates = AUTO_ORDER.get(device_type, ("reference",)) if forced == "auto" else (forced,)
    for name in candidates:
        module = load(name)
        if module is not None and supports(module, device_type):
            implementation = getattr(module, op, None)
            if implementation is not None:
                return name, implementation
        elif forced != "auto":
            _warn_once(name, device_type)
    return "reference", getattr(reference, op)


def resolve(op: str, device_type: str):
    """The callable that runs `op` on tensors of `device_type` under the current backend choice."""
    return choose(op, device_type)[1]


def available() -> Dict[str, str]:
    """Backend name → "available" or the reason it is not (for `fastdstn info`)."""
    return {name: ("available" if load(name) is not None else load_error(name)) for name in BACKEND_MODULES}
