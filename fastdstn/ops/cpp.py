"""The compiled backend: fused C++ (ATen + OpenMP) and CUDA kernels of the STN ops (`fastdstn._C`).

The C++ library defines the `fastdstn::*` operators (csrc/library.cpp), their CPU/CUDA kernels and,
in csrc/autograd.cpp, their autograd formulas (a `torch::autograd::Function` per op, registered for the
Autograd dispatch key); this module registers each op's fake (meta) kernel and exposes functions with
exactly the signatures of `fastdstn.ops.reference`, which call the op and nothing else.

Importing never raises: without the compiled extension `AVAILABLE` is False and
`UNAVAILABLE_REASON` says how to build it (the backend registry then falls back to the reference).

Autograd (csrc/autograd.cpp). Every forward op returns auxiliary outputs, marked non-differentiable:
[s|t] = h·Vᵀ (which the backward op recomputes rather than keeps) and the response pre-activation
u = x·W_rᵀ or conv(x, W_r), which autograd saves for the backward. The backward op receives autograd's
needs_input_grad as a mask and computes only those gradients: in Δ-STN's
response sub-step (x, W_g, b_g frozen) the dual linear layer's backward runs two weight GEMMs,
∂ẋ = ∂ẏ·W_g and ∂W_r = (s⊙∂ẏ)ᵀ·x. When none of x, W_g, b_g requires grad, the primal output y of a
dual op is marked non-differentiable, so autograd does not even carry a gradient along the primal chain.
The formulas are C++ rather than `torch.library.register_autograd` because the Python
setup_context/backward cost ~110 µs per step, a third of the whole step at (32, 256, 256).
"""
from __future__ import annotations

import json
import os
import warnings
from typing import List, Optional, Sequence, Tuple

import torch

Tensor = torch.Tensor

AVAILABLE = False
UNAVAILABLE_REASON = ""
CPU_ISA: Optional[str] = None  # the instruction set of the CPU loops in use (avx512, avx2, baseline)
SMALL_GEMM = False  # whether the linear ops' small-batch GEMM kernel runs (csrc/small_gemm_cpu.cpp)
DEVICE_TYPES: Tuple[str, ...] = ("cpu",)
# The CPU loops compute float32 and float64; float16 and bfloat16 run on CUDA (else the registry passes the op
# to the reference, which computes them with PyTorch's CPU kernels).
DTYPES = {"cpu": (torch.float32, torch.float64),
          "cuda": (torch.float16, torch.bfloat16, torch.float32, torch.float64)}

_REBUILD = "reinstall with `pip install --no-build-isolation -e .` (FASTDSTN_NO_EXTENSIONS unset)"


def _load_build_info() -> dict:
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_build_info.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def torch_mismatch(build_info: dict, torch_version: str, torch_cuda: Optional[str]) -> str:
    """Why the extension that `build_info` (fastdstn/_build_info.json) describes must not be loaded beside
    this torch, or "" when it may be.

    Loading a library compiled against another torch can crash the process instead of raising, so this is
    decided from the record, before importing fastdstn._C. The extension needs the torch release it was
    compiled against (e.g. 2.14.1; the local tag, +cu130 or +cpu, only names torch's variant) and, when it holds
    CUDA kernels, the CUDA version of torch's libraries. A build without a record (a pure-Python install
    has no fastdstn._C to load) is let through."""
    built_torch, built_cuda = build_info.get("torch"), build_info.get("cuda")
    if not built_torch:
        return ""
    same_release = built_torch.split("+")[0] == torch_version.split("+")[0]
    if same_release and (built_cuda is None or built_cuda == torch_cuda):
        return ""
    built = f"torch {built_torch}" + (f" (CUDA {built_cuda})" if built_cuda else "")
    installed = f"torch {torch_version}" + (f" (CUDA {torch_cuda or 'none'})" if built_cuda else "")
    return (f"fastdstn._C was built for {built} but {installed} is installed, so it is not loaded and the "
            f"reference ops run instead; install the fastdstn wheel built for torch {torch_version}, or rebuild "
            f"against it: `pip install --no-build-isolation .` in a source checkout or unpacked sdist")


BUILD_INFO = _load_build_info()
UNAVAILABLE_REASON = torch_mismatch(BUILD_INFO, torch.__version__, torch.version.cuda)
if UNAVAILABLE_REASON:
    # Said once, here: otherwise a run would silently take the slower reference ops.
    warnings.warn(f"fastdstn: {UNAVAILABLE_REASON}", RuntimeWarning)
else:
    try:
        from fastdstn import _C  # noqa: F401  (loading the library runs the TORCH_LIBRARY registrations)
    except ImportError as error:
        UNAVAILABLE_REASON = f"fastdstn._C was not built or does not load ({error}): {_REBUILD}"
    else:
        AVAILABLE = True
        CPU_ISA = _C.cpu_isa()
        SMALL_GEMM = _C.small_gemm()


def cuda_registered() -> bool:
    """Whether the compiled ops have kernels for the CUDA dispatch key (the extension was built with CUDA)."""
    if not AVAILABLE:
        return False
    return all(torch._C._dispatch_has_kernel_for_dispatch_key(f"fastdstn::{name}", "CUDA")
               for name in ("stn_linear", "stn_linear_dual", "stn_conv2d", "stn_conv2d_dual", "lstm_cell_dual",
                            "dropout_dual"))


if AVAILABLE and cuda_registered():
    DEVICE_TYPES = ("cpu", "cuda")


# ----------------------------------------------------------------------------- public functions
# Same signatures as fastdstn.ops.reference; the arguments were checked by fastdstn.ops (the C++ ops
# check them again, with messages naming the argument, for direct callers). Each is one op call: the
# op overloads are bound once, at import, because `torch.ops.fastdstn.<op>` costs an attribute walk.
if AVAILABLE:
    _ops = torch.ops.fastdstn
    _stn_linear, _stn_linear_dual = _ops.stn_linear.default, _ops.stn_linear_dual.default
    _stn_conv2d, _stn_conv2d_dual = _ops.stn_conv2d.default, _ops.stn_conv2d_dual.default
    _lstm_cell_dual, _dropout_dual = _ops.lstm_cell_dual.default, _ops.dropout_dual.default


def stn_linear(x: Tensor, h: Tensor, Wg: Tensor, bg: Optional[Tensor], Wr: Tensor, br: Optional[Tensor],
               V: Tensor) -> Tensor:
    return _stn_linear(x, h, Wg, bg, Wr, br, V)[0]


def stn_linear_dual(x: Tensor, xt: Optional[Tensor], eps: Tensor, Wg: Tensor, bg: Optional[Tensor], Wr: Tensor,
                    br: Optional[Tensor], V: Tensor) -> Tuple[Tensor, Tensor]:
    return _stn_linear_dual(x, xt, eps, Wg, bg, Wr, br, V)[:2]


def stn_conv2d(x: Tensor, h: Tensor, Wg: Tensor, bg: Optional[Tensor], Wr: Tensor, br: Optional[Tensor],
               V: Tensor, stride: Sequence[int] = (1, 1), padding: Sequence[int] = (0, 0),
               dilation: Sequence[int] = (1, 1), groups: int = 1) -> Tensor:
    return _stn_conv2d(x, h, Wg, bg, Wr, br, V, stride, padding, dilation, groups)[0]


def stn_conv2d_dual(x: Tensor, xt: Optional[Tensor], eps: Tensor, Wg: Tensor, bg: Optional[Tensor], Wr: Tensor,
                    br: Optional[Tensor], V: Tensor, stride: Sequence[int] = (1, 1), padding: Sequence[int] = (0, 0),
                    dilation: Sequence[int] = (1, 1), groups: int = 1) -> Tuple[Tensor, Tensor]:
    return _stn_conv2d_dual(x, xt, eps, Wg, bg, Wr, br, V, stride, padding, dilation, groups)[:2]


def lstm_cell_dual(gates: Tensor, gates_t: Optional[Tensor], c: Tensor,
                   c_t: Optional[Tensor]) -> Tuple[Tensor, Optional[Tensor], Tensor, Optional[Tensor]]:
    h, ht, c_new, ct = _lstm_cell_dual(gates, gates_t, c, c_t)
    if gates_t is None and c_t is None:
        return h, None, c_new, None
    return h, ht, c_new, ct


def dropout_dual(x: Tensor, xt: Optional[Tensor], rate: Tensor, seed: int, batch_dim: int = 0,
                 shared_dims: Sequence[int] = ()) -> Tuple[Tensor, Optional[Tensor]]:
    y, yt = _dropout_dual(x, xt, rate, seed, batch_dim, shared_dims)
    return y, (None if xt is None else yt)


# ----------------------------------------------------------------------------- fake kernels
def _new(like: Tensor, *shape) -> Tensor:
    """A contiguous tensor of `shape` with like's dtype/device (what the C++ kernels return)."""
    return like.new_empty(shape)


def _grads_like(like: Tensor, inputs, mask) -> List[Tensor]:
    return [_new(i, *i.shape) if (m and i is not None) else _new(like, 0) for i, m in zip(inputs, mask)]


def _conv_out(x: Tensor, W: Tensor, stride, padding, dilation) -> Tuple:
    def one(n, k, s, p, d):
        return (n + 2 * p - d * (k - 1) - 1) // s + 1
    return (one(x.shape[2], W.shape[2], stride[0], padding[0], dilation[0]),
            one(x.shape[3], W.shape[3], stride[1], padding[1], dilation[1]))


def _bias_like(Wg: Tensor, has_bg: bool) -> Optional[Tensor]:
    return Wg.new_empty(Wg.shape[0]) if has_bg else None


def _register_fakes() -> None:
    reg = torch.library.register_fake

    @reg("fastdstn::stn_linear")
    def _(x, h, Wg, bg, Wr, br, V):
        B, C = x.shape[0], Wg.shape[0]
        return _new(x, B, C), _new(x, B, V.shape[0]), _new(x, B, C)

    @reg("fastdstn::stn_linear_backward")
    def _(gy, x, h, Wg, Wr, br, V, u, has_bg, mask):
        return tuple(_grads_like(x, (x, h, Wg, _bias_like(Wg, has_bg), Wr, br, V), mask))

    @reg("fastdstn::stn_linear_dual")
    def _(x, xt, eps, Wg, bg, Wr, br, V):
        B, C = x.shape[0], Wg.shape[0]
        return _new(x, B, C), _new(x, B, C), _new(x, B, V.shape[0]), _new(x, B, C)

    @reg("fastdstn::stn_linear_dual_backward")
    def _(gy, gyt, x, xt, eps, Wg, Wr, br, V, u, has_bg, mask):
        return tuple(_grads_like(x, (x, xt, eps, Wg, _bias_like(Wg, has_bg), Wr, br, V), mask))

    @reg("fastdstn::stn_conv2d")
    def _(x, h, Wg, bg, Wr, br, V, stride, padding, dilation, groups):
        B, C = x.shape[0], Wg.shape[0]
        Ho, Wo = _conv_out(x, Wg, stride, padding, dilation)
        return _new(x, B, C, Ho, Wo), _new(x, B, V.shape[0]), _new(x, B, C, Ho, Wo)

    @reg("fastdstn::stn_conv2d_backward")
    def _(gy, x, h, Wg, Wr, br, V, u, stride, padding, dilation, groups, has_bg, mask):
        return tuple(_grads_like(x, (x, h, Wg, _bias_like(Wg, has_bg), Wr, br, V), mask))

    @reg("fastdstn::stn_conv2d_dual")
    def _(x, xt, eps, Wg, bg, Wr, br, V, stride, padding, dilation, groups):
        B, C = x.shape[0], Wg.shape[0]
        Ho, Wo = _conv_out(x, Wg, stride, padding, dilation)
        return (_new(x, B, C, Ho, Wo), _new(x, B, C, Ho, Wo), _new(x, B, V.shape[0]),
                _new(x, B, C, Ho, Wo))

    @reg("fastdstn::stn_conv2d_dual_backward")
    def _(gy, gyt, x, xt, eps, Wg, Wr, br, V, u, stride, padding, dilation, groups, has_bg, mask):
        return tuple(_grads_like(x, (x, xt, eps, Wg, _bias_like(Wg, has_bg), Wr, br, V), mask))

    @reg("fastdstn::lstm_cell_dual")
    def _(gates, gates_t, c, c_t):
        dual = gates_t is not None or c_t is not None
        t = (lambda: _new(c, *c.shape)) if dual else (lambda: _new(c, 0))
        return _new(c, *c.shape), t(), _new(c, *c.shape), t()

    @reg("fastdstn::lstm_cell_dual_backward")
    def _(gh, ght, gc, gct, gates, gates_t, c, c_t, mask):
        return tuple(_grads_like(gates, (gates, gates_t, c, c_t), mask))

    @reg("fastdstn::dropout_dual")
    def _(x, xt, rate, seed, batch_dim, shared_dims):
        return _new(x, *x.shape), (_new(x, *x.shape) if xt is not None else _new(x, 0))

    @reg("fastdstn::_dense_mm")
    def _(a, b):
        return _new(a, a.shape[0], b.shape[1])

    @reg("fastdstn::_linear_products")
    def _(x, xt, Wg, Wr):
        B, C = x.shape[0], Wg.shape[0]
        return _new(x, B, C), _new(x, B, C), (_new(x, B, C) if xt is not None else _new(x, 0))


if AVAILABLE:
    _register_fakes()
