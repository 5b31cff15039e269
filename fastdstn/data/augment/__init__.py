"""Batched per-example augmentation (docs/METHOD.md §6): every example i has its own magnitude, all on the images'
device, with no Python loop over examples.

Each function takes images (B, C, H, W) (floating point) and magnitude tensors of shape (B,) (or a scalar for
the whole batch) and never modifies its input. A zero magnitude is exactly the identity for that example
(such examples are restored from the input, so resampling round-off cannot leak in). Randomness comes from
`generator` (drawn on the generator's device), so a seeded generator reproduces a batch bit for bit.
Magnitudes are detached, and no gradient flows to the images: the rates a regularizer consumes carry no
gradient (docs/METHOD.md §2), and augmentation is data preparation.

The per-example parameters (B or B×K numbers: factors, matrices, hole masks, the colour plan) are computed
on the host in NumPy from one read of the magnitudes and of each random draw (no copy for CPU tensors), then
moved to the images' device: a NumPy op on 128 numbers costs ≈1 µs against 3–8 µs for a torch op, and an
Augmenter call's checks, draws, plan and matrices take 0.49 ms this way against 0.78 ms as torch ops (medians,
interleaved, 128 examples).

Speed notes quote one CPU thread on 128×3×32×32 float32 (torch 2.14.1, whose CPU kernels run boolean ops,
`torch.where`, `masked_fill` and index gathers far slower than float arithmetic, which shaped the code);
`benchmarks/bench_augment.py` times the whole Augmenter against torchvision.

One module per job: `arguments` (checks and ranges), `host` (NumPy reads and draws), `buffers` (scratch and
constants kept between calls), `geometric` (flip, affine), `occlusion` (cutout), `photometric` (colour
jitter), `augmenter` (the composition the training step calls).

Semantics follow torchvision's RandomHorizontalFlip, RandomAffine, ColorJitter (per example: factors and the
random order of the four colour operations) and DeVries & Taylor's Cutout.

`Augmenter(spec)` composes them for the training step: `augmenter(images, values)` with the per-example
constrained hyperparameter values (docs/METHOD.md §2) that `HyperSpace.example_values` returns.
"""
from .arguments import AUGMENT_PARAMS
from .augmenter import Augmenter
from .geometric import affine, hflip, warp_affine
from .occlusion import cutout
from .photometric import adjust_color, color_jitter

__all__ = ["Augmenter", "AUGMENT_PARAMS", "hflip", "cutout", "affine", "warp_affine", "color_jitter", "adjust_color"]
