"""Δ-STN steps under CUDA bf16 autocast on the compiled and Triton backends, within the half-precision bound of
the float32 run (tests/autocast_steps.py), and the Triton dual linear fed float32 under bf16 autocast. Skipped
without a GPU (the CPU runs: tests/method/test_autocast_steps.py, tests/ops/test_autocast_rules.py)."""
import pytest
import torch

from fastdstn.ops import cpp
from fastdstn.ops import reference as ref

from accuracy import dense_terms, roundings
from autocast_steps import MODELS, assert_close_to_float32
from op_cases import DEVICE, check, triton_module

TLIN = triton_module("dense.triton")

pytestmark = pytest.mark.skipif(DEVICE != "cuda", reason="CUDA autocast needs a GPU")


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_delta_stn_steps_under_cuda_autocast_bf16(kind, backend):
    if backend == "cpp" and not cpp.cuda_registered():
        pytest.skip("the extension was built without CUDA kernels")
    assert_close_to_float32(kind, backend, torch.bfloat16, "cuda")


def test_triton_linear_under_autocast_bf16():
    args = [torch.randn(*s, device=DEVICE).requires_grad_() for s in
            ((64, 48), (64, 48), (64, 3), (40, 48), (40,), (40, 48), (40,), (80, 3))]
    x, _, _, Wg, _, _, _, V = args

    def under_autocast(*a):
        with torch.autocast("cuda", torch.bfloat16):
            out = TLIN.stn_linear_dual(*a)
        assert all(o.dtype == torch.bfloat16 for o in out)
        return out
    check("autocast bf16", under_autocast, ref.stn_linear_dual, args, dense_terms(x, Wg, V),
          rounding=roundings(6, torch.bfloat16))
