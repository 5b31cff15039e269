"""Δ-STN under torch.autocast on CPU: models converted with fastdstn.convert (a conv net with BatchNorm and
LayerNorm, an embedding + LSTM model) run a train step and a hyper step in half precision on every backend that
runs on CPU and land within a half-precision bound of the float32 run (tests/autocast_steps.py, which states the
bound). The ops' rules (fastdstn/ops/autocast.py) are checked op by op in tests/ops/test_autocast_rules.py; the CUDA
runs are in tests/ops/machine/test_autocast_gpu.py."""
import pytest
import torch

from autocast_steps import MODELS, assert_close_to_float32
from fastdstn.ops import dispatch, triton_config


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_delta_stn_steps_under_cpu_autocast_bf16(kind, backend, monkeypatch):
    """On CPU the compiled loops compute float32 and float64, so under bf16 autocast "cpp" hands the dense ops and
    dropout (bf16) to the reference and runs the LSTM cell (float32) itself: its run is compared with the
    reference's float32 run, whose dropout masks it shares (the compiled dropout draws other masks)."""
    monkeypatch.setattr(dispatch, "_warned", set())  # "cpp" asked for bf16 warns once: not for the whole session
    assert_close_to_float32(kind, backend, torch.bfloat16, float32_backend="reference")


@pytest.mark.triton
def test_delta_stn_steps_under_cpu_autocast_on_triton(monkeypatch):
    """The Triton kernels under the interpreter, routed CPU tensors; float16, since the interpreter's bf16
    tl.dot is not exact (Triton 3.8), and the convnet (the Triton conv, linear and dropout kernels)."""
    monkeypatch.setattr(triton_config, "DEVICE_TYPES", ("cpu", "cuda"))
    assert_close_to_float32("convnet", "triton", torch.float16)
