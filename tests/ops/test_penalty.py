"""penalty_row_sums and penalty_row_combination (the tuned L2 penalty's passes) on every backend that has them,
against the float64 reference within tests/accuracy.py's bound; the penalty's autograd Function built on them
(gradcheck, and its refusal of double backward); opcheck of the compiled ops; bad arguments."""
import pytest
import torch

import fastdstn.ops as ops
from accuracy import assert_within_bound, magnitude, roundings
from fastdstn.nn.groups import _RowSums
from fastdstn.ops import dispatch, reference as ref

from op_cases import backends, tensors

# Weight shapes: a conv weight, a linear weight whose rows are no multiple of the CPU loop's 8 lanes, a bias-like
# vector (one element per row), a single row, no rows.
SHAPES = [(7, 5, 3, 3), (13, 1001), (6,), (1, 40), (0, 4)]


def _row_elements(shape) -> int:
    return max(1, int(torch.tensor(shape[1:]).prod().item()) if len(shape) > 1 else 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("backend", backends(op="penalty_row_sums"))
def test_row_sums_within_the_bound_of_the_float64_reference(backend, shape, dtype):
    g, r = tensors(dict(g=shape, r=shape), dtype=dtype, device=backend.device, grads=set())
    got = backend.penalty_row_sums(g, r)
    assert got.shape == (3, shape[0]) and got.dtype == dtype
    exact = ref.penalty_row_sums(g.double(), r.double())
    assert_within_bound("row sums", got, exact, magnitude(ref.penalty_row_sums, (g, r)), _row_elements(shape),
                        rounding=roundings(1, dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("backend", backends(op="penalty_row_combination"))
def test_row_combination_within_the_bound_of_the_float64_reference(backend, shape, dtype):
    g, r = tensors(dict(g=shape, r=shape), dtype=dtype, device=backend.device, grads=set())
    a, b = tensors(dict(a=shape[:1], b=shape[:1]), device=backend.device, grads=set(), seed=1)
    got = backend.penalty_row_combination(a, g, b, r)
    assert got.shape == g.shape and got.dtype == dtype and got.is_contiguous()
    exact = ref.penalty_row_combination(a.double(), g.double(), b.double(), r.double())
    # a and b are rounded to g's dtype, then two products and one sum
    assert_within_bound("row combination", got, exact, magnitude(ref.penalty_row_combination, (a, g, b, r)), 3,
                        rounding=roundings(1, dtype))


@pytest.mark.parametrize("backend", backends(op="penalty_row_sums"))
def test_non_contiguous_weights_give_the_contiguous_result(backend):
    g, r = tensors(dict(g=(6, 4, 3, 3), r=(6, 4, 3, 3)), device=backend.device, grads=set(), contiguous=False)
    a, b = tensors(dict(a=(6,), b=(6,)), device=backend.device, grads=set(), seed=1)
    gc, rc = g.contiguous(), r.contiguous()
    torch.testing.assert_close(backend.penalty_row_sums(g, r), backend.penalty_row_sums(gc, rc))
    torch.testing.assert_close(backend.penalty_row_combination(a, g, b, r),
                               backend.penalty_row_combination(a, gc, b, rc))


@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize("shape", [(5, 3, 2, 2), (4, 7)])
def test_penalty_function_gradcheck_and_no_double_backward(backend, shape):
    g, r = tensors(dict(g=shape, r=shape), dtype=torch.float64)
    with ops.use_backend(backend):
        assert torch.autograd.gradcheck(_RowSums.apply, (g, r))
        sums = _RowSums.apply(g, r)
        cotangent = torch.ones_like(sums, requires_grad=True)     # a Hessian-vector product's differentiable one
        (d_g,) = torch.autograd.grad(sums, g, cotangent, create_graph=True)
        with pytest.raises(RuntimeError, match="once_differentiable"):
            d_g.sum().backward()


def test_auto_runs_the_compiled_passes_on_cpu_in_float32_and_float64_only():
    cpp = "cpp" if ops.available()["cpp"] == "available" else "reference"
    for dtype, expected in ((torch.float32, cpp), (torch.float64, cpp), (torch.bfloat16, "reference")):
        for op in ("penalty_row_sums", "penalty_row_combination"):
            assert dispatch.choose(op, "cpu", dtype)[0] == expected, (op, dtype)
    assert dispatch.choose("penalty_row_sums", "cuda", torch.float32)[0] == "reference"


@pytest.mark.parametrize("backend", backends("cpp", op="penalty_row_sums"))
def test_penalty_opcheck(backend):
    g, r = tensors(dict(g=(5, 3, 3, 3), r=(5, 3, 3, 3)), device=backend.device, grads=set())
    a, b = tensors(dict(a=(5,), b=(5,)), device=backend.device, grads=set(), seed=1)
    torch.library.opcheck(backend.registered("penalty_row_sums"), (g, r), test_utils=backend.opcheck_utils)
    torch.library.opcheck(backend.registered("penalty_row_combination"), (a, g, b, r),
                          test_utils=backend.opcheck_utils)


@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize("call,error,words", [
    (lambda g, r, a: ops.penalty_row_sums(g, r[:2]), ValueError, "r: expected shape"),
    (lambda g, r, a: ops.penalty_row_sums(g, r.double()), TypeError, "r: expected dtype"),
    (lambda g, r, a: ops.penalty_row_sums(g.long(), r.long()), TypeError, "g"),
    (lambda g, r, a: ops.penalty_row_sums(torch.tensor(1.0), torch.tensor(2.0)), ValueError, "g: expected a weight"),
    (lambda g, r, a: ops.penalty_row_combination(a[:3], g, a, r), ValueError, "a: expected shape"),
    (lambda g, r, a: ops.penalty_row_combination(a, g, a.view(4, 1), r), ValueError, "b"),
    (lambda g, r, a: ops.penalty_row_combination(a, g, 2.0, r), TypeError, "b"),
])
def test_bad_arguments_get_one_line_naming_them(backend, call, error, words):
    g, r = torch.randn(4, 3), torch.randn(4, 3)
    with ops.use_backend(backend), pytest.raises(error, match=words):
        call(g, r, torch.randn(4))
