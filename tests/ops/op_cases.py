"""What the op tests share: each backend's functions by op name, the markers for backends that may be missing,
the input builders of every family, and the checks against the float64 reference (the accuracy rule itself is
tests/accuracy.py).

Accuracy follows tests/accuracy.py: each element of an op's result lies within γ_n times its magnitude
(Σ|terms|, the reference on absolute values) of the float64 reference, n the op's reduction lengths plus its
elementwise roundings; half-precision storage adds a few units of its roundoff."""
import importlib.util
import json
import os
from types import SimpleNamespace

import pytest
import torch

from accuracy import assert_within_bound, dense_terms, magnitude, scale_of
from fastdstn.ops import cpp, dispatch


def backend_functions(backend: str) -> SimpleNamespace:
    """`backend`'s function of every op it implements (fastdstn.ops.dispatch.OPS), e.g.
    backend_functions("cpp").stn_linear_dual; call only where the backend loads."""
    functions = {op: dispatch.implementation(backend, op) for op in dispatch.OPS}
    return SimpleNamespace(**{op: f for op, f in functions.items() if f is not None})


# ---------------------------------------------------------------------------------------------------------- backends
_INFO_PATH = os.path.join(os.path.dirname(cpp.__file__), os.pardir, "_build_info.json")


def _built() -> bool:
    try:
        with open(_INFO_PATH) as f:
            return bool(json.load(f).get("compiled"))
    except (OSError, ValueError):
        return False


needs_cpp = pytest.mark.skipif(not cpp.AVAILABLE and not _built(), reason="built with FASTDSTN_NO_EXTENSIONS")
compiled = backend_functions("cpp") if cpp.AVAILABLE else None  # each family's cpp.py
CPP_OPCHECK_UTILS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")

# The same checks on the CUDA dispatch key: the epilogue kernels of csrc/<family>/<family>_cuda.cu against
# the reference on the GPU (float64 to round-off, float32 within the bound of tests/accuracy.py, bf16 loosely),
# opcheck on CUDA tensors, and the seeded dropout mask's statistics.
cuda_only = pytest.mark.skipif(not (torch.cuda.is_available() and cpp.cuda_registered()),
                               reason="needs a GPU and an extension built with FASTDSTN_CUDA=1")

TRITON_IMPORTABLE = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not TRITON_IMPORTABLE, reason="triton is not importable")


def triton_module(name: str):
    """fastdstn.ops.<name> (a family's Triton module), or None where Triton is not importable."""
    return importlib.import_module(f"fastdstn.ops.{name}") if TRITON_IMPORTABLE else None


# ----------------------------------------------- the Triton kernels' checks (CPU under TRITON_INTERPRET=1, or a GPU)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


# Under the interpreter wrap_triton launches eagerly instead of tracing, so opcheck's AOT-dispatch test
# (which compares a traced graph against eager) only means something on a GPU.
TRITON_OPCHECK_UTILS = (("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
                 if DEVICE == "cuda" else ("test_schema", "test_autograd_registration", "test_faketensor"))


def expected(reference_fn, args, cotangents=None):
    """(float64 truth, magnitude) for a kernel check (tests/accuracy.py): reference_fn's outputs on the
    arguments in float64 and their magnitudes, or, with `cotangents` (paired with the outputs by position; a None
    takes no part), the gradients of Σ output·cotangent w.r.t. the arguments that require grad (None for the others)."""
    a64 = to64(args)
    if cotangents is None:
        return reference_fn(*a64), magnitude(reference_fn, args)
    return grads(listed(reference_fn(*a64)), cotangents, a64), magnitude(reference_fn, args, cotangents)


def make(shape, requires_grad=True, dtype=torch.float32):
    return torch.randn(shape, device=DEVICE, dtype=dtype).requires_grad_(requires_grad)


def to64(tensors):
    return [None if t is None else t.detach().double().requires_grad_(t.requires_grad) for t in tensors]


def grads(outputs, cotangents, inputs):
    """d(Σ outputs·cotangents)/d(inputs), None for inputs that do not require grad (a None output or
    cotangent takes no part)."""
    pairs = [(o, c) for o, c in zip(outputs, cotangents) if o is not None and c is not None]
    loss = sum((o * c.to(o.dtype)).sum() for o, c in pairs)
    wanted = [t for t in inputs if t is not None and t.requires_grad]
    got = iter(torch.autograd.grad(loss, wanted, allow_unused=True))
    return [next(got) if (t is not None and t.requires_grad) else None for t in inputs]


def check(name, kernel_fn, reference_fn, args, n, pointwise=False, rounding=0.0):
    """The kernel's outputs, then its input gradients for a random cotangent, against the float64 reference
    within the bound (`rounding`: roundings to narrower formats, see accuracy.roundings). Returns the kernel's
    outputs."""
    got = kernel_fn(*args)
    outputs = list(got) if isinstance(got, (tuple, list)) else [got]
    exact, mag = expected(reference_fn, args)
    assert_within_bound(name + " fwd", outputs, exact, scale_of(listed(exact)) if pointwise else mag, n,
                        rounding=rounding)
    cot = [None if o is None else torch.randn_like(o) for o in outputs]
    exact_grads, mag_grads = expected(reference_fn, args, cot)
    assert_within_bound(name + " bwd", grads(outputs, cot, args), exact_grads,
                        scale_of(exact_grads) if pointwise else mag_grads, n, rounding=rounding)
    return got


def listed(values):
    return list(values) if isinstance(values, (tuple, list)) else [values]


# ---------------------------------------------------------------------------------------------------- input builders
def dense_args(B=4, n_in=5, n_out=3, H=2, bias=True, conv=False, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=dtype, requires_grad=True)  # noqa: E731
    x = rnd(B, n_in, 6, 6) if conv else rnd(B, n_in)
    wshape = (n_out, n_in, 3, 3) if conv else (n_out, n_in)
    return dict(x=x, xt=rnd(*x.shape), h=rnd(B, H), Wg=rnd(*wshape), bg=rnd(n_out) if bias else None,
                Wr=rnd(*wshape), br=rnd(n_out) if bias else None, V=rnd(2 * n_out if bias else n_out, H))


def leaf(*shape, dtype, grad=False, contiguous=True):
    """A random tensor; non-contiguous ones are transposed views of a (reversed-shape) buffer."""
    if contiguous or len(shape) < 2:
        t = torch.randn(*shape, dtype=dtype)
    else:
        t = torch.randn(*reversed(shape), dtype=dtype).permute(*reversed(range(len(shape))))
        assert not t.is_contiguous()
    return t.requires_grad_(grad)


def dense_inputs(B, n_in, n_out, H, *, dtype=torch.float64, conv=None, has_bg=True, has_br=True, has_xt=True,
                 grads="all", contiguous=True):
    """(x, xt, eps, Wg, bg, Wr, br, V) for the dense ops; conv = (C_in, HW, k, groups) or None.

    grads: "all" (every tensor), "response" (Δ-STN's response sub-step: xt, Wr, br, V) or "none"."""
    need = {"all": set("x xt eps Wg bg Wr br V".split()), "response": {"xt", "Wr", "br", "V"}, "none": set()}[grads]
    if conv is None:
        xs, ws = (B, n_in), (n_out, n_in)
    else:
        c_in, hw, k, groups = conv
        xs, ws = (B, c_in, hw, hw + 1), (n_out, c_in // groups, k, k)
    x = leaf(*xs, dtype=dtype, grad="x" in need, contiguous=contiguous)
    xt = leaf(*xs, dtype=dtype, grad="xt" in need, contiguous=contiguous) if has_xt else None
    eps = leaf(B, H, dtype=dtype, grad="eps" in need)
    Wg = (leaf(*ws, dtype=dtype, contiguous=contiguous) * 0.3).requires_grad_("Wg" in need)
    Wr = (leaf(*ws, dtype=dtype, contiguous=contiguous) * 0.3).requires_grad_("Wr" in need)
    bg = leaf(n_out, dtype=dtype, grad="bg" in need) if has_bg else None
    br = leaf(n_out, dtype=dtype, grad="br" in need) if has_br else None
    V = leaf(2 * n_out if has_br else n_out, H, dtype=dtype, grad="V" in need)
    return x, xt, eps, Wg, bg, Wr, br, V


GEOMETRY = {1: ([1, 1], [1, 1], [1, 1], 1), 2: ([2, 1], [1, 0], [1, 2], 2)}


LINEAR_CASES = [  # (B, in, out, H, has_bg, has_br, has_xt, grads, contiguous)
    (4, 6, 5, 1, True, True, True, "all", True),
    (3, 5, 7, 7, False, True, True, "response", False),
    (5, 4, 3, 30, True, False, False, "all", True),
    (2, 3, 4, 7, False, False, True, "none", True),
    (33, 77, 129, 7, True, True, True, "response", False),
]


CONV_CASES = [  # (B, C_in, C_out, H, HW, k, geometry, has_bg, has_br, has_xt, grads, contiguous)
    (2, 3, 4, 1, 5, 3, 1, True, True, True, "all", True),
    (2, 4, 6, 7, 6, 3, 2, False, True, True, "response", False),
    (3, 2, 4, 30, 4, 1, 1, True, False, False, "all", True),
    (2, 4, 2, 7, 9, 5, 2, True, True, True, "none", True),
]


def linear_args(case, dtype=torch.float64):
    B, n_in, n_out, H, has_bg, has_br, has_xt, grads, contiguous = case
    return dense_inputs(B, n_in, n_out, H, dtype=dtype, has_bg=has_bg, has_br=has_br, has_xt=has_xt, grads=grads,
                        contiguous=contiguous)


def conv_args(case, dtype=torch.float64):
    B, c_in, c_out, H, hw, k, geo, has_bg, has_br, has_xt, grads, contiguous = case
    args = dense_inputs(B, c_in, c_out, H, dtype=dtype, conv=(c_in, hw, k, GEOMETRY[geo][3]), has_bg=has_bg,
                        has_br=has_br, has_xt=has_xt, grads=grads, contiguous=contiguous)
    return args, GEOMETRY[geo]


def nonlinear_args(args):
    x, xt, eps, Wg, bg, Wr, br, V = args
    return x, eps, Wg, bg, Wr, br, V


def lstm_args(N, H, tangents, grad, dtype=torch.float32):
    gates = torch.randn(N, 4 * H, dtype=dtype, requires_grad=grad)
    c = torch.randn(N, H, dtype=dtype, requires_grad=grad)
    gates_t = torch.randn(N, 4 * H, dtype=dtype, requires_grad=grad) if "g" in tangents else None
    c_t = torch.randn(N, H, dtype=dtype, requires_grad=grad) if "c" in tangents else None
    return gates, gates_t, c, c_t


def flat(outputs):
    return tuple(o for o in outputs if o is not None and o.requires_grad)


GRADCHECK_CONV_CASES = [  # small: every input element is perturbed twice per op call
    (2, 2, 2, 2, 3, 2, 1, True, True, True, "all", True),
    (1, 4, 4, 3, 4, 3, 2, False, True, True, "response", False),
    (2, 2, 3, 1, 3, 1, 1, True, False, False, "all", True),
]


# ------------------------------------------------------------------------------ float32 accuracy of the compiled ops
def fixed_cotangents(result):
    """A fixed random float64 cotangent for each output of an op (None for an absent one)."""
    gen = torch.Generator().manual_seed(1)
    return [None if o is None else torch.randn(o.shape, generator=gen, dtype=torch.float64) for o in listed(result)]


def outputs_and_grads(fn, args, cotangents):
    """fn's outputs (those not None) and the gradients of Σ output·cotangent w.r.t. the arguments that require
    grad, all as float64 tensors."""
    outs = listed(fn(*args))
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    loss = sum((o.double() * c.to(o.device)).sum() for o, c in zip(outs, cotangents)
               if o is not None and o.requires_grad)
    grads = torch.autograd.grad(loss, leaves) if leaves else ()
    return [o.detach().double() for o in outs if o is not None] + [g.double() for g in grads]


def copied(args, dtype, device="cpu"):
    return tuple(a.detach().to(device, dtype).requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a
                 for a in args)


def assert_accurate(fn_op, fn_ref, args, n, pointwise=False, device="cpu", rounding=0.0):
    """The op in float32 against the reference in float64 on the same values, outputs and input gradients,
    within the bound of tests/accuracy.py: γ_n times each element's magnitude (Σ|terms|, the reference on
    absolute values), or times the result's scale for a pointwise op."""
    args64 = copied(args, torch.float64, device)
    cot = fixed_cotangents(fn_ref(*args64))
    exact = outputs_and_grads(fn_ref, args64, cot)
    got = outputs_and_grads(fn_op, copied(args, torch.float32, device), cot)
    if pointwise:
        mag = scale_of(exact)
    else:
        wanted = [isinstance(a, torch.Tensor) and a.requires_grad for a in args]
        mag = ([m for m in magnitude(fn_ref, args64) if m is not None]
               + [m for m, w in zip(magnitude(fn_ref, args64, cot), wanted) if w])
    assert_within_bound("output/grad", got, exact, mag, n, rounding=rounding)


def dense_op_terms(args, geo=None):
    x, _, _, Wg, _, _, _, V = args
    return dense_terms(x, Wg, V, geo)
