"""The embedding ops on every backend that implements them (op_cases.backends): only the reference does, as a
gather has nothing to fuse; the others are listed, skipped with that reason."""
import pytest
import torch

from op_cases import backends, tensors


@pytest.mark.parametrize("op", ["stn_embedding", "stn_embedding_dual"])
@pytest.mark.parametrize("backend", backends(op="stn_embedding"))
def test_embedding_gradcheck(backend, op):
    tokens = torch.tensor([0, 3, 3, 1], device=backend.device)
    args = tensors(dict(h=(4, 2), Eg=(5, 3), Er=(5, 3), V=(3, 2)), dtype=torch.float64, device=backend.device)
    assert torch.autograd.gradcheck(lambda *t: getattr(backend, op)(tokens, *t), args)
