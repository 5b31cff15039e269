"""`untraced(fn)`: fn run with torch.compile's Dynamo off when a compiled caller reaches it; `eager_compiled()`: a block
in which compiled functions run eagerly.

torch.compiler.disable would do it, but decorating with it imports torch._dynamo, which made `import fastdstn`
take 10.0 s instead of 5.9 s (python -X importtime, 1 core of this shared machine). A program that compiles has
imported Dynamo already, so the disabled function is made at the first call that finds Dynamo imported; before
that, fn runs as it is (nothing can be tracing it).
"""
from __future__ import annotations

import contextlib
import functools
import sys
from typing import Callable, ContextManager, TypeVar

Fn = TypeVar("Fn", bound=Callable)


def untraced(fn: Fn) -> Fn:
    disabled = []

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if "torch._dynamo" not in sys.modules:
            return fn(*args, **kwargs)
        if not disabled:
            import torch

            disabled.append(torch.compiler.disable(fn))
        return disabled[0](*args, **kwargs)
    return call


def eager_compiled() -> ContextManager[None]:
    """A block in which functions and modules compiled with torch.compile run their Python eagerly (Dynamo's
    "force_eager" stance). An untraced caller does not reach into them: a module compiled with `model.compile()`
    still runs its graphs, and a compiled graph (an autograd Function without a forward-mode rule) drops the
    tangents of dual tensors silently (the MLP of benchmarks/cases.py lost every tangent of its dual pass under
    aot_eager: tests/method/test_compile.py). Nothing to do when Dynamo was never imported."""
    if "torch._dynamo" not in sys.modules:
        return contextlib.nullcontext()
    import torch

    return torch.compiler.set_stance("force_eager")
