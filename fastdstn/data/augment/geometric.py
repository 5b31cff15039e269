"""Flips and affine warps per example: torchvision's RandomHorizontalFlip and RandomAffine, batched."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import torch

from .arguments import Magnitude, _check_generator, _check_images, _check_interpolation, _check_ranges, _magnitude
from .buffers import _FRESH, _Fresh
from .host import _host, _keep_inactive, _uniform

Tensor = torch.Tensor


def _draw_flip(p: np.ndarray, generator, device: torch.device) -> np.ndarray:
    """(B,) bool: flip example i. u ∈ [0, 1): p = 0 never flips, p = 1 always does."""
    return _uniform(p.shape, generator, device) < p


def _flip_rows(images: Tensor, flip: np.ndarray, inplace: bool = False) -> Tensor:
    """Flip left-right the examples where flip (B,) is True, bit-exactly. Gather/flip/scatter of the flipped
    rows only: 0.18 vs 0.33 ms for a broadcast where (128×3×32×32)."""
    idx = torch.from_numpy(np.flatnonzero(flip)).to(images.device)
    out = images if inplace else images.clone()
    return out.index_copy_(0, idx, images.index_select(0, idx).flip(-1))


def hflip(images: Tensor, p: Magnitude, *, generator: Optional[torch.Generator] = None) -> Tensor:
    """Flip example i left-right with probability p_i."""
    images, generator = _check_images(images), _check_generator(generator)
    p = _check_ranges({"p": _magnitude("p", p, images)})["p"]
    return _flip_rows(images.detach(), _draw_flip(p, generator, images.device))


_MODES = {"bilinear": 0, "nearest": 1}  # aten::grid_sampler_2d's interpolation codes


def _theta(params: np.ndarray, h: int, w: int, flip: Optional[np.ndarray] = None) -> np.ndarray:
    """affine_grid's (B, 2, 3) float64 matrices for torchvision's affine (inverse matrix about the image
    centre, x-shear) from params (5, B) = angle (degrees), translate x, y (pixels), scale, shear (degrees).
    With flip (B,) bool, example i is flipped left-right first: one resampling instead of a flip pass."""
    # float64 keeps the matrices as exact as torchvision's Python-float arithmetic.
    angle, tx, ty, s, shear = params.astype(np.float64)
    rot, sx = np.deg2rad(angle), np.deg2rad(shear)
    cos, sin, tan = np.cos(rot), np.sin(rot), np.tan(sx)
    # R(rot)·SHx(sx) with torchvision's conventions (sy = 0), inverted and divided by the scale: rows
    # (m0, m1), (m3, m4); then the translation column m2 = −(m0·tx + m1·ty), m5 = −(m3·tx + m4·ty).
    m0, m1, m3, m4 = (cos - sin * tan) / s, (cos * tan + sin) / s, -sin / s, cos / s
    m2, m5 = -(m0 * tx + m1 * ty), -(m3 * tx + m4 * ty)
    # Pixel-centred coordinates → affine_grid's normalized [-1, 1] (align_corners=False): x_n = x_c / (W/2).
    theta = np.stack([np.stack([m0, m1 * h / w, 2 * m2 / w], -1), np.stack([m3 * w / h, m4, 2 * m5 / h], -1)], 1)
    if flip is not None:
        # flip-then-warp samples the image at F·θ·p with F = diag(−1, 1): pixel centres are symmetric about
        # 0 in normalized coordinates, so negating θ's x row is the flip, exactly.
        theta[flip, 0] *= -1
    return theta


_CENTRES: Dict[Tuple[int, torch.device, torch.dtype], Tensor] = {}


def _pixel_centres(n: int, like: Tensor) -> Tensor:
    """The n pixel centres in normalized coordinates (align_corners=False), cached."""
    key = (n, like.device, like.dtype)
    if key not in _CENTRES:
        _CENTRES[key] = torch.linspace(-1 + 1 / n, 1 - 1 / n, n, device=like.device, dtype=like.dtype)
    return _CENTRES[key]


def _affine_grid(theta: Tensor, h: int, w: int, out: Optional[Tensor] = None) -> Tensor:
    """F.affine_grid(theta, (B, ·, h, w), align_corners=False), computed separably. affine_grid multiplies a
    (B, H·W, 3) base grid by θᵀ in a bmm with inner size 3 (1.15 ms for B = 128, 32×32, one thread). Here
    grid[b, y, (x, i)] = (θ_i0·x + θ_i2) + y·θ_i1: a (B, 1, W·2) row term plus a column of y times a
    (B, 1, W·2) slope, one addcmul whose innermost loop runs over W·2 contiguous values (0.09 ms; writing the
    (x, y) pairs as a last dimension of size 2 took 0.20–0.26 ms). Equal to affine_grid to float round-off
    (tested)."""
    b = theta.shape[0]
    xs, ys = _pixel_centres(w, theta), _pixel_centres(h, theta)
    th = theta.transpose(1, 2)  # (B, 3, 2): the coefficients of x, y and 1 for (source x, source y)
    lead = torch.addcmul(th[:, None, 2], xs.view(1, w, 1), th[:, None, 0]).reshape(b, 1, 2 * w)
    slope = th[:, 1:2].expand(b, w, 2).reshape(b, 1, 2 * w)
    if out is None:
        out = torch.empty(b, h, w, 2, device=theta.device, dtype=theta.dtype)
    torch.addcmul(lead, ys.view(1, h, 1), slope, out=out.view(b, h, 2 * w))
    return out


def _warp(images: Tensor, theta: np.ndarray, interpolation: str, scratch: _Fresh = _FRESH) -> Tensor:
    """grid_sample of every example with its own matrix; pixels from outside the image are 0. (The out=
    overload of grid_sampler_2d computes into a temporary and copies, so the result is its own new tensor.)"""
    b, c, h, w = images.shape
    theta = torch.from_numpy(theta).to(device=images.device, dtype=images.dtype)
    grid = _affine_grid(theta, h, w, out=scratch.get("grid", (b, h, w, 2), images.dtype, images.device))
    return torch.grid_sampler_2d(images, grid, _MODES[interpolation], 0, False)


def warp_affine(images: Tensor, angle: Magnitude, translate: Optional[Tensor], scale: Magnitude, shear: Magnitude,
                *, interpolation: str = "bilinear") -> Tensor:
    """Deterministic per-example affine, equal to torchvision.transforms.v2.functional.affine(image_i,
    angle_i, translate_i, scale_i, [shear_i, 0]) for every i: angle and shear in degrees, translate (B, 2)
    pixels (x, y), scale (B,) (> 0). Pixels from outside the image are 0."""
    images = _check_images(images)
    _check_interpolation(interpolation)
    angle = _magnitude("angle", angle, images)
    shear = _magnitude("shear", shear, images)
    scale = _magnitude("scale", 1.0 if scale is None else scale, images)
    if translate is None:
        translate = torch.zeros(images.shape[0], 2, device=images.device)
    if not isinstance(translate, Tensor) or translate.shape != (images.shape[0], 2):
        raise ValueError(f"translate: expected a tensor of shape ({images.shape[0]}, 2) in pixels")
    translate = translate.detach().to(images.device, torch.float32)
    params = _host(torch.stack([angle, translate[:, 0], translate[:, 1], scale, shear]))
    if (params[3] <= 0).any():
        raise ValueError("scale: values must be > 0")
    _, _, h, w = images.shape
    return _warp(images.detach(), _theta(params, h, w), interpolation)


def _draw_affine(degrees: np.ndarray, translate: np.ndarray, scale: np.ndarray, shear: np.ndarray, generator,
                 h: int, w: int, device: torch.device) -> Tuple[np.ndarray, np.ndarray]:
    """(params (5, B) for _theta, active (B,) bool: some magnitude of example i is non-zero)."""
    active = (np.stack([degrees, translate, scale, shear]) > 0).any(axis=0)
    u = _uniform((5, degrees.shape[0]), generator, device) * 2 - 1  # U[-1, 1): angle, tx, ty, scale, shear
    params = np.stack([degrees, translate * w, translate * h, scale, shear]) * u
    params[1:3] = np.round(params[1:3])  # RandomAffine rounds the translation to whole pixels
    params[3] += 1
    return params, active


def affine(images: Tensor, degrees: Magnitude = None, translate: Magnitude = None, scale: Magnitude = None,
           shear: Magnitude = None, *, generator: Optional[torch.Generator] = None,
           interpolation: str = "bilinear") -> Tensor:
    """RandomAffine per example: rotation U(−degrees_i, degrees_i), translation U(−t_i, t_i)·(W, H) rounded to
    pixels, scale U(1 − s_i, 1 + s_i), x-shear U(−shear_i, shear_i) degrees. Uncovered pixels become 0."""
    images, generator = _check_images(images), _check_generator(generator)
    _check_interpolation(interpolation)
    mags = _check_ranges({n: _magnitude(n, v, images) for n, v in
                          (("degrees", degrees), ("translate", translate), ("scale", scale), ("shear", shear))})
    _, _, h, w = images.shape
    params, active = _draw_affine(mags["degrees"], mags["translate"], mags["scale"], mags["shear"], generator,
                                  h, w, images.device)
    images = images.detach()
    return _keep_inactive(_warp(images, _theta(params, h, w), interpolation), images, active)
