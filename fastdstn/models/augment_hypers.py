"""The tuned augmentation hyperparameters of the CIFAR-10 experiments (docs/METHOD.md §6, §8)."""
from __future__ import annotations

from typing import Dict, List, Tuple, Union

from ..hyper import Hyper
from .base import cutout

# name, init, high: every magnitude lies in (0, high); 0 means "off". The starts and ranges are those of the
# authors' CIFAR-10 scripts (docs/METHOD.md §8b).
JITTER_AND_AFFINE = (
    ("brightness", 0.05, 1.0), ("contrast", 0.05, 1.0), ("saturation", 0.05, 1.0), ("hue", 0.05, 0.5),
    ("degrees", 5.0, 45.0), ("translate", 0.05, 0.5), ("scale", 0.05, 0.5), ("shear", 5.0, 45.0),
)
# Horizontal flips are always on at p = 0.5 and not tuned, as in the authors' code.
HFLIP = 0.5


def image_augmentation() -> Tuple[List[Hyper], Dict[str, Union[str, float]]]:
    """(hypers, augmenter parameter → hyper name or fixed value) for cutout, colour jitter and affine ranges
    (10 hyperparameters) and the fixed horizontal flip."""
    hypers = cutout(length=4.0, holes=1.0, max_length=24.0, max_holes=5.0)
    hypers += [Hyper(name, init, 0.0, high) for name, init, high in JITTER_AND_AFFINE]
    augment: Dict[str, Union[str, float]] = {h.name: h.name for h in hypers}
    augment["hflip"] = HFLIP
    return hypers, augment
