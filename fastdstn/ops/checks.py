"""Argument checks shared by every backend: a bad input fails here, with a message naming the
argument, what was expected and what was received, before any kernel runs."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

Tensor = torch.Tensor


def describe(t: Tensor) -> str:
    return f"shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}"


def require_tensor(name: str, value, ndim: Optional[int] = None, floating: bool = True) -> Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, received {type(value).__name__}")
    if floating and not value.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, received {describe(value)}")
    if ndim is not None and value.dim() != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d tensor, received {describe(value)}")
    return value


def require_shape(name: str, value: Tensor, expected: Sequence[int], meaning: str = "") -> None:
    if tuple(value.shape) != tuple(expected):
        extra = f" ({meaning})" if meaning else ""
        raise ValueError(f"{name}: expected shape {tuple(expected)}{extra}, received {describe(value)}")


def require_same_kind(reference_name: str, reference: Tensor, **others: Optional[Tensor]) -> None:
    """Every tensor in `others` has the dtype and device of `reference`."""
    for name, value in others.items():
        if value is None:
            continue
        if value.dtype != reference.dtype:
            raise TypeError(f"{name}: expected dtype {reference.dtype} (the dtype of {reference_name}), "
                            f"received {describe(value)}")
        if value.device != reference.device:
            raise ValueError(f"{name}: expected device {reference.device} (the device of {reference_name}), "
                             f"received {describe(value)}")


def check_hyper_projection(V: Tensor, h_name: str, h: Tensor, out: int, has_bias: bool) -> None:
    rows = 2 * out if has_bias else out
    require_tensor("V", V, ndim=2)
    if V.shape[0] != rows:
        layout = "[s | t] rows: 2*out, since br is given" if has_bias else "s rows: out, since br is None"
        raise ValueError(f"V: expected {rows} rows ({layout}), received {describe(V)}")
    require_tensor(h_name, h, ndim=2)
    if h.shape[1] != V.shape[1]:
        raise ValueError(f"{h_name}: expected {V.shape[1]} hyperparameter columns (V has {V.shape[1]}), "
                         f"received {describe(h)}")


def check_rate(rate: Tensor, batch: int, name: str = "rate") -> None:
    require_tensor(name, rate, ndim=1)
    require_shape(name, rate, (batch,), "one drop probability per example")
    if bool(((rate >= 0) & (rate < 1)).all()):     # one host sync per call; NaN fails both comparisons
        return
    if not torch.isfinite(rate).all():
        raise ValueError(f"{name}: expected finite drop probabilities, received non-finite values")
    raise ValueError(f"{name}: expected drop probabilities in [0, 1), received values in "
                     f"[{rate.min().item():.4g}, {rate.max().item():.4g}]")


def refuse_double_backward(op: str) -> None:
    """Called by the backward of a compiled op whose backward has no derivative of its own: asked to build a graph
    (create_graph=True: a double backward, a Hessian-vector product) it would give missing or wrong second
    derivatives, so it refuses and names the way out."""
    if torch.is_grad_enabled():
        raise RuntimeError(f"double backward through {op} is not supported by the compiled backend; take "
                           f"higher-order gradients under fastdstn.ops.use_backend(\"reference\")")
