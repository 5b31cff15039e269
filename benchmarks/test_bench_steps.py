"""Training-step benchmarks (pytest-benchmark): a plain SGD step against STN / centered / Δ-STN training
and hyper steps, with each CPU backend, for the MLP, SimpleCNN and the LSTM LM of cases.py.

Under --benchmark-disable (the smoke run of `make test`) each body runs once on the small variant of
each workload: the same code path in milliseconds, which keeps the smoke run of benchmarks/ well under
a minute on 2 busy cores. Timed runs use the real sizes; run_all.py is the interleaved, ratio-reporting
version of the same measurement.
"""
import pytest

import cases
from fastdstn import ops
from timing import saved_bytes

STEPS = {name: (mode, phase, linearized) for name, mode, phase, linearized in cases.STEPS}


@pytest.mark.parametrize("model", list(cases.WORKLOADS))
def test_plain_step(benchmark, model):
    workload = cases.WORKLOADS[model](small=benchmark.disabled)
    benchmark.group = f"steps {model}"
    benchmark.extra_info.update(saved_MB=saved_bytes(workload.plain, workload.plain.resident) / 2 ** 20)
    benchmark.pedantic(workload.plain, rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("backend", cases.cpu_backends())
@pytest.mark.parametrize("step", list(STEPS))
@pytest.mark.parametrize("model", list(cases.WORKLOADS))
def test_stn_step(benchmark, model, step, backend):
    workload = cases.WORKLOADS[model](small=benchmark.disabled)
    mode, phase, linearized = STEPS[step]
    train, hyper = workload.stn(mode, linearized_hyper=linearized)
    fn = train if phase == "train" else hyper

    def run():
        with ops.use_backend(backend):
            fn()

    benchmark.group = f"steps {model}"
    benchmark.extra_info.update(saved_MB=saved_bytes(run, fn.resident) / 2 ** 20, backend=backend)
    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
