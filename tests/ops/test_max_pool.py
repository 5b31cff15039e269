"""max_pool2d_dual and max_pool2d_dual_backward (the dual pass's max pooling) on every backend that has them: the
forward against ATen's max pooling with indices and a gather, element for element (a selection does not round), with
ties, NaN and -inf, windows clipped by padding and ceil_mode, dilation and non-contiguous inputs; the backward
against the reference's scatter-add; the routes' autograd Function (gradcheck, gradgradcheck);
opcheck of the compiled ops; bad arguments."""
import pytest
import torch

import fastdstn.ops as ops
from fastdstn.nn.pooling import _MaxPool
from fastdstn.ops import dispatch, reference as ref

from op_cases import backends

GEOMETRIES = {   # kernel_size, stride, padding, dilation, ceil_mode
    "2x2 stride 2": ([2, 2], [2, 2], [0, 0], [1, 1], False),
    "3x3 stride 2 padding 1 (ResNet stem)": ([3, 3], [2, 2], [1, 1], [1, 1], False),
    "3x3 stride 1 padding 1, overlapping": ([3, 3], [1, 1], [1, 1], [1, 1], False),
    "2x3 ceil_mode": ([2, 3], [2, 2], [0, 1], [1, 1], True),
    "3x2 dilation 2": ([3, 2], [1, 2], [1, 0], [2, 1], False),
    "window wider than stride, ceil_mode": ([3, 3], [2, 2], [0, 0], [1, 1], True),
}


def _inputs(shape, values: str, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    if values == "ties":
        x = torch.randint(0, 3, shape, generator=g).to(dtype)
    else:
        x = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    if values == "nan and inf":
        x.view(-1)[::7] = float("nan")
        x.view(-1)[3::5] = -float("inf")
        x[0, 0] = -float("inf")          # a plane of -inf: each window keeps its first in-bounds tap
    return x, torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("values", ["distinct", "ties", "nan and inf"])
@pytest.mark.parametrize("geometry", list(GEOMETRIES))
@pytest.mark.parametrize("backend", backends(op="max_pool2d_dual"))
def test_forward_is_atens_pooling_and_the_tangent_at_its_indices(backend, geometry, values, dtype):
    x, xt = _inputs((3, 4, 9, 11), values, dtype)
    y, yt, indices = backend.max_pool2d_dual(x, xt, *GEOMETRIES[geometry])
    y_aten, indices_aten = torch.ops.aten.max_pool2d_with_indices(x, *GEOMETRIES[geometry])
    assert y.dtype == yt.dtype == dtype and indices.dtype == torch.int64
    assert torch.equal(indices, indices_aten)
    torch.testing.assert_close(y, y_aten, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(yt, xt.flatten(2).gather(2, indices_aten.flatten(2)).view(indices.shape))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("geometry", list(GEOMETRIES))
@pytest.mark.parametrize("backend", backends(op="max_pool2d_dual_backward"))
def test_backward_is_the_scatter_add_onto_the_indices(backend, geometry, dtype):
    x, xt = _inputs((3, 4, 9, 11), "ties", dtype)
    _, _, indices = ref.max_pool2d_dual(x, xt, *GEOMETRIES[geometry])
    grad = torch.randn(indices.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    got = backend.max_pool2d_dual_backward(grad, indices, x.shape[2:])
    exact = ref.max_pool2d_dual_backward(grad.double(), indices, x.shape[2:])
    assert got.shape == x.shape and got.dtype == dtype
    # overlapping windows add up to kh·kw gradients at one input: that many roundings
    torch.testing.assert_close(got.double(), exact, rtol=0, atol=9 * torch.finfo(dtype).eps * exact.abs().max())


@pytest.mark.parametrize("backend", backends(op="max_pool2d_dual"))
def test_non_contiguous_and_empty_inputs(backend):
    x, xt = _inputs((4, 3, 8, 10), "distinct", torch.float32)
    geometry = GEOMETRIES["3x3 stride 2 padding 1 (ResNet stem)"]
    strided = [t.transpose(2, 3).contiguous().transpose(2, 3) for t in (x, xt)]
    for a, b in zip(backend.max_pool2d_dual(*strided, *geometry), backend.max_pool2d_dual(x, xt, *geometry)):
        assert torch.equal(a, b)
    y, yt, indices = backend.max_pool2d_dual(x[:0], xt[:0], *geometry)
    assert y.shape == yt.shape == indices.shape == (0, 3, 4, 5)
    assert backend.max_pool2d_dual_backward(y, indices, (8, 10)).shape == (0, 3, 8, 10)


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_route_function_gradcheck_and_gradgradcheck(backend):
    """The dual pass's tangent (x frozen, ẋ differentiated) and plain pooling (x differentiated)."""
    x, xt = _inputs((2, 3, 7, 6), "distinct", torch.float64)
    geometry = ([3, 2], [2, 2], [1, 0], [1, 1], True)
    with ops.use_backend(backend):
        for tangent in (lambda t: _MaxPool.apply(t, x, geometry)[1], lambda t: _MaxPool.apply(t, t, geometry)[0]):
            assert torch.autograd.gradcheck(tangent, (xt.requires_grad_(True),))
            assert torch.autograd.gradgradcheck(tangent, (xt,))


def test_auto_runs_the_compiled_pooling_on_cpu_in_float32_and_float64_only():
    cpp = "cpp" if ops.available()["cpp"] == "available" else "reference"
    for dtype, expected in ((torch.float32, cpp), (torch.float64, cpp), (torch.bfloat16, "reference")):
        for op in ("max_pool2d_dual", "max_pool2d_dual_backward"):
            assert dispatch.choose(op, "cpu", dtype)[0] == expected, (op, dtype)
    assert dispatch.choose("max_pool2d_dual", "cuda", torch.float32)[0] == "reference"


@pytest.mark.parametrize("backend", backends("cpp", op="max_pool2d_dual"))
def test_max_pool_opcheck(backend):
    x, xt = _inputs((2, 3, 7, 9), "distinct", torch.float32)
    geometry = GEOMETRIES["2x3 ceil_mode"]
    _, _, indices = backend.max_pool2d_dual(x, xt, *geometry)
    torch.library.opcheck(backend.registered("max_pool2d_dual"), (x, xt, *geometry), test_utils=backend.opcheck_utils)
    torch.library.opcheck(backend.registered("max_pool2d_dual_backward"), (torch.randn(indices.shape), indices,
                                                                          [7, 9]), test_utils=backend.opcheck_utils)


@pytest.mark.parametrize("backend", backends("cpp", op="max_pool2d_dual_backward"))
def test_compiled_backward_refuses_indices_outside_the_plane(backend):
    indices = torch.tensor([0, 5, 63, 64]).view(1, 1, 2, 2)
    with pytest.raises(RuntimeError, match=r"indices: expected positions in \[0, 64\)"):
        backend.max_pool2d_dual_backward(torch.ones(1, 1, 2, 2), indices, [8, 8])


@pytest.mark.parametrize("backend", backends("cpp", op="max_pool2d_dual"))
def test_compiled_op_refuses_a_window_with_no_tap_inside(backend):
    x = torch.randn(1, 1, 2, 2)      # kernel 2, dilation 3, padding 1: taps at -1 and 2 of 0..1
    with pytest.raises(RuntimeError, match=r"the window at output \(0, 0\) has no tap inside"):
        backend.max_pool2d_dual(x, x, [2, 2], [1, 1], [1, 1], [3, 3], False)


@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize("call,error,words", [
    (lambda x: ops.max_pool2d_dual(x[0], x[0], 2), ValueError, "x: expected a 4-d tensor"),
    (lambda x: ops.max_pool2d_dual(x, x[:1], 2), ValueError, "xt: expected shape"),
    (lambda x: ops.max_pool2d_dual(x, x.double(), 2), TypeError, "xt: expected dtype"),
    (lambda x: ops.max_pool2d_dual(x.long(), x.long(), 2), TypeError, "x: expected a floating-point"),
    (lambda x: ops.max_pool2d_dual(x, x, 0), ValueError, "kernel_size: expected an int or 2 ints of at least 1"),
    (lambda x: ops.max_pool2d_dual(x, x, (2, 2, 2)), ValueError, "kernel_size"),
    (lambda x: ops.max_pool2d_dual(x, x, 2, stride=0), ValueError, "stride"),
    (lambda x: ops.max_pool2d_dual(x, x, 2, padding=2), ValueError, "padding: expected at most half"),
    (lambda x: ops.max_pool2d_dual(x, x, (3, 2), padding=(1, 2)), ValueError, "padding: expected at most half"),
    (lambda x: ops.max_pool2d_dual(x, x, 2, dilation=(1, 0)), ValueError, "dilation"),
    (lambda x: ops.max_pool2d_dual(x, x, 2, ceil_mode=1), TypeError, "ceil_mode"),
    (lambda x: ops.max_pool2d_dual(x, x, 9), ValueError, "x: its planes"),
    (lambda x: ops.max_pool2d_dual(x[..., :2, :2], x[..., :2, :2], 2, 1, 1, 3), ValueError, "dilation: window 0"),
    (lambda x: ops.max_pool2d_dual_backward(x, x.long()[:1], (8, 8)), ValueError, "indices: expected shape"),
    (lambda x: ops.max_pool2d_dual_backward(x, x, (8, 8)), TypeError, "indices: expected int64"),
    (lambda x: ops.max_pool2d_dual_backward(x, x.long(), 8), ValueError, "input_size"),
])
def test_bad_arguments_get_one_line_naming_them(backend, call, error, words):
    x = torch.randn(2, 3, 8, 8)
    with ops.use_backend(backend), pytest.raises(error, match=words):
        call(x)


def test_undilated_windows_always_reach_the_input():
    """What lets the public function skip its window check without dilation: under ATen's rules (padding at most
    half the kernel, ceil_mode's last window starting inside) every undilated window has a tap inside the input."""
    from fastdstn.ops.pooling import _pooled
    for size in range(1, 12):
        for kernel in range(1, 6):
            for stride in range(1, 5):
                for padding in range(kernel // 2 + 1):
                    for ceil_mode in (False, True):
                        windows = _pooled(size, kernel, stride, padding, 1, ceil_mode)
                        starts = [w * stride - padding for w in range(windows)]
                        assert all(any(0 <= s + j < size for j in range(kernel)) for s in starts), \
                            (size, kernel, stride, padding, ceil_mode)
