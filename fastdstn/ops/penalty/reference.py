"""The penalty family's reference: ATen expressions (one temporary per product), any device and dtype."""
from __future__ import annotations

import torch

Tensor = torch.Tensor


def penalty_row_sums(g: Tensor, r: Tensor) -> Tensor:
    """(3, rows): ‖g_k‖², ⟨g_k, r_k⟩ and ‖r_k‖² for the rows k (dim 0) of g and r."""
    rows = (g.shape[0], g[0].numel() if g.shape[0] else 0)
    g2, r2 = g.reshape(rows), r.reshape(rows)
    return torch.stack([torch.linalg.vecdot(g2, g2), torch.linalg.vecdot(g2, r2), torch.linalg.vecdot(r2, r2)])


def penalty_row_combination(a: Tensor, g: Tensor, b: Tensor, r: Tensor) -> Tensor:
    """a_k·g_k + b_k·r_k for the rows k (dim 0) of g and r, in g's shape and dtype."""
    rows = (-1,) + (1,) * (g.dim() - 1)
    return torch.addcmul(g * a.to(g.dtype).view(rows), r, b.to(g.dtype).view(rows))
