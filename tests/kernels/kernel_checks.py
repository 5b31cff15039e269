"""Shared helpers for the Triton kernel tests.

Accuracy follows tests/accuracy.py: each element of a kernel's result lies within γ_n times its magnitude
(Σ|terms|, the reference on absolute values) of the float64 reference, n the op's reduction lengths plus its
elementwise roundings (the terms functions below); half-precision storage adds a few units of its roundoff.
"""
import torch

from accuracy import assert_within_bound, magnitude, scale_of

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Under the interpreter wrap_triton launches eagerly instead of tracing, so opcheck's AOT-dispatch test
# (which compares a traced graph against eager) only means something on a GPU.
OPCHECK_UTILS = (("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
                 if DEVICE == "cuda" else ("test_schema", "test_autograd_registration", "test_faketensor"))


def expected(reference_fn, args, cotangents=None):
    """(float64 truth, magnitude) for a kernel check (tests/accuracy.py): reference_fn's outputs on the
    arguments in float64 and their magnitudes, or, with `cotangents` (paired with the outputs by position; a None
    takes no part), the gradients of Σ output·cotangent w.r.t. the arguments that require grad (None for the others)."""
    a64 = to64(args)
    if cotangents is None:
        return reference_fn(*a64), magnitude(reference_fn, args)
    return grads(_listed(reference_fn(*a64)), cotangents, a64), magnitude(reference_fn, args, cotangents)


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
    assert_within_bound(name + " fwd", outputs, exact, scale_of(_listed(exact)) if pointwise else mag, n,
                        rounding=rounding)
    cot = [None if o is None else torch.randn_like(o) for o in outputs]
    exact_grads, mag_grads = expected(reference_fn, args, cot)
    assert_within_bound(name + " bwd", grads(outputs, cot, args), exact_grads,
                        scale_of(exact_grads) if pointwise else mag_grads, n, rounding=rounding)
    return got


def _listed(values):
    return list(values) if isinstance(values, (tuple, list)) else [values]
