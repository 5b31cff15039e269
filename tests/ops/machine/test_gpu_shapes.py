"""The benchmark shapes (benchmarks/ROOFLINE.md) on a GPU, in fp32 and bf16. Skipped on CPU: at these
sizes the interpreter would take minutes per op. The suite pins one launch config (conftest); run with
FASTDSTN_TRITON_PIN=0 to put every autotune config through the same checks."""
import pytest
import torch

from fastdstn.ops import reference as R

from accuracy import dense_terms, roundings, tf32_roundings
from op_cases import DENSE_NAMES, DEVICE, check, tensors, triton_module

TLin = triton_module("dense.triton")
TConv = triton_module("dense.triton_conv")

pytestmark = pytest.mark.skipif(DEVICE != "cuda", reason="benchmark shapes run on a GPU only")

LINEAR = [(128, 1024, 1024), (512, 784, 1200), (32, 256, 256)]
CONV = [(128, 1, 16, 28, 5, 2, False), (128, 16, 32, 14, 5, 2, True), (64, 64, 64, 32, 3, 1, True)]


def _inputs(shapes, dtype):
    return tensors(dict(zip(DENSE_NAMES, shapes)), dtype=dtype, device=DEVICE)


def _rounding(dtype, kinds):
    """bf16: up to 8 roundings to bf16 along a chain (outputs, saved and formed products); float32: TF32 operands
    where torch's flags allow them for the products `kinds` ("matmul", "conv") that the op runs."""
    if dtype == torch.bfloat16:
        return roundings(8, dtype)
    return sum(tf32_roundings(kind, DEVICE) for kind in kinds)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("B,I,O", LINEAR)
def test_linear_dual_benchmark_shapes(B, I, O, dtype):
    H = 6
    args = _inputs([(B, I), (B, I), (B, H), (O, I), (O,), (O, I), (O,), (2 * O, H)], dtype)
    check("dual", TLin.stn_linear_dual, R.stn_linear_dual, args, dense_terms(args[0], args[3], args[7]),
          rounding=_rounding(dtype, ("matmul",)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("B,Ci,Co,S,k,p,with_xt", CONV)
def test_conv_dual_benchmark_shapes(B, Ci, Co, S, k, p, with_xt, dtype):
    H = 6
    args = _inputs([(B, Ci, S, S), (B, Ci, S, S) if with_xt else None, (B, H), (Co, Ci, k, k), (Co,),
                    (Co, Ci, k, k), (Co,), (2 * Co, H)], dtype)
    geo = ((1, 1), (p, p), (1, 1), 1)
    check("conv dual", lambda *a: TConv.stn_conv2d_dual(*a, *geo), lambda *a: R.stn_conv2d_dual(*a, *geo), args,
          dense_terms(args[0], args[3], args[7], geo), rounding=_rounding(dtype, ("matmul", "conv")))
