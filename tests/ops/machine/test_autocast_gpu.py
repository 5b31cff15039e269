"""Δ-STN steps under CUDA bf16 autocast on the compiled and Triton backends, within the half-precision bound of
the float32 run (tests/autocast_steps.py). Skipped without a GPU (the CPU runs: tests/method/test_autocast_steps.py;
the ops' rules, CUDA cases included: tests/ops/test_autocast_rules.py)."""
import pytest
import torch

from fastdstn.ops import cpp

from autocast_steps import MODELS, assert_close_to_float32
from op_cases import DEVICE

pytestmark = pytest.mark.skipif(DEVICE != "cuda", reason="CUDA autocast needs a GPU")


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_delta_stn_steps_under_cuda_autocast_bf16(kind, backend):
    if backend == "cpp" and not cpp.cuda_registered():
        pytest.skip("the extension was built without CUDA kernels")
    assert_close_to_float32(kind, backend, torch.bfloat16, "cuda")
