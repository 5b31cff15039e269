"""The tuned augmentation hyperparameters of the CIFAR-10 experiments (docs/METHOD.md §6, §8)."""
from __future__ import annotations

from typing import Dict, List, Tuple, Union

from ..hyper import Hyper
from .base import cutout

# name, init, high: every magnitude lies in (0, high); 0 means "off". Flips start at the usual 0.5,
# the other magnitudes small.
JITTER_AND_AFFINE = (
    ("hflip", 0.5, 1.0),
    ("brightness", 0.05, 1.0), ("contrast", 0.05, 1.0), ("saturation", 0.05, 1.0), ("hue", 0.02, 0.5),
    ("degrees", 2.0, 45.0), ("translate", 0.02, 0.5), ("scale", 0.02, 0.5), ("shear", 2.0, 45.0),
)


def image_augmentation() -> Tuple[List[Hyper], Dict[str, Union[str, float]]]:
    """(hypers, augmenter parameter → hyper name) for flip probability, cutout, colour jitter and affine
    ranges: 11 hyperparameters."""
    hypers = cutout(length=4.0, holes=1.0, max_length=24.0, max_holes=5.0)
    hypers += [Hyper(name, init, 0.0, high) for name, init, high in JITTER_AND_AFFINE]
    return hypers, {h.name: h.name for h in hypers}
