"""The training step's augmentation: `Augmenter(spec)(images, values)` composes flip, affine, colour jitter and
cutout with one set of draws and as few passes over the batch as the draws allow."""
from __future__ import annotations

import threading
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .arguments import (AFFINE_PARAMS, AUGMENT_PARAMS, COLOR_PARAMS, _RANGES, _check_generator, _check_images,
                        _check_interpolation, _check_ranges, _describe_range, _magnitude)
from .buffers import _FRESH, _Fresh, _Kept, _constant
from .geometric import _draw_affine, _draw_flip, _flip_rows, _theta, _warp
from .host import _keep_inactive
from .occlusion import _cut, _draw_cutout
from .photometric import _ColorPlan, _draw_color

Tensor = torch.Tensor

_NORMALIZATIONS: Dict[Tuple[Tuple[float, ...], Tuple[float, ...], torch.device, torch.dtype], Tuple[Tensor, ...]] = {}


def _normalization(mean: Tuple[float, ...], std: Tuple[float, ...], device: torch.device,
                   dtype: torch.dtype) -> Tuple[Tensor, ...]:
    """(mean, std, 1/std, −mean/std) as cached (1, C, 1, 1) tensors: x·std + mean to pixel space and back."""
    key = (mean, std, device, dtype)
    if key not in _NORMALIZATIONS:
        m, s = _constant(mean, device, dtype), _constant(std, device, dtype)
        _NORMALIZATIONS[key] = (m, s, 1 / s, -m / s)
    return _NORMALIZATIONS[key]


class Augmenter:
    """The training step's augmentation: `augmenter(images, values) -> images`.

    spec maps augmentation parameters (`AUGMENT_PARAMS`) to a hyperparameter name (read per example from
    `values`) or to a number (fixed for every example), e.g.
        Augmenter({"cutout_holes": "holes", "cutout_length": "length", "hflip": 0.5})
    `cutout_holes` defaults to 1 when only `cutout_length` is given; other absent parameters are off.

    Order: flip, affine, colour jitter in pixel space ([0, 1]), then cutout. With `mean`/`std` (the data
    bundle's normalization) images arrive normalized: they are mapped to pixel space for the first three and
    back, and cutout fills with 0 in normalized space (the mean colour), as in DeVries & Taylor. Examples
    whose magnitudes are all zero come back bit-identical (the normalization round trip is not exact, so it is
    masked out). Discrete parameters (cutout holes, length) take floor() of the continuous values.

    The random numbers are those of `hflip`, `affine`, `color_jitter` and `cutout` called in turn with the same
    generator. The result equals theirs to float round-off, not bit for bit: an example that is flipped and
    warped is resampled once, with the flip folded into its affine matrix (one grid_sample instead of a flip
    pass and a resampling; the source coordinates then differ from flip-then-warp by round-off, ≈1e-7).
    Examples that are flipped but not warped are flipped exactly. No gradient flows to the images.

    On the CPU the augmenter keeps its scratch buffers (about 5 batch-sized tensors) between calls,
    one set per thread: only the result is newly allocated (see `buffers._Kept`).
    """

    def __init__(self, spec: Mapping[str, Union[str, float, int]], *, mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None, interpolation: str = "bilinear",
                 cutout_fill: float = 0.0) -> None:
        if not isinstance(spec, Mapping):
            raise TypeError(f"spec: expected a mapping of augmentation parameter → hyperparameter name or number, "
                            f"received {type(spec).__name__}")
        unknown = [k for k in spec if k not in AUGMENT_PARAMS]
        if unknown:
            raise ValueError(f"spec: unknown augmentation parameter {unknown[0]!r}; "
                             f"known: {', '.join(AUGMENT_PARAMS)}")
        for key, source in spec.items():
            if isinstance(source, bool) or not isinstance(source, (str, int, float)):
                raise TypeError(f"spec[{key!r}]: expected a hyperparameter name or a number, "
                                f"received {type(source).__name__}")
            if not isinstance(source, str):
                lo, hi, closed = _RANGES[key]
                if not (lo <= source and (source <= hi if closed else source < hi)):
                    raise ValueError(f"spec[{key!r}]: fixed value must lie in {_describe_range(key)}, "
                                     f"received {source}")
        self.spec: Dict[str, Union[str, float]] = dict(spec)
        if "cutout_length" in self.spec and "cutout_holes" not in self.spec:
            self.spec["cutout_holes"] = 1.0
        if (mean is None) != (std is None):
            raise ValueError("mean/std: pass both (the data's normalization) or neither")
        if std is not None and any(s <= 0 for s in std):
            raise ValueError(f"std: values must be > 0, received {tuple(std)}")
        self.mean = tuple(float(m) for m in mean) if mean is not None else None
        self.std = tuple(float(s) for s in std) if std is not None else None
        self.interpolation = _check_interpolation(interpolation)
        self.cutout_fill = float(cutout_fill)
        self._local = threading.local()

    def __getstate__(self) -> Dict[str, object]:
        state = dict(self.__dict__)
        del state["_local"]  # scratch buffers are per process and thread
        return state

    def __setstate__(self, state: Dict[str, object]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def _scratch(self, device: torch.device) -> _Fresh:
        # Only CPU memory is kept: CUDA's caching allocator already reuses freed blocks without page faults.
        if device.type != "cpu":
            return _FRESH
        if not hasattr(self._local, "kept"):
            self._local.kept = _Kept()
        return self._local.kept

    @property
    def hyperparameters(self) -> Tuple[str, ...]:
        """The hyperparameter names the augmenter reads from `values`."""
        return tuple(dict.fromkeys(v for v in self.spec.values() if isinstance(v, str)))

    def _magnitudes(self, images: Tensor, values: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        mags: Dict[str, Tensor] = {}
        for key in AUGMENT_PARAMS:
            if key not in self.spec:
                continue
            source = self.spec[key]
            if isinstance(source, str):
                if source not in values:
                    raise ValueError(f"values: no hyperparameter {source!r} (needed for {key}); "
                                     f"received {', '.join(values) or 'none'}")
                mags[key] = _magnitude(f"{key} (values[{source!r}])", values[source], images)
            else:
                mags[key] = _magnitude(key, source, images)
        return mags

    def __call__(self, images: Tensor, values: Mapping[str, Tensor],
                 generator: Optional[torch.Generator] = None) -> Tensor:
        images, generator = _check_images(images), _check_generator(generator)
        if not isinstance(values, Mapping):
            raise TypeError(f"values: expected a mapping of hyperparameter name → (B,) tensor, "
                            f"received {type(values).__name__}")
        if self.mean is not None and len(self.mean) != images.shape[1]:
            raise ValueError(f"images: {images.shape[1]} channels but mean/std have {len(self.mean)}")
        mags = _check_ranges(self._magnitudes(images, values),
                             {k: f"{k} (values[{v!r}])" for k, v in self.spec.items() if isinstance(v, str)})
        images = images.detach()
        if not mags or images.shape[0] == 0:
            return images
        b, c, h, w = images.shape
        device = images.device
        zero = np.zeros(b, dtype=np.float32)
        get = lambda k: mags.get(k, zero)  # noqa: E731 (absent parameter = magnitude 0)
        # Examples with some non-zero magnitude (at least one hole of side ≥ 1 for cutout).
        touched = (np.stack([get(k) for k in ("hflip", *AFFINE_PARAMS, *COLOR_PARAMS)] + [
            np.minimum(np.floor(get("cutout_holes")), np.floor(get("cutout_length")))]) > 0).any(axis=0)
        # Every random number first, in the order the public functions chained draw them.
        flip = _draw_flip(mags["hflip"], generator, device) if "hflip" in mags else None
        warp = None
        if any(k in mags for k in AFFINE_PARAMS):
            warp = _draw_affine(get("degrees"), get("translate"), get("scale"), get("shear"), generator, h, w, device)
        plan = None
        if any(k in mags for k in COLOR_PARAMS):
            f, order = _draw_color(get("brightness"), get("contrast"), get("saturation"), get("hue"), generator,
                                   device)
            plan = _ColorPlan(f, order, c, device)
        holes_drawn = None
        if "cutout_holes" in mags:
            holes_drawn = _draw_cutout(get("cutout_holes"), get("cutout_length"), generator, h, w, device)
        if warp is not None and not warp[1].any():
            warp = None
        if plan is not None and not plan.changes:
            plan = None
        pixel_ops = warp is not None or plan is not None  # flip and cutout commute with the normalization
        scratch = self._scratch(device)
        # Half-precision images are augmented in float32 (grid_sample and HSV round-off) and cast back.
        x = images.float() if images.dtype in (torch.float16, torch.bfloat16) else images
        shape, dtype = x.shape, x.dtype
        if self.mean is not None and pixel_ops:
            mean, std, inv_std, shift = _normalization(self.mean, self.std, device, dtype)
        # Intermediates live in kept buffers; the result is the resampled batch (grid_sample's own output, or
        # a flipped copy), written over by the last step, or else a new gather. The input is never written.
        if warp is not None:
            params, active = warp
            src = x
            if self.mean is not None:
                src = torch.mul(x, std, out=scratch.get("pixels", shape, dtype, device)).add_(mean)
            x = _warp(src, _theta(params, h, w, flip), self.interpolation, scratch)
            if not active.all():  # unwarped examples: the input, flipped exactly where drawn
                idx = np.flatnonzero(~active)
                rows = src.index_select(0, torch.from_numpy(idx).to(device))
                rows = rows if flip is None else _flip_rows(rows, flip[idx], inplace=True)
                x.index_copy_(0, torch.from_numpy(idx).to(device), rows)
        elif flip is not None and plan is None:
            x = _flip_rows(x, flip, inplace=x is not images)
        if plan is not None:
            # The colour passes run on contiguous slices of the examples in the plan's order: a gather into a
            # kept buffer and one back (0.04 ms each for 128×3×32×32).
            work = torch.index_select(x, 0, plan.perm, out=scratch.get("work", shape, dtype, device))
            if warp is None:  # x is still the input: map to pixel space and flip after the gather
                if self.mean is not None:
                    work.mul_(std).add_(mean)
                if flip is not None:
                    _flip_rows(work, flip[plan.perm_host], inplace=True)
            plan.apply(work, scratch)
            if self.mean is not None:
                work.mul_(inv_std).add_(shift)  # (x − mean)/std
            x = torch.index_select(work, 0, plan.inv, out=x if x is not images else None)
        elif self.mean is not None and pixel_ops:
            x.mul_(inv_std).add_(shift)
        if holes_drawn is not None:
            x = _cut(x, holes_drawn, self.cutout_fill, inplace=x is not images)
        return _keep_inactive(x.to(images.dtype), images, touched)

    def __repr__(self) -> str:
        items = ", ".join(f"{k}={v!r}" for k, v in self.spec.items())
        norm = f", mean={self.mean}, std={self.std}" if self.mean is not None else ""
        return f"Augmenter({items}{norm})"
