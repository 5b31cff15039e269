"""Argument handling of the augmentation functions: image checks, magnitudes as (B,) tensors, their valid ranges."""
from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Tuple, Union

import numpy as np
import torch

from .host import _host

Tensor = torch.Tensor
Magnitude = Union[Tensor, float, int, None]

# The augmentation parameters an Augmenter spec may name, by operation, and all of them in the order they are
# applied.
AFFINE_PARAMS = ("degrees", "translate", "scale", "shear")
COLOR_PARAMS = ("brightness", "contrast", "saturation", "hue")
CUTOUT_PARAMS = ("cutout_holes", "cutout_length")
AUGMENT_PARAMS = ("hflip", *AFFINE_PARAMS, *COLOR_PARAMS, *CUTOUT_PARAMS)
# Valid magnitude range of each parameter: [low, high] (high exclusive where marked False).
_RANGES: Dict[str, Tuple[float, float, bool]] = {
    "p": (0.0, 1.0, True), "hflip": (0.0, 1.0, True), "degrees": (0.0, math.inf, True),
    "translate": (0.0, 1.0, True), "scale": (0.0, 1.0, False), "shear": (0.0, 90.0, False),
    "brightness": (0.0, math.inf, True), "contrast": (0.0, math.inf, True), "saturation": (0.0, math.inf, True),
    "hue": (0.0, 0.5, True), "holes": (0.0, math.inf, True), "length": (0.0, math.inf, True),
    "cutout_holes": (0.0, math.inf, True), "cutout_length": (0.0, math.inf, True),
}
_INTERPOLATIONS = ("bilinear", "nearest")


def _check_images(images) -> Tensor:
    if not isinstance(images, Tensor):
        raise TypeError(f"images: expected a torch.Tensor, received {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"images: expected shape (B, C, H, W), received {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images: expected a floating-point tensor (pixels in [0, 1]), received {images.dtype}")
    return images


def _magnitude(name: str, value: Magnitude, images: Tensor) -> Tensor:
    """A (B,) float32 tensor on the images' device; None means 0, a scalar applies to every example."""
    batch = images.shape[0]
    if isinstance(value, Tensor) and value.shape == (batch,) and value.dtype == torch.float32 \
            and value.device == images.device:
        return value.detach()  # the common case, without the checks and conversions below (≈5 µs each)
    if value is None:
        return torch.zeros(batch, device=images.device)
    if isinstance(value, bool) or not isinstance(value, (Tensor, int, float)):
        raise TypeError(f"{name}: expected a tensor of shape ({batch},) or a number, received {type(value).__name__}")
    value = torch.as_tensor(value)
    if value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"{name}: expected real values, received {value.dtype}")
    if value.dim() == 0:
        value = value.expand(batch)
    if value.shape != (batch,):
        raise ValueError(f"{name}: expected shape ({batch},) (one value per example), received {tuple(value.shape)}")
    return value.detach().to(device=images.device, dtype=torch.float32)


def _describe_range(name: str) -> str:
    lo, hi, closed = _RANGES[name]
    return f"[{lo:g}, {hi:g}{']' if closed else ')'}"


_BOUNDS: Dict[Tuple[str, ...], Tuple[np.ndarray, np.ndarray]] = {}


def _bounds(names: Tuple[str, ...]) -> Tuple[np.ndarray, np.ndarray]:
    """(lo, hi) columns (P, 1) such that a valid float32 magnitude lies in the closed range [lo, hi]: an open
    upper end becomes the next float32 below it, an infinite one the largest float32 (so that NaN and ±inf
    fail a comparison). Cached per parameter list."""
    if names not in _BOUNDS:
        lo, hi, closed = (np.array(v) for v in zip(*(_RANGES[n] for n in names)))
        hi = np.where(closed, hi, np.nextafter(hi.astype(np.float32), np.float32(-np.inf)))
        hi = np.minimum(hi, np.finfo(np.float32).max).astype(np.float32)
        _BOUNDS[names] = (lo.astype(np.float32)[:, None], hi[:, None])
    return _BOUNDS[names]


def _check_ranges(magnitudes: Mapping[str, Tensor], labels: Optional[Mapping[str, str]] = None
                  ) -> Dict[str, np.ndarray]:
    """The magnitudes on the host, checked against their ranges: one read of all of them (one host sync),
    the first offender named by its label (e.g. "hue (values['h'])") when one is given."""
    if not magnitudes:
        return {}
    names = tuple(magnitudes)
    m = _host(torch.stack([magnitudes[n] for n in names]))  # (P, B)
    lo, hi = _bounds(names)
    bad = ~((m >= lo) & (m <= hi)).all(axis=1)
    for n, row, flag in zip(names, m, bad):
        if flag:
            label = (labels or {}).get(n, n)
            raise ValueError(f"{label}: values must lie in {_describe_range(n)}, received "
                             f"min {float(row.min()):g}, max {float(row.max()):g}")
    return dict(zip(names, m))


def _check_generator(generator) -> Optional[torch.Generator]:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, received {type(generator).__name__}")
    return generator


def _check_interpolation(interpolation: str) -> str:
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"interpolation: expected one of {', '.join(_INTERPOLATIONS)}, received {interpolation!r}")
    return interpolation
