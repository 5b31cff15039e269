"""The linear ops' small-batch GEMM kernel (csrc/dense/small_gemm_cpu.cpp), through its two test ops:
fastdstn::_dense_mm (a·b, a any strided view) and fastdstn::_linear_products (x·W_gᵀ, x·W_rᵀ, ẋ·W_gᵀ).

Against the float64 product, within the forward-error bound of a length-L dot product (tests/accuracy.py),
in float32 and float64, at sizes off the vector width, with strided and transposed operands, on both
sides of the size limits (64-row batches take the kernel, 65 rows go to ATen). Where the kernel cannot
run (no AVX-512, FASTDSTN_SMALL_GEMM=0) the same tests check the ATen path."""
import os
import subprocess
import sys

import pytest
import torch

from accuracy import assert_within_bound
from fastdstn.ops import cpp
from op_cases import backend_functions

compiled = backend_functions("cpp") if cpp.AVAILABLE else None  # each family's cpp.py

pytestmark = pytest.mark.skipif(not cpp.AVAILABLE, reason="compiled ops unavailable")

# (rows, inner, cols): 1s, sizes off the 16/8-lane width, the tile edges (4, 12, 24 rows; 1, 2, 4
# vectors), the batch limit (64 takes the kernel, 65 does not) and the benchmark's (32, 256, 256).
SHAPES = [(1, 1, 1), (7, 5, 3), (33, 77, 129), (24, 3, 48), (13, 16, 16), (5, 300, 65), (64, 100, 17),
          (65, 40, 70), (32, 256, 256), (4, 9, 64), (12, 31, 32)]


def _close(result, a, b, expected64):
    """result within γ_L·(|a|·|b|) of the float64 product, element by element (L: the inner length)."""
    assert_within_bound("product", result, expected64, a.double().abs() @ b.double().abs(), a.shape[1],
                        accumulate=result.dtype)


def test_kernel_runs_where_it_should():
    wanted = cpp.CPU_ISA == "avx512" and os.environ.get("FASTDSTN_SMALL_GEMM") != "0"
    assert cpp.SMALL_GEMM == wanted


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("I,L,J", SHAPES)
def test_dense_mm(I, L, J, dtype):
    gen = torch.Generator().manual_seed(I * 1000 + L * 10 + J)
    a = torch.randn(I, L, generator=gen, dtype=dtype)
    b = torch.randn(L, J, generator=gen, dtype=dtype)
    a_t = torch.randn(L, I, generator=gen, dtype=dtype).t()  # the weight-gradient form aᵀ·x
    a_sliced = torch.randn(I, 2 * L, generator=gen, dtype=dtype)[:, ::2]
    b_sliced = torch.randn(L, 3 * J, generator=gen, dtype=dtype)[:, ::3]  # rows not contiguous
    for left, right in ((a, b), (a_t, b), (a_sliced, b), (a, b_sliced),
                        (torch.randn(1, L, generator=gen, dtype=dtype).expand(I, L), b)):
        out = torch.ops.fastdstn._dense_mm(left, right)
        assert out.shape == (I, J) and out.is_contiguous()
        _close(out, left, right, left.double() @ right.double())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B,K,C", SHAPES)
def test_linear_products(B, K, C, dtype):
    gen = torch.Generator().manual_seed(B * 1000 + K * 10 + C)
    x = torch.randn(B, K, generator=gen, dtype=dtype)
    xt = torch.randn(K, B, generator=gen, dtype=dtype).t()
    Wg = torch.randn(C, K, generator=gen, dtype=dtype)
    Wr = torch.randn(C, 2 * K, generator=gen, dtype=dtype)[:, ::2]
    for tangent in (xt, None):
        y, u, yt = torch.ops.fastdstn._linear_products(x, tangent, Wg, Wr)
        _close(y, x, Wg.t(), x.double() @ Wg.double().t())
        _close(u, x, Wr.t(), x.double() @ Wr.double().t())
        if tangent is None:
            assert yt.numel() == 0
        else:
            _close(yt, xt, Wg.t(), xt.double() @ Wg.double().t())


def test_mismatched_operands_get_atens_error():
    """Operands the kernel cannot take together (dtype, device) go to ATen, which names the problem."""
    with pytest.raises(RuntimeError, match="dtype|type"):
        torch.ops.fastdstn._dense_mm(torch.randn(4, 5), torch.randn(5, 3, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="dtype|type"):
        torch.ops.fastdstn._linear_products(torch.randn(4, 5), None, torch.randn(3, 5, dtype=torch.float64),
                                            torch.randn(3, 5))


def test_empty_dimensions():
    for I, L, J in ((0, 5, 3), (4, 0, 3), (4, 5, 0)):
        a, b = torch.randn(I, L), torch.randn(L, J)
        assert torch.equal(torch.ops.fastdstn._dense_mm(a, b), torch.mm(a, b))


def test_gradients_through_the_linear_ops_in_float64():
    """The op backward uses the kernel's accumulating form (∂x = ∂y·W_g + a·W_r) and its weight-gradient
    form; gradcheck at a size the kernel takes."""
    gen = torch.Generator().manual_seed(0)
    args = [torch.randn(*s, generator=gen, dtype=torch.float64, requires_grad=True)
            for s in ((9, 21), (9, 3), (17, 21), (17,), (17, 21), (17,), (34, 3))]
    assert torch.autograd.gradcheck(lambda *a: compiled.stn_linear(*a), args)


def test_off_switch_gives_atens_products():
    """FASTDSTN_SMALL_GEMM=0 sends every product to ATen: the op then returns torch.mm's result bit for bit."""
    script = ("import torch, fastdstn.ops.cpp as cpp\n"
              "assert not cpp.SMALL_GEMM\n"
              "a, b = torch.randn(32, 256), torch.randn(256, 256)\n"
              "assert torch.equal(torch.ops.fastdstn._dense_mm(a, b), torch.mm(a, b))\n"
              "y, u, yt = torch.ops.fastdstn._linear_products(a, a, b, b)\n"
              "assert torch.equal(y, torch.mm(a, b.t())) and torch.equal(yt, y)\n")
    env = dict(os.environ, FASTDSTN_SMALL_GEMM="0")
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=120)
