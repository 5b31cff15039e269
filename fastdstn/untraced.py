"""`untraced(fn)`: fn run with torch.compile's Dynamo off when a compiled caller reaches it.

torch.compiler.disable would do it, but decorating with it imports torch._dynamo, which made `import fastdstn`
take 10.0 s instead of 5.9 s (python -X importtime, 1 core of this shared machine). A program that compiles has
imported Dynamo already, so the disabled function is made at the first call that finds Dynamo imported; before
that, fn runs as it is (nothing can be tracing it).
"""
from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

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
