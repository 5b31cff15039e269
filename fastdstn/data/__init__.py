"""Data: the data sets of docs/METHOD.md §8 in memory with resumable batch positions, and batched per-example
augmentation.

    bundle = fastdstn.data.load("fashion-mnist", batch_size=128, seed=0, device="cuda")
    augment = fastdstn.data.Augmenter({"cutout_holes": "holes", "cutout_length": "length"},
                                      mean=bundle.mean, std=bundle.std)
    for x, y in bundle.train.batches(epoch, start=0):           # position = (epoch, batch index)
        p = space.sample(x.shape[0])
        x_lam = augment(x, space.current_values(x.shape[0]))      # every example at λ
        x_eps = augment(x, space.example_values(p.perturbed))     # example i at λ + ε_i
    hyper_batches = bundle.valid.stream()                         # endless; .state_dict() for checkpoints

Randomness of the augmentation comes from the global RNG or an explicit `generator=` (checkpoint its state
for bit-exact resumes); batch order comes from (seed, epoch) alone.
"""
from .augment import (AUGMENT_PARAMS, Augmenter, adjust_color, affine, color_jitter, cutout, hflip,
                      warp_affine)
from .datasets import NAMES, DataBundle, load, read_idx, split_indices, synthetic_images, tokenize
from .loader import BatchStream, SequenceLoader, TensorLoader

__all__ = [
    "load", "DataBundle", "NAMES", "read_idx", "split_indices", "synthetic_images", "tokenize",
    "TensorLoader", "SequenceLoader", "BatchStream",
    "Augmenter", "AUGMENT_PARAMS", "hflip", "cutout", "affine", "warp_affine", "color_jitter", "adjust_color",
]
