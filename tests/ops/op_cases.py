"""What the op tests share: the backends a family's tests are parametrised over, the one input builder
(`tensors`, with each family's shapes on top of it), and the one check against the float64 reference (the
accuracy rule itself is tests/accuracy.py).

Accuracy follows tests/accuracy.py: each element of an op's result lies within γ_n times its magnitude
(Σ|terms|, the reference on absolute values) of the float64 reference, n the op's reduction lengths plus its
elementwise roundings; half-precision storage adds a few units of its roundoff."""
import importlib.util
import json
import os
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable, Dict, Optional, Sequence

import pytest
import torch

import fastdstn.ops
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

# The compiled ops on the CUDA dispatch key: the kernels of csrc/<family>/<family>_cuda.cu.
cuda_only = pytest.mark.skipif(not (torch.cuda.is_available() and cpp.cuda_registered()),
                               reason="needs a GPU and an extension built with FASTDSTN_CUDA=1")

TRITON_IMPORTABLE = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not TRITON_IMPORTABLE, reason="triton is not importable")

# The Triton kernels run on a GPU, or on CPU under TRITON_INTERPRET=1 (tests/conftest.py).
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# Under the interpreter wrap_triton launches eagerly instead of tracing, so opcheck's AOT-dispatch test
# (which compares a traced graph against eager) only means something on a GPU.
TRITON_OPCHECK_UTILS = (("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
                        if DEVICE == "cuda" else ("test_schema", "test_autograd_registration", "test_faketensor"))


def triton_module(name: str):
    """fastdstn.ops.<name> (a family's Triton module), or None where Triton is not importable."""
    return importlib.import_module(f"fastdstn.ops.{name}") if TRITON_IMPORTABLE else None


# dispatch.OPS names whose public function is named otherwise
PUBLIC_NAMES = {"attention": "attention_with_dropout"}


@dataclass(frozen=True)
class Backend:
    """One backend of the ops on one device, as a family's tests see it: its function of each op (called
    directly, not through dispatch, so the Triton kernels run on CPU under the interpreter) and its registered
    torch op for opcheck."""
    name: str      # "reference", "cpp" or "triton"
    device: str    # "cpu" or "cuda"

    def __str__(self) -> str:
        return f"{self.name}-{self.device}"

    def __getattr__(self, op: str) -> Callable:
        """The function that runs `op`: for the reference, the public op (its argument checks included) under
        use_backend("reference"); for the others, the backend's own function."""
        if op not in dispatch.OPS:
            raise AttributeError(op)
        function = dispatch.implementation(self.name, op)
        if function is None:
            raise AttributeError(f"backend {self.name} does not implement {op}")
        if self.name != "reference":
            return function
        public = getattr(fastdstn.ops, PUBLIC_NAMES.get(op, op))

        def on_the_reference_backend(*args, **kwargs):
            with dispatch.use_backend("reference"):
                return public(*args, **kwargs)
        return on_the_reference_backend

    def registered(self, op: str):
        """The torch op (default overload) behind `op`: fastdstn::<op> (cpp) or fastdstn::<op>_triton."""
        return getattr(torch.ops.fastdstn, op if self.name == "cpp" else f"{op}_triton").default

    @property
    def opcheck_utils(self) -> Sequence[str]:
        return CPP_OPCHECK_UTILS if self.name == "cpp" else TRITON_OPCHECK_UTILS

    @property
    def interpreted(self) -> bool:
        """Triton kernels run by the interpreter on CPU."""
        return self.name == "triton" and self.device == "cpu"


_MARKS = {("reference", "cpu"): [], ("cpp", "cpu"): [needs_cpp], ("cpp", "cuda"): [needs_cpp, cuda_only],
          ("triton", DEVICE): [needs_triton]}


def backends(*names: str, op: Optional[str] = None):
    """pytest params of every (backend, device) of `names` (all when none): reference and cpp on CPU, cpp on CUDA,
    Triton on the GPU or under the interpreter; each skipped with its reason where it cannot run, or, given `op`,
    where the backend does not implement it (dispatch.OPS)."""
    def implements(name):
        return op is None or name == "reference" or name in dispatch.OPS[op][1]
    return [pytest.param(Backend(name, device), id=f"{name}-{device}",
                         marks=marks if implements(name) else [pytest.mark.skip(
                             reason=f"the {name} backend does not implement {op} (it runs the reference)")])
            for (name, device), marks in _MARKS.items() if not names or name in names]


# ---------------------------------------------------------------------------------------------------- input builder
def tensors(shapes: Dict[str, Optional[Sequence[int]]], *, dtype=torch.float32, device="cpu", grads=None,
            contiguous=True, scales=None, seed=0) -> list:
    """The one input builder: a standard normal tensor per entry of `shapes` (name -> shape; None for an absent
    optional argument, which stays None), in order. Drawn in float64 from a generator seeded with `seed`, so the
    same call gives the same values on every backend, device and dtype. grads: the names that require grad
    (None: all); contiguous=False makes every tensor of 2 or more dims a transposed view of a reversed-shape
    buffer; scales: name -> a factor."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for name, shape in shapes.items():
        if shape is None:
            out.append(None)
            continue
        if contiguous or len(shape) < 2:
            t = torch.randn(*shape, generator=g, dtype=torch.float64)
        else:
            t = torch.randn(*reversed(shape), generator=g, dtype=torch.float64).permute(*reversed(range(len(shape))))
        t = (t * (scales or {}).get(name, 1.0)).to(device=device, dtype=dtype)
        assert contiguous or len(shape) < 2 or min(shape) <= 1 or not t.is_contiguous()
        out.append(t.requires_grad_(grads is None or name in grads))
    return out


# --------------------------------------------------------------------------------------------------- the dense family
DENSE_NAMES = ("x", "xt", "eps", "Wg", "bg", "Wr", "br", "V")
DENSE_GRADS = {"all": None, "response": {"xt", "Wr", "br", "V"}, "none": set()}


def dense_inputs(B, n_in, n_out, H, *, dtype=torch.float64, device="cpu", conv=None, has_bg=True, has_br=True,
                 has_xt=True, grads="all", contiguous=True, seed=0):
    """(x, xt, eps, Wg, bg, Wr, br, V) for the dense ops; conv = (height, width, kernel, groups) or None (linear,
    n_in input features). grads: "all", "response" (Δ-STN's response sub-step: xt, Wr, br, V), "none" or a set
    of names. The weights are scaled by 0.3 (unit-variance weights make large outputs)."""
    if conv is None:
        xs, ws = (B, n_in), (n_out, n_in)
    else:
        height, width, k, groups = conv
        xs, ws = (B, n_in, height, width), (n_out, n_in // groups, k, k)
    shapes = dict(x=xs, xt=xs if has_xt else None, eps=(B, H), Wg=ws, bg=(n_out,) if has_bg else None, Wr=ws,
                  br=(n_out,) if has_br else None, V=(2 * n_out if has_br else n_out, H))
    return tensors(shapes, dtype=dtype, device=device, grads=DENSE_GRADS[grads] if isinstance(grads, str) else grads,
                   contiguous=contiguous, scales=dict(Wg=0.3, Wr=0.3), seed=seed)


def named(args) -> dict:
    """The dense inputs by name; the hyperparameter input under both of its names (eps of the dual ops, h of the
    nonlinear ones)."""
    out = dict(zip(DENSE_NAMES, args))
    out["h"] = out["eps"]
    return out


# name -> (stride, padding, dilation, groups)
GEOMETRY = {"unit": ([1, 1], [1, 1], [1, 1], 1), "grouped": ([2, 1], [1, 0], [1, 2], 2),
            "grouped_unit": ([1, 1], [1, 1], [1, 1], 2), "strided": ([2, 1], [1, 0], [1, 1], 1),
            "pad2": ([1, 1], [2, 2], [1, 1], 1), "stride2": ([2, 2], [1, 1], [1, 1], 1),
            "dilated": ([1, 1], [0, 0], [2, 2], 1)}


LINEAR_CASES = [  # (B, in, out, H, has_bg, has_br, has_xt, grads, contiguous)
    (4, 6, 5, 1, True, True, True, "all", True),
    (3, 5, 7, 7, False, True, True, "response", False),
    (5, 4, 3, 30, True, False, False, "all", True),
    (2, 3, 4, 7, False, False, True, "none", True),
    (33, 77, 129, 7, True, True, True, "response", False),
]


CONV_CASES = [  # (B, C_in, C_out, H, HW, k, geometry, has_bg, has_br, has_xt, grads, contiguous)
    (2, 3, 4, 1, 5, 3, "unit", True, True, True, "all", True),
    (2, 4, 6, 7, 6, 3, "grouped", False, True, True, "response", False),
    (3, 2, 4, 30, 4, 1, "unit", True, False, False, "all", True),
    (2, 4, 2, 7, 9, 5, "grouped", True, True, True, "none", True),
]


GRADCHECK_CONV_CASES = [  # small: every input element is perturbed twice per op call
    (2, 2, 2, 2, 3, 2, "unit", True, True, True, "all", True),
    (1, 4, 4, 3, 4, 3, "grouped", False, True, True, "response", False),
    (2, 2, 3, 1, 3, 1, "unit", True, False, False, "all", True),
]


def linear_args(case, dtype=torch.float64, device="cpu"):
    B, n_in, n_out, H, has_bg, has_br, has_xt, grads, contiguous = case
    return dense_inputs(B, n_in, n_out, H, dtype=dtype, device=device, has_bg=has_bg, has_br=has_br, has_xt=has_xt,
                        grads=grads, contiguous=contiguous)


def conv_args(case, dtype=torch.float64, device="cpu"):
    """(inputs, geometry) of a CONV_CASES entry: (HW, HW + 1) images."""
    B, c_in, c_out, H, hw, k, geo, has_bg, has_br, has_xt, grads, contiguous = case
    args = dense_inputs(B, c_in, c_out, H, dtype=dtype, device=device, conv=(hw, hw + 1, k, GEOMETRY[geo][3]),
                        has_bg=has_bg, has_br=has_br, has_xt=has_xt, grads=grads, contiguous=contiguous)
    return args, GEOMETRY[geo]


def nonlinear_args(args):
    x, xt, eps, Wg, bg, Wr, br, V = args
    return x, eps, Wg, bg, Wr, br, V


def dense_op_terms(args, geo=None):
    x, _, _, Wg, _, _, _, V = args
    return dense_terms(x, Wg, V, geo)


# ----------------------------------------------------------------------------------------------- the other families
def lstm_args(N, H, tangents, grad, dtype=torch.float32, device="cpu", seed=0):
    """(gates, gates_t, c, c_t) of N cells of H units; `tangents` names the tangents given ("g", "c")."""
    shapes = dict(gates=(N, 4 * H), gates_t=(N, 4 * H) if "g" in tangents else None, c=(N, H),
                  c_t=(N, H) if "c" in tangents else None)
    return tensors(shapes, dtype=dtype, device=device, grads=None if grad else set(), seed=seed)


def attention_args(lead=(2, 3), tq=13, tk=11, d=8, dv=6, dtype=torch.float64, device="cpu", grads=(), seed=0):
    """(q, k, v, q̇, k̇, v̇) of shape (*lead, T, d); `grads` names those that require grad."""
    shapes = dict(q=(*lead, tq, d), k=(*lead, tk, d), v=(*lead, tk, dv), qt=(*lead, tq, d), kt=(*lead, tk, d),
                  vt=(*lead, tk, dv))
    return tensors(shapes, dtype=dtype, device=device, grads=set(grads), seed=seed)


# ------------------------------------------------------------------------------------- the check against float64
def to64(tensors_):
    return [None if t is None else t.detach().double().requires_grad_(t.requires_grad) for t in tensors_]


def listed(values):
    return list(values) if isinstance(values, (tuple, list)) else [values]


def flat(outputs):
    return tuple(o for o in outputs if o is not None and o.requires_grad)


def grads(outputs, cotangents, inputs):
    """d(Σ outputs·cotangents)/d(inputs), None for inputs that do not require grad (a None output or
    cotangent takes no part)."""
    pairs = [(o, c) for o, c in zip(outputs, cotangents) if o is not None and c is not None]
    loss = sum((o * c.to(o.dtype)).sum() for o, c in pairs)
    wanted = [t for t in inputs if t is not None and t.requires_grad]
    got = iter(torch.autograd.grad(loss, wanted, allow_unused=True))
    return [next(got) if (t is not None and t.requires_grad) else None for t in inputs]


def expected(reference_fn, args, cotangents=None):
    """(float64 truth, magnitude): reference_fn's outputs on the arguments in float64 and their magnitudes, or,
    with `cotangents` (paired with the outputs by position; a None takes no part), the gradients of
    Σ output·cotangent w.r.t. the arguments that require grad (None for the others)."""
    a64 = to64(args)
    if cotangents is None:
        return reference_fn(*a64), magnitude(reference_fn, args)
    return grads(listed(reference_fn(*a64)), cotangents, a64), magnitude(reference_fn, args, cotangents)


def fixed_cotangents(result):
    """A fixed random float64 cotangent for each output of an op (None for an absent one)."""
    gen = torch.Generator().manual_seed(1)
    return [None if o is None else torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.device)
            for o in listed(result)]


def check(name, kernel_fn, reference_fn, args, n, pointwise=False, rounding=0.0, accumulate=torch.float32):
    """The one check: kernel_fn's outputs, then its input gradients for a fixed random cotangent, against the
    float64 reference on the same values within the bound of tests/accuracy.py (`rounding`: roundings to
    narrower formats, see accuracy.roundings; `accumulate`: the dtype the kernel accumulates in); for a
    pointwise op the magnitude is the result's scale. Returns the kernel's outputs."""
    got = kernel_fn(*args)
    outputs = listed(got)
    exact, mag = expected(reference_fn, args)
    assert_within_bound(name + " fwd", outputs, exact, scale_of(listed(exact)) if pointwise else mag, n,
                        accumulate=accumulate, rounding=rounding)
    cot = [None if c is None or not o.requires_grad else c
           for o, c in zip(outputs, fixed_cotangents([None if o is None else o.detach() for o in outputs]))]
    if any(c is not None for c in cot):
        exact_grads, mag_grads = expected(reference_fn, args, cot)
        assert_within_bound(name + " bwd", grads(outputs, cot, args), exact_grads,
                            scale_of(exact_grads) if pointwise else mag_grads, n, accumulate=accumulate,
                            rounding=rounding)
    return got


def outputs_and_grads(fn, args, cotangents):
    """fn's outputs (those not None) and the gradients of Σ output·cotangent w.r.t. the arguments that require
    grad, all as float64 tensors."""
    outs = listed(fn(*args))
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    loss = sum((o.double() * c.to(o.device)).sum() for o, c in zip(outs, cotangents)
               if o is not None and o.requires_grad)
    result_grads = torch.autograd.grad(loss, leaves) if leaves else ()
    return [o.detach().double() for o in outs if o is not None] + [g.double() for g in result_grads]


def copied(args, dtype, device="cpu"):
    return tuple(a.detach().to(device, dtype).requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a
                 for a in args)
