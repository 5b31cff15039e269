"""Shapes and inputs shared by the op benchmarks: the SPEC's layer sizes."""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch

from fastdstn.ops import backends

# (B, in, out): a small layer, the MLP's hidden layer at batch 128, and a large batch.
LINEAR_SHAPES: List[Tuple[int, int, int]] = [(32, 256, 256), (128, 1024, 1024), (512, 784, 1200)]
# (B, C_in, C_out, size, kernel, padding): SimpleCNN's two convolutions and a VGG layer.
CONV_SHAPES: List[Tuple[int, int, int, int, int, int]] = [(128, 1, 16, 28, 5, 2), (128, 16, 32, 14, 5, 2),
                                                          (64, 64, 64, 32, 3, 1)]
HYPERS = 6


def cpu_backends() -> List[str]:
    """The backends that run CPU tensors in this build."""
    names = ["reference"]
    module = backends.load("cpp")
    if module is not None and backends.supports(module, "cpu"):
        names.append("cpp")
    return names


def linear_inputs(B: int, n_in: int, n_out: int, dtype=torch.float32) -> Dict[str, torch.Tensor]:
    """Inputs of the Δ-STN response sub-step: x, W_g, b_g frozen; ẋ, W_r, b_r, V with gradients."""
    g = torch.Generator().manual_seed(0)
    rnd = lambda *s, grad=False: torch.randn(*s, generator=g, dtype=dtype).requires_grad_(grad)  # noqa: E731
    return dict(x=rnd(B, n_in), xt=rnd(B, n_in, grad=True), eps=rnd(B, HYPERS), Wg=rnd(n_out, n_in) / n_in ** 0.5,
                bg=rnd(n_out), Wr=rnd(n_out, n_in, grad=True), br=rnd(n_out, grad=True), V=rnd(2 * n_out, HYPERS, grad=True))


def conv_inputs(B: int, c_in: int, c_out: int, size: int, kernel: int, dtype=torch.float32) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    rnd = lambda *s, grad=False: torch.randn(*s, generator=g, dtype=dtype).requires_grad_(grad)  # noqa: E731
    w = (c_out, c_in, kernel, kernel)
    return dict(x=rnd(B, c_in, size, size), xt=rnd(B, c_in, size, size, grad=True), eps=rnd(B, HYPERS), Wg=rnd(*w),
                bg=rnd(c_out), Wr=rnd(*w, grad=True), br=rnd(c_out, grad=True), V=rnd(2 * c_out, HYPERS, grad=True))
