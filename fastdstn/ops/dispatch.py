"""Which implementation of an op runs: the table of ops, the backend registry and `use_backend`.

Every op lives in a family folder, fastdstn/ops/<family>/, which holds one module per backend (`OPS` names
them): "reference" (reference.py, plain PyTorch, always there), "cpp" (cpp.py, the compiled ATen/OpenMP and CUDA
extension that fastdstn.ops.cpp loads) and "triton" (triton.py, CUDA tensors; its launch settings in
fastdstn.ops.triton_config). "auto" picks, per device, the first available of cpp → triton → reference on CUDA
and cpp → reference on CPU. A backend that is asked for but missing (not built, no GPU) falls back to the
reference with one warning; an op a backend does not implement runs the reference silently.

Modules are imported on first use, so no backend module imports this one's callers (fastdstn.ops' public layer).
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib
import warnings
from types import ModuleType
from typing import Callable, Dict, Iterator, Optional, Tuple

import torch

from .autocast import dtype_for

# backend -> the module that says whether it runs here: AVAILABLE and UNAVAILABLE_REASON (True and "" when
# absent), DEVICE_TYPES and DTYPES (every device type and dtype when absent). Importing it may raise ImportError.
BACKEND_MODULES = {"reference": "fastdstn.ops.reference", "cpp": "fastdstn.ops.cpp",
                   "triton": "fastdstn.ops.triton_config"}
# op -> (its family folder under fastdstn/ops/, {backend: the module in that folder implementing it}); every
# family has a reference.py, and a backend a family does not name runs the reference for it. A family's module
# may narrow its backend's devices with its own DEVICE_TYPES (attention/cpp.py: CPU only, so that on CUDA "auto"
# goes on to the Triton kernel; penalty/cpp.py and pooling/cpp.py: CPU only, the reference on CUDA).
_DENSE_LINEAR = ("dense", {"cpp": "cpp", "triton": "triton"})
_DENSE_CONV = ("dense", {"cpp": "cpp", "triton": "triton_conv"})
OPS: Dict[str, Tuple[str, Dict[str, str]]] = {
    "stn_linear": _DENSE_LINEAR, "stn_linear_dual": _DENSE_LINEAR,
    "stn_conv2d": _DENSE_CONV, "stn_conv2d_dual": _DENSE_CONV,
    "stn_embedding": ("embedding", {}), "stn_embedding_dual": ("embedding", {}),
    "lstm_cell_dual": ("lstm_cell", {"cpp": "cpp", "triton": "triton"}),
    "dropout_dual": ("dropout", {"cpp": "cpp", "triton": "triton"}),
    "attention_dual": ("attention", {"cpp": "cpp", "triton": "triton"}),
    "attention": ("attention", {"cpp": "cpp", "triton": "triton"}),
    "penalty_row_sums": ("penalty", {"cpp": "cpp"}), "penalty_row_combination": ("penalty", {"cpp": "cpp"}),
    "max_pool2d_dual": ("pooling", {"cpp": "cpp"}), "max_pool2d_dual_backward": ("pooling", {"cpp": "cpp"}),
}
# (backend, op) pairs whose function wraps other operators and has no fastdstn::<op> of its own (so no Autocast
# kernel): the cpp attention is the reference's algorithm with the compiled keep mask fastdstn::attention_keep_mask.
NO_OPERATOR = {("cpp", "attention_dual"), ("cpp", "attention")}
# CUDA: the compiled ops first. Measured on an H100 (torch 2.11, benchmarks/history/gpu.md): at the
# docs/METHOD.md §8 layer sizes the dual ops are launch-bound and cpp runs them 1.15–1.56x faster than the
# reference, the Triton backend 1.4–3x slower than cpp; the fmnist-quick epoch takes 0.7–0.9 s with cpp,
# 1.2–1.3 s with triton. Triton serves CUDA when the extension was built without CUDA kernels.
AUTO_ORDER = {"cuda": ("cpp", "triton", "reference"), "cpu": ("cpp", "reference")}

_forced: contextvars.ContextVar[str] = contextvars.ContextVar("fastdstn_backend", default="auto")
_loaded: Dict[str, Optional[ModuleType]] = {}
_load_errors: Dict[str, str] = {}
_warned: set = set()
_implementations: Dict[Tuple[str, str], Optional[Tuple[Callable, ModuleType]]] = {}


def load(name: str) -> Optional[ModuleType]:
    """The backend's module (BACKEND_MODULES), or None (with the reason in `load_error(name)`) when it cannot load."""
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


def runs_dtype(module: ModuleType, device_type: str, dtype: Optional[torch.dtype]) -> bool:
    """Whether the backend computes `dtype` on `device_type` (a module without DTYPES computes every dtype)."""
    dtypes = getattr(module, "DTYPES", {}).get(device_type)
    return dtype is None or dtypes is None or dtype in dtypes


def compute_dtype(op: str, like: torch.Tensor) -> torch.dtype:
    """The dtype `op` computes for inputs like `like`: theirs, or under autocast the one the op's rule
    (fastdstn.ops.autocast) casts them to."""
    return dtype_for(op, like)


def operator_names(op: str) -> Tuple[str, ...]:
    """The names of the operators (fastdstn::<name>) that run `op` on the compiled backend (<op>) and the Triton
    backend (<op>_triton), for those of the two that implement it with an operator of their own (NO_OPERATOR)."""
    backends = OPS[op][1]
    return tuple(name for backend, name in (("cpp", op), ("triton", f"{op}_triton"))
                 if backend in backends and (backend, op) not in NO_OPERATOR)


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


def _warn_once(name: str, device_type: str, dtype: Optional[torch.dtype] = None) -> None:
    key = (name, device_type, dtype)
    if key not in _warned:
        _warned.add(key)
        reason = load_error(name) or (f"it does not compute {dtype} on {device_type}" if dtype is not None
                                      else f"it does not run on {device_type} tensors")
        warnings.warn(f"fastdstn: backend {name!r} is unavailable ({reason}); using the reference backend. "
                      f"`fastdstn info` shows what was built.", RuntimeWarning, stacklevel=4)


def _implementation(backend: str, op: str) -> Optional[Tuple[Callable, ModuleType]]:
    """(the function of `backend` that runs `op`, the family module that holds it), or None where the backend
    does not implement it; only called for a backend that loaded."""
    key = (backend, op)
    if key not in _implementations:
        family, modules = OPS[op]
        name = "reference" if backend == "reference" else modules.get(backend)
        module = None if name is None else importlib.import_module(f"fastdstn.ops.{family}.{name}")
        _implementations[key] = None if module is None else (getattr(module, op), module)
    return _implementations[key]


def implementation(backend: str, op: str) -> Optional[Callable]:
    """The function of `backend` that runs `op` (from the op's family folder), or None where the backend does not
    implement it; only called for a backend that loaded."""
    found = _implementation(backend, op)
    return None if found is None else found[0]


def choose(op: str, device_type: str, dtype: Optional[torch.dtype] = None):
    """(backend name, callable) that runs `op` on tensors of `device_type` computing in `dtype` (None: any)
    under the current backend choice. A backend that cannot compute the dtype there (the compiled CPU ops:
    float32 and float64) passes the op on, as an unavailable one does."""
    forced = _forced.get()
    candidates = AUTO_ORDER.get(device_type, ("reference",)) if forced == "auto" else (forced,)
    for name in candidates:
        module = load(name)
        if module is not None and supports(module, device_type):
            found = _implementation(name, op)
            if found is None or not supports(found[1], device_type):
                continue
            function = found[0]
            if not runs_dtype(module, device_type, dtype):
                if forced != "auto":
                    _warn_once(name, device_type, dtype)
                continue
            return name, function
        elif forced != "auto":
            _warn_once(name, device_type)
    return "reference", implementation("reference", op)


def resolve(op: str, like: torch.Tensor):
    """The callable that runs `op` on inputs like `like` (its device, and its dtype or autocast's) under the
    current backend choice."""
    return choose(op, like.device.type, compute_dtype(op, like))[1]


def available() -> Dict[str, str]:
    """Backend name → "available" or the reason it is not (for `fastdstn info`)."""
    return {name: ("available" if load(name) is not None else load_error(name)) for name in BACKEND_MODULES}
