"""`untraced(fn)`: fn run with torch.compile's Dynamo off when a compiled caller reaches it; `eager_compiled()`: a block
in which compiled functions run eagerly; `own_code(wrapper, fn)`: a decorator's wrapper with a code object of its own.

torch.compiler.disable would do it, but decorating with it imports torch._dynamo, which made `import fastdstn`
take 10.0 s instead of 5.9 s on a loaded machine (python -X importtime, 1 core) and 3.0 s instead of 2.4 s on a
quiet one (/usr/bin/time python -c "import fastdstn[, torch._dynamo]"). A program that compiles has
imported Dynamo already, so the disabled function is made at the first call that finds Dynamo imported; before
that, fn runs as it is (nothing can be tracing it).
"""
from __future__ import annotations

import contextlib
import functools
import sys
from typing import Callable, ContextManager, TypeVar

import torch

Fn = TypeVar("Fn", bound=Callable)


def untraced(fn: Fn) -> Fn:
    disabled = []

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if "torch._dynamo" not in sys.modules:
            return fn(*args, **kwargs)
        if not disabled:
            disabled.append(torch.compiler.disable(fn))
        return disabled[0](*args, **kwargs)
    # The wrapper is itself never traced: Dynamo does not inline a function marked as disabled, and skips the
    # wrapper's frame (_skip_frames). Traced, the one wrapper code of every untraced function was compiled anew for
    # each function, call site and input shape: a converted ViT under model.compile() hit the recompile limit of 8
    # in its first steps (tests/method/test_compile.py).
    call._torchdynamo_disable = True
    return call


def _skip_frames(code) -> None:
    """Dynamo runs frames of `code` without compiling them (what torch._dynamo.skip does, through the C module that
    `import torch` loads, not torch._dynamo: see above). The frames they call are handled as usual."""
    frames = getattr(getattr(torch._C, "_dynamo", None), "eval_frame", None)
    if frames is not None and hasattr(frames, "set_code_exec_strategy"):
        skip, default = frames._FrameAction.SKIP, frames._FrameAction.DEFAULT
        frames.set_code_exec_strategy(code, frames._FrameExecStrategy(skip, default))


_skip_frames(untraced(lambda: None).__code__)


def own_code(wrapper: Fn, fn: Callable) -> Fn:
    """`wrapper` with a code object of its own, named after fn. Dynamo keeps compiled frames, their guards and
    their recompile limit (8) per code object: one wrapper code shared by many decorated functions was recompiled
    for each of them once a graph break made it a frame of its own."""
    code = wrapper.__code__
    wrapper.__code__ = code.replace(co_name=f"{code.co_name}[{fn.__qualname__}]")
    return wrapper


def eager_compiled() -> ContextManager[None]:
    """A block in which functions and modules compiled with torch.compile run their Python eagerly (Dynamo's
    "force_eager" stance). An untraced caller does not reach into them: a module compiled with `model.compile()`
    still runs its graphs, and a compiled graph (an autograd Function without a forward-mode rule) drops the
    tangents of dual tensors silently (the MLP of benchmarks/cases.py lost every tangent of its dual pass under
    aot_eager: tests/method/test_compile.py). Nothing to do when Dynamo was never imported."""
    if "torch._dynamo" not in sys.modules:
        return contextlib.nullcontext()
    return torch.compiler.set_stance("force_eager")
