"""Every op takes float16 and bfloat16 CPU tensors through the public API, under "auto" and with "cpp" asked for:
the compiled CPU loops compute float32 and float64 only, so these run the reference (PyTorch's half-precision CPU
kernels), and the result is the reference's, in the input dtype."""
import warnings

import pytest
import torch

import fastdstn.ops as ops
from fastdstn.ops import reference as ref


def _cases(dtype):
    """op name -> its arguments (half-precision tensors where the op computes; ints and rates as the op wants)."""
    g = torch.Generator().manual_seed(0)

    def t(*shape):
        return (torch.randn(*shape, generator=g) * 0.5).to(dtype)
    tokens = torch.randint(0, 7, (4,), generator=g)
    rate = torch.full((4,), 0.25, dtype=dtype)
    return {
        "stn_linear": (t(4, 5), t(4, 2), t(3, 5), t(3), t(3, 5), t(3), t(6, 2)),
        "stn_linear_dual": (t(4, 5), t(4, 5), t(4, 2), t(3, 5), t(3), t(3, 5), t(3), t(6, 2)),
        "stn_conv2d": (t(4, 2, 5, 5), t(4, 2), t(3, 2, 3, 3), t(3), t(3, 2, 3, 3), t(3), t(6, 2), 1, 1),
        "stn_conv2d_dual": (t(4, 2, 5, 5), t(4, 2, 5, 5), t(4, 2), t(3, 2, 3, 3), t(3), t(3, 2, 3, 3), t(3),
                            t(6, 2), 1, 1),
        "stn_embedding": (tokens, t(4, 2), t(7, 5), t(7, 5), t(5, 2)),
        "stn_embedding_dual": (tokens, t(4, 2), t(7, 5), t(7, 5), t(5, 2)),
        "lstm_cell_dual": (t(4, 8), t(4, 8), t(4, 2), t(4, 2)),
        "dropout_dual": (t(4, 3, 5), t(4, 3, 5), rate, 11, 0, (2,)),
        "attention_dual": (t(4, 2, 6, 8), t(4, 2, 6, 8), t(4, 2, 6, 8), t(4, 2, 6, 8), None, t(4, 2, 6, 8)),
        "penalty_row_sums": (t(3, 2, 3, 3), t(3, 2, 3, 3)),
        "penalty_row_combination": (t(3).float(), t(3, 2, 3, 3), t(3).float(), t(3, 2, 3, 3)),
        "max_pool2d_dual": (t(2, 3, 7, 6), t(2, 3, 7, 6), [3, 3], [2, 2], [1, 1], [1, 1], True),
        "max_pool2d_dual_backward": (t(2, 3, 4, 3), torch.randint(0, 42, (2, 3, 4, 3), generator=g), (7, 6)),
    }


def _listed(result):
    return [o for o in (result if isinstance(result, tuple) else (result,)) if o is not None]


@pytest.mark.parametrize("backend", ["auto", "cpp"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", list(_cases(torch.float32)))
def test_every_op_computes_half_precision_on_cpu(name, dtype, backend):
    args = _cases(dtype)[name]
    reference = (lambda *a: ops.attention.reference.attention_dual(*a, seed=0)) if name == "attention_dual" \
        else getattr(ref, name)
    expected = _listed(reference(*args))
    with ops.use_backend(backend), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)     # "cpp" asked for: one warning, tested in test_cpp_ops
        kwargs = {"seed": 0} if name == "attention_dual" else {}
        actual = _listed(getattr(ops, name)(*args, **kwargs))
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.dtype == e.dtype == (dtype if a.is_floating_point() else a.dtype)
        assert torch.equal(a, e), name
