"""The accuracy rule (tests/accuracy.py) on another BLAS code path.

The rule's bound, γ_n·Σ|aᵢ||bᵢ|, holds for any summation order, so it cannot depend on which code path MKL takes
on a given CPU vendor (a limit relative to torch.mm's own error does: "2x torch.mm's error" failed on an Intel Xeon
where MKL's path happened to be more accurate). This checks it in practice: MKL_CBWR=COMPATIBLE forces
MKL onto its generic SSE code path, whose float32 products differ bit for bit from the default path here; the op
tests' float32 accuracy checks must pass there too."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRODUCT = ("import torch, hashlib\n"
           "g = torch.Generator().manual_seed(0)\n"
           "a, b = torch.randn(65, 300, generator=g), torch.randn(300, 257, generator=g)\n"
           "print(hashlib.sha1(torch.mm(a, b).numpy().tobytes()).hexdigest())\n")


def _product_bits(env):
    return subprocess.run([sys.executable, "-c", PRODUCT], env=env, capture_output=True, text=True, check=True,
                          timeout=120).stdout.strip()


@pytest.mark.slow
def test_float32_accuracy_checks_pass_on_mkls_generic_path():
    generic = dict(os.environ, MKL_CBWR="COMPATIBLE")
    if _product_bits(generic) == _product_bits(dict(os.environ)):
        pytest.skip("MKL_CBWR=COMPATIBLE takes the same code path as the default on this machine")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/ops/machine/test_small_gemm.py",
         "tests/ops/test_dense.py", "tests/ops/test_lstm_cell.py", "-k", "float32 or dense_mm or linear_products"],
        cwd=ROOT, env=generic, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
