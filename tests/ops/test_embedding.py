"""The embedding ops on the reference backend (the only one: a gather has nothing to fuse)."""
import pytest
import torch

import fastdstn.ops as ops


@pytest.mark.usefixtures("reference_backend")
def test_embedding_gradcheck():
    g = torch.Generator().manual_seed(0)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)  # noqa: E731
    tokens = torch.tensor([0, 3, 3, 1])
    assert torch.autograd.gradcheck(lambda *t: ops.stn_embedding(tokens, *t), (rnd(4, 2), rnd(5, 3), rnd(5, 3), rnd(3, 2)))
    assert torch.autograd.gradcheck(lambda *t: ops.stn_embedding_dual(tokens, *t), (rnd(4, 2), rnd(5, 3), rnd(5, 3), rnd(3, 2)))
