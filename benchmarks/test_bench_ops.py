"""Op benchmarks: Δ-STN's dual linear/conv, forward + response-sub-step backward, per backend."""
import pytest

from cases import CONV_SHAPES, LINEAR_SHAPES, conv_inputs, cpu_backends, linear_inputs
from fastdstn import ops


def _run_linear(a):
    y, yt = ops.stn_linear_dual(a["x"], a["xt"], a["eps"], a["Wg"], a["bg"], a["Wr"], a["br"], a["V"])
    yt.sum().backward()
    return y


def _run_conv(a, padding):
    y, yt = ops.stn_conv2d_dual(a["x"], a["xt"], a["eps"], a["Wg"], a["bg"], a["Wr"], a["br"], a["V"], padding=padding)
    yt.sum().backward()
    return y


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("shape", LINEAR_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_stn_linear_dual(benchmark, backend, shape):
    a = linear_inputs(*shape)
    B, n_in, n_out = shape
    benchmark.extra_info.update(flops=2 * B * n_in * n_out * 5, backend=backend)   # 3 GEMMs forward, 2 backward
    benchmark.group = f"stn_linear_dual {shape}"
    with ops.use_backend(backend):
        benchmark.pedantic(_run_linear, args=(a,), rounds=10, warmup_rounds=2)


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("shape", CONV_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_stn_conv2d_dual(benchmark, backend, shape):
    B, c_in, c_out, size, kernel, padding = shape
    a = conv_inputs(B, c_in, c_out, size, kernel)
    benchmark.extra_info.update(flops=2 * B * size * size * c_in * c_out * kernel * kernel * 5, backend=backend)
    benchmark.group = f"stn_conv2d_dual {shape}"
    with ops.use_backend(backend):
        benchmark.pedantic(_run_conv, args=(a, padding), rounds=5, warmup_rounds=1)
