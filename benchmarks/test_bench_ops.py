"""Op benchmarks (pytest-benchmark): each dual op's forward + Δ-STN response-sub-step backward, per
backend, and the GEMM/conv floor of the same shapes. The callables come from cases.py, the same ones
run_all.py times, so this suite (or its --benchmark-disable smoke run in `make test`) exercises them.

    pytest benchmarks/test_bench_ops.py --benchmark-group-by=group      # timed, grouped by op and shape
"""
import pytest

import cases

PROVIDERS = ["floor"] + cases.cpu_backends()


def _run(pair):
    forward, backward = pair
    backward(forward())


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("shape", cases.LINEAR_SHAPES, ids=cases.linear_label)
def test_stn_linear_dual(benchmark, provider, shape):
    B, n_in, n_out = shape
    pair = cases.linear_dual_case(shape, [p for p in PROVIDERS if p != "floor"])[provider]
    # 3 weight GEMMs forward, 2 backward (docs/METHOD.md §5), whatever the provider.
    benchmark.extra_info.update(flops=2 * B * n_in * n_out * 5, provider=provider)
    benchmark.group = f"stn_linear_dual {cases.linear_label(shape)}"
    benchmark.pedantic(_run, args=(pair,), rounds=10, warmup_rounds=2)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("shape", cases.CONV_SHAPES, ids=cases.conv_label)
def test_stn_conv2d_dual(benchmark, provider, shape):
    B, c_in, c_out, size, k, pad, has_xt = shape
    pair = cases.conv_dual_case(shape, [p for p in PROVIDERS if p != "floor"])[provider]
    convs = 5 if has_xt else 3          # forward: x*W_g, x*W_r (+ ẋ*W_g); backward: ∂W_r (+ ∂ẋ)
    benchmark.extra_info.update(flops=2 * B * size * size * c_in * c_out * k * k * convs, provider=provider)
    benchmark.group = f"stn_conv2d_dual {cases.conv_label(shape)}"
    benchmark.pedantic(_run, args=(pair,), rounds=5, warmup_rounds=1)
