"""Shared by the op tests: each backend's functions by op name, bound from the backend registry's table."""
from types import SimpleNamespace

from fastdstn.ops import dispatch


def backend_functions(backend: str) -> SimpleNamespace:
    """`backend`'s function of every op it implements (fastdstn.ops.dispatch.OPS), e.g.
    backend_functions("cpp").stn_linear_dual; call only where the backend loads."""
    functions = {op: dispatch.implementation(backend, op) for op in dispatch.OPS}
    return SimpleNamespace(**{op: f for op, f in functions.items() if f is not None})
