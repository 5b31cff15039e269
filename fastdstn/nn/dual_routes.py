"""`dual_routes()`: the block in which Δ-STN's dual pass runs its fused routes.

Inside the block (a `TorchFunctionMode`, opened by `SelfTuning`'s dual forward), calls made anywhere in a model — its
own code, torchvision's and Hugging Face's modules — go where their tangent is cheap or possible at all:

    scaled_dot_product_attention   -> fastdstn.ops.attention_dual (PyTorch's fused kernels have no forward rule)
    multi_head_attention_forward   -> PyTorch's function with its SDPA call routed as above
    batch_norm (training), layer_norm -> one ATen kernel for the tangent and one for its adjoint (fastdstn.nn.norms)
    max_pool2d                     -> primal, argmax and tangent in one op, the adjoint in another (.pooling)

Each route falls back to PyTorch's function when its inputs carry no tangent; everything else passes through.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Callable, Iterator

import torch.nn.functional as F
from torch.overrides import TorchFunctionMode, handle_torch_function, has_torch_function

from ..untraced import own_code
from . import norms, pooling
from .attention_routing import _SDPA, _multi_head_attention_forward_routed, sdpa_or_dual


def _routes() -> dict:
    return {_SDPA: sdpa_or_dual, F.multi_head_attention_forward: _multi_head_attention_forward_routed(),
            F.batch_norm: norms.batch_norm, F.layer_norm: norms.layer_norm, F.max_pool2d: pooling.max_pool2d}


class _DualRoutes(TorchFunctionMode):
    open_blocks = 0     # dual_routes() blocks open in the process: `one_call` hands its functions over only then

    def __init__(self) -> None:
        super().__init__()
        self.routes = _routes()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return self.routes.get(func, func)(*args, **(kwargs or {}))


@contextlib.contextmanager
def dual_routes() -> Iterator[None]:
    """Inside the block, attention and normalization calls whose inputs carry tangents take the fused routes."""
    _DualRoutes.open_blocks += 1
    try:
        with _DualRoutes():
            yield
    finally:
        _DualRoutes.open_blocks -= 1


def one_call(fn: Callable) -> Callable:
    """fn (fastdstn's own layers, whose bodies call nothing a route takes) as ONE call of the mode inside
    dual_routes(): the mode receives fn itself and runs it with the mode off, instead of intercepting each tensor
    call of its body. A StnLinear's checks alone made about 60 (shapes, dtypes, `dim`): the mode cost the MLP's
    Δ-STN step 1.1 ms of 62 and the 32-16-16-10 smoke MLP's 0.73 of 3.7 ms (1 thread, the step timed interleaved with
    and without dual_routes(); with one_call 1.01×, p20–p80 1.00–1.02×: `python benchmarks/bench_attention.py
    --routing-overhead --threads 1 --rounds 15`). Outside
    the block, fn runs as it is. This is torch.overrides' protocol for functions that take part in
    __torch_function__ (`handle_torch_function`): another mode or tensor subclass sees fn as one call too."""
    @functools.wraps(fn)
    def call(*args, **kwargs):
        if _DualRoutes.open_blocks and has_torch_function(args):
            return handle_torch_function(call, args, *args, **kwargs)
        return fn(*args, **kwargs)
    return own_code(call, fn)
