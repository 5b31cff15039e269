"""Choosing the backend (fastdstn.ops.dispatch) and what every backend shares: a missing backend falls back to
the reference with one warning, half-precision CPU tensors go to the reference, the public ops reach the compiled
and Triton functions, bad arguments are named (in Python and in the C++ ops), and the compiled backwards refuse
a double backward with the way out."""
import pytest
import torch

import fastdstn.ops as ops
from fastdstn.ops import cpp, dispatch
from fastdstn.ops import reference as ref
from fastdstn.ops.dispatch import resolve

from op_cases import (DEVICE, GRADCHECK_CONV_CASES, LINEAR_CASES, compiled, conv_args, dense_inputs, flat, linear_args,
                      listed, lstm_args, named, needs_cpp, needs_triton, nonlinear_args, triton_module)

TLIN = triton_module("dense.triton")


@pytest.mark.usefixtures("reference_backend")
def test_bad_dropout_and_conv_arguments_are_named():
    with pytest.raises(ValueError, match=r"rate: expected finite"):
        ops.dropout_dual(torch.ones(2, 3), None, torch.tensor([0.1, float("nan")]), seed=0)
    with pytest.raises(ValueError, match=r"rate: expected drop probabilities in \[0, 1\)"):
        ops.dropout_dual(torch.ones(2, 3), None, torch.tensor([0.1, 1.0]), seed=0)
    with pytest.raises(ValueError, match=r"rate: expected shape \(2,\)"):
        ops.dropout_dual(torch.ones(2, 3), None, torch.tensor([0.1]), seed=0)
    a = named(dense_inputs(4, 5, 3, 2, conv=(6, 6, 3, 1), grads="none"))
    with pytest.raises(ValueError, match=r"x: expected 10 input channels"):
        ops.stn_conv2d(a["x"], a["h"], a["Wg"], a["bg"], a["Wr"], a["br"], a["V"], groups=2)
    with pytest.raises(ValueError, match="use_backend"):
        with ops.use_backend("cuda-magic"):
            pass


@pytest.mark.usefixtures("reference_backend")
def test_missing_backend_falls_back_to_reference_with_one_warning(monkeypatch):
    monkeypatch.setitem(dispatch._loaded, "triton", None)
    monkeypatch.setitem(dispatch._load_errors, "triton", "not built for this test")
    monkeypatch.setattr(dispatch, "_warned", set())
    a = named(dense_inputs(4, 5, 3, 2, grads="none"))
    expected = ops.reference.stn_linear(a["x"], a["h"], a["Wg"], a["bg"], a["Wr"], a["br"], a["V"])
    with ops.use_backend("triton"):
        with pytest.warns(RuntimeWarning, match="not built for this test"):
            y = ops.stn_linear(a["x"], a["h"], a["Wg"], a["bg"], a["Wr"], a["br"], a["V"])
        torch.testing.assert_close(y, expected)
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ops.stn_linear(a["x"], a["h"], a["Wg"], a["bg"], a["Wr"], a["br"], a["V"])


@pytest.mark.usefixtures("reference_backend")
def test_device_mismatch_is_named():
    a = named(dense_inputs(4, 5, 3, 2, dtype=torch.float32, grads="none"))
    with pytest.raises(ValueError, match=r"V: expected device cpu \(the device of x\), received .*device meta"):
        ops.stn_linear(a["x"], a["h"], a["Wg"], a["bg"], a["Wr"], a["br"], a["V"].to("meta"))


@needs_cpp
def test_cpp_backend_loads():
    assert cpp.AVAILABLE, cpp.UNAVAILABLE_REASON
    assert "cpu" in cpp.DEVICE_TYPES
    assert isinstance(cpp.cuda_registered(), bool)


def op_calls():
    """name -> (the cpp op as a function of its differentiable float64 inputs, those inputs); small shapes."""
    lin = linear_args((2, 3, 2, 2, True, True, True, "all", True))
    conv, geo = conv_args(GRADCHECK_CONV_CASES[2])
    lstm = lstm_args(2, 2, "gc", True, torch.float64)
    return {
        "stn_linear": (lambda *a: compiled.stn_linear(*a), nonlinear_args(lin)),
        "stn_linear_dual": (lambda *a: flat(compiled.stn_linear_dual(*a)), lin),
        "stn_conv2d": (lambda *a: compiled.stn_conv2d(*a, *geo), nonlinear_args(conv)),
        "stn_conv2d_dual": (lambda *a: flat(compiled.stn_conv2d_dual(*a, *geo)), conv),
        "lstm_cell_dual": (lambda *a: flat(compiled.lstm_cell_dual(*a)), lstm),
    }


@needs_cpp
@pytest.mark.parametrize("name", list(op_calls()))
def test_cpp_double_backward_is_refused_with_the_way_out(name):
    """The backward ops have no derivatives: gradgradcheck found None for W_g and V (stn_linear) and 7536.8
    against 5548.6 (stn_conv2d) before the refusal; the reference backend gives the right second derivatives."""
    fn, args = op_calls()[name]
    with pytest.raises(RuntimeError, match=f"double backward through fastdstn::{name} is not supported.*"
                                           r'use_backend\("reference"\)'):
        torch.autograd.gradgradcheck(fn, args)
    first = torch.autograd.grad(listed(fn(*args))[0].sum(), args[0])     # first order, no graph: still there
    assert first[0].shape == args[0].shape
    reference = getattr(ref, name)
    if name.startswith("stn_conv2d"):
        reference = lambda *a, op=reference: op(*a, *conv_args(GRADCHECK_CONV_CASES[2])[1])  # noqa: E731
    assert torch.autograd.gradgradcheck(lambda *a: flat(listed(reference(*a))), args)


@needs_cpp
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_on_cpu_runs_the_reference(dtype, monkeypatch):
    """The CPU loops compute float32 and float64: half-precision CPU tensors (and CPU autocast) go to the
    reference, silently under "auto" and with one warning when "cpp" was asked for."""
    monkeypatch.setattr(dispatch, "_warned", set())  # the warning is once per session: whatever ran before
    args = [None if a is None else a.detach().to(dtype) for a in linear_args(LINEAR_CASES[0], torch.float32)]
    expected = ref.stn_linear_dual(*args)
    assert expected[0].dtype == dtype
    with ops.use_backend("auto"):
        assert resolve("stn_linear_dual", args[0]) is ref.stn_linear_dual
        for a, b in zip(ops.stn_linear_dual(*args), expected):
            assert torch.equal(a, b)
    with ops.use_backend("cpp"), pytest.warns(RuntimeWarning, match=f"does not compute {dtype} on cpu"):
        ops.stn_linear_dual(*args)
    x32 = args[0].float()
    with torch.autocast("cpu", dtype):
        assert resolve("stn_linear_dual", x32) is ref.stn_linear_dual
    assert resolve("stn_linear_dual", x32) is compiled.stn_linear_dual


@needs_cpp
def test_autograd_is_registered_in_cpp():
    """The autograd formulas are C++ kernels for the Autograd key (csrc/<family>/<family>_autograd.cpp), not
    Python ones."""
    for name in ("stn_linear", "stn_linear_dual", "stn_conv2d", "stn_conv2d_dual", "lstm_cell_dual", "dropout_dual"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fastdstn::{name}", "Autograd"), name


@needs_cpp
def test_public_api_dispatches_to_cpp():
    args = dense_inputs(4, 5, 6, 2, dtype=torch.float32)
    with ops.use_backend("cpp"):
        assert resolve("stn_linear_dual", args[0]) is compiled.stn_linear_dual
        y, yt = ops.stn_linear_dual(*args)
    y_ref, yt_ref = ref.stn_linear_dual(*args)
    torch.testing.assert_close(yt, yt_ref)


@needs_cpp
def test_cpp_errors_name_the_argument():
    x, xt, eps, Wg, bg, Wr, br, V = dense_inputs(4, 5, 6, 3, dtype=torch.float32, grads="none")
    op = torch.ops.fastdstn.stn_linear_dual.default
    with pytest.raises(RuntimeError, match=r"V: expected 12 rows"):
        op(x, xt, eps, Wg, bg, Wr, br, V[:6])
    with pytest.raises(RuntimeError, match=r"eps: expected shape \[4, 3\]"):
        op(x, xt, eps[:, :2], Wg, bg, Wr, br, V)
    with pytest.raises(RuntimeError, match=r"eps: expected 4 rows"):
        op(x, xt, eps[:3], Wg, bg, Wr, br, V)
    with pytest.raises(RuntimeError, match=r"x: expected 5 input features"):
        op(x[:, :4], None, eps, Wg, bg, Wr, br, V)
    with pytest.raises(RuntimeError, match=r"Wr: expected shape"):
        op(x, xt, eps, Wg, bg, Wr[:, :4], br, V)
    with pytest.raises(RuntimeError, match=r"xt: expected dtype Float"):
        op(x, xt.double(), eps, Wg, bg, Wr, br, V)
    with pytest.raises(RuntimeError, match=r"x: expected float32 or float64"):
        op(x.half(), None, eps.half(), Wg.half(), None, Wr.half(), None, V[:6].half())
    with pytest.raises(RuntimeError, match=r"br: expected shape \[6\]"):
        op(x, xt, eps, Wg, bg, Wr, br[:5], V)
    conv = torch.ops.fastdstn.stn_conv2d_dual.default
    xc = torch.randn(2, 4, 5, 5)
    Wc = torch.randn(6, 2, 3, 3)
    e2 = torch.randn(2, 3)
    with pytest.raises(RuntimeError, match=r"x: expected 2 input channels"):
        conv(xc, None, e2, Wc, None, Wc, None, torch.randn(6, 3), [1, 1], [0, 0], [1, 1], 1)
    with pytest.raises(RuntimeError, match=r"groups: expected a divisor"):
        conv(xc, None, e2, Wc, None, Wc, None, torch.randn(6, 3), [1, 1], [0, 0], [1, 1], 4)
    lstm = torch.ops.fastdstn.lstm_cell_dual.default
    with pytest.raises(RuntimeError, match=r"gates: expected shape \[3, 8\]"):
        lstm(torch.randn(3, 7), None, torch.randn(3, 2), None)
    with pytest.raises(RuntimeError, match=r"c_t: expected shape"):
        lstm(torch.randn(3, 8), None, torch.randn(3, 2), torch.randn(3, 3))
    drop = torch.ops.fastdstn.dropout_dual.default
    with pytest.raises(RuntimeError, match=r"rate: expected finite"):
        drop(torch.randn(2, 3), None, torch.tensor([0.1, float("nan")]), 0, 0, [])
    with pytest.raises(RuntimeError, match=r"rate: expected drop probabilities in \[0, 1\)"):
        drop(torch.randn(2, 3), None, torch.tensor([0.1, 1.0]), 0, 0, [])
    with pytest.raises(RuntimeError, match=r"rate: expected shape \[2\]"):
        drop(torch.randn(2, 3), None, torch.tensor([0.1, 0.2, 0.3]), 0, 0, [])
    with pytest.raises(RuntimeError, match=r"shared_dims: must not contain the batch dimension"):
        drop(torch.randn(2, 3), None, torch.tensor([0.1, 0.2]), 0, 0, [0])


@needs_triton
def test_triton_backend_dispatch():
    """fastdstn.ops routes to this module for CUDA tensors when the triton backend is chosen."""
    from fastdstn.ops import triton_config
    assert dispatch.load("triton") is triton_config
    assert dispatch.supports(triton_config, "cuda") and not dispatch.supports(triton_config, "cpu")
    assert dispatch.implementation("triton", "stn_linear_dual") is TLIN.stn_linear_dual
    if DEVICE == "cuda":  # pragma: no cover - GPU machines
        import fastdstn.ops as ops
        with ops.use_backend("triton"):
            assert dispatch.resolve("stn_linear_dual", torch.empty(0, device="cuda")) is TLIN.stn_linear_dual
