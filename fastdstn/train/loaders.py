"""From a [data] config section to a fastdstn.data.DataBundle, plus what the trainer adds on top:
seeded subsets (train_size / test_size, to size quick runs) and tiny synthetic sets for tests.

The loaders themselves are fastdstn.data's; this adapter only builds new TensorLoaders around them.
"""
from __future__ import annotations

import dataclasses
import difflib
import os

import torch

from .. import data as fdata
from ..config import ConfigError, DataConfig
from ..data.loader import SequenceLoader, TensorLoader, epoch_generator

# A salt of our own, so that subsets never reuse the data module's split permutations.
_SALT_SUBSET = 41
SYNTHETIC = ("synthetic", "synthetic-images", "synthetic-regression", "synthetic-tokens")


def subset(loader: TensorLoader, size: int, seed: int) -> TensorLoader:
    """The same loader over a seeded random subset of `size` examples (kept in their stored order)."""
    n = loader.num_examples
    if not 0 < size <= n:
        raise ValueError(f"subset: expected between 1 and {n} examples, received {size}")
    if size == n:
        return loader
    keep = torch.randperm(n, generator=epoch_generator(seed, _SALT_SUBSET, 0))[:size].sort().values
    keep = keep.to(loader.device)
    return TensorLoader(loader.inputs.index_select(0, keep), loader.targets.index_select(0, keep), loader.batch_size,
                        shuffle=loader.shuffle, seed=loader.seed, salt=loader.salt, drop_last=loader.drop_last,
                        transform=loader.transform)


def _synthetic(cfg: DataConfig, seed: int, device: torch.device) -> fdata.DataBundle:
    """Learnable toy data of a few hundred examples: class means + noise (vectors or 1×F×F images),
    a noisy linear target (regression), or a repeating token pattern (language)."""
    g = torch.Generator().manual_seed(1000 + seed)
    n_train, n_test = cfg.synthetic_size
    n_valid = int(cfg.valid_size) if cfg.valid_size and cfg.valid_size >= 1 else max(1, n_train // 4)
    total = n_train + n_valid + n_test
    f, k = cfg.features, cfg.classes
    if cfg.name == "synthetic-tokens":
        vocab = max(k, 4)
        pattern = torch.randint(0, vocab, (17,), generator=g)
        noise = torch.randint(0, vocab, (total,), generator=g)
        tokens = torch.where(torch.rand(total, generator=g) < 0.8, pattern.repeat(total // 17 + 1)[:total], noise)
        parts = tokens.to(device).split([n_train, n_valid, n_test])
        loaders = [SequenceLoader(p, b, cfg.bptt) for p, b in
                   zip(parts, (cfg.batch_size, cfg.eval_batch_size, cfg.eval_batch_size))]
        return fdata.DataBundle(cfg.name, *loaders, (cfg.bptt,), None, "language", True,
                                f"SYNTHETIC tokens: vocabulary {vocab}", vocab_size=vocab)
    shape = (1, f, f) if cfg.name == "synthetic-images" else (f,)
    if cfg.name == "synthetic-regression":
        x = torch.randn(total, f, generator=g)
        y = (x @ torch.randn(f, 1, generator=g) + 0.3 * torch.randn(total, 1, generator=g))
        task, classes = "regression", None
    else:
        y = torch.randint(0, k, (total,), generator=g)
        means = torch.randn(k, *shape, generator=g)
        x = means[y] + 0.8 * torch.randn(total, *shape, generator=g)
        task, classes = "classification", k
    x, y = x.to(device), y.to(device)
    sizes = [n_train, n_valid, n_test]
    xs, ys = x.split(sizes), y.split(sizes)
    train = TensorLoader(xs[0], ys[0], cfg.batch_size, shuffle=True, seed=seed, salt=21)
    valid = TensorLoader(xs[1], ys[1], cfg.eval_batch_size, shuffle=True, seed=seed, salt=22)
    test = TensorLoader(xs[2], ys[2], cfg.eval_batch_size)
    return fdata.DataBundle(cfg.name, train, valid, test, shape, classes, task, True,
                            f"SYNTHETIC {task} data: {n_train} train / {n_valid} valid / {n_test} test, shape {shape}")


def load_data(cfg: DataConfig, seed: int, device: torch.device) -> fdata.DataBundle:
    """The bundle of a [data] section; a value the data module refuses is a ConfigError naming its key."""
    if cfg.root is not None and not cfg.download and not os.path.isdir(cfg.root):
        raise ConfigError(f"data.root: expected a directory holding the data files, received {cfg.root!r} (not a "
                          f"directory; set data.download=true to download into it)")
    if cfg.name == "mnist" and cfg.root is None and not cfg.offline_subset:
        raise ConfigError("data.root: this run needs the full MNIST (data.offline_subset=false): set data.root=DIR "
                          "holding torchvision's MNIST files (with data.download=true to fetch them), or use the "
                          "preset mnist-mlp-5k, the offline 5000-digit subset; received no root")
    bundle = _synthetic(cfg, seed, device) if cfg.name in SYNTHETIC else _load(cfg, seed, device)
    if cfg.train_size is not None:
        bundle.train = _subset_of(bundle.train, cfg.train_size, seed, "data.train_size")
    if cfg.test_size is not None:
        # Seed 0: the test subset does not move with the run's seed.
        bundle.test = _subset_of(bundle.test, cfg.test_size, 0, "data.test_size")
    return bundle


def _load(cfg: DataConfig, seed: int, device: torch.device) -> fdata.DataBundle:
    options = dict(batch_size=cfg.batch_size, eval_batch_size=cfg.eval_batch_size, seed=seed, device=device,
                   download=cfg.download, bptt=cfg.bptt, normalize=cfg.normalize)
    if cfg.valid_size is not None:
        options["valid_size"] = int(cfg.valid_size) if cfg.valid_size >= 1 else float(cfg.valid_size)
    if cfg.name in ("cifar10", "cifar-10"):
        options.update(synthetic=cfg.synthetic, synthetic_size=tuple(cfg.synthetic_size))
    try:
        return fdata.load(cfg.name, cfg.root, **options)
    except (TypeError, ValueError) as err:
        raise _as_config_error(err, cfg.name) from err


def _as_config_error(err: Exception, name: str) -> ConfigError:
    """fastdstn.data's messages start with the argument's name, which is the [data] key of the same name."""
    key = str(err).partition(":")[0]
    message = f"data.{err}" if key in {f.name for f in dataclasses.fields(DataConfig)} else f"data: {err}"
    if key == "name":
        near = difflib.get_close_matches(name.lower(), [*fdata.NAMES, *SYNTHETIC], n=1, cutoff=0.5)
        message += f"; did you mean {near[0]!r}?" if near else f" or {', '.join(SYNTHETIC)}"
    return ConfigError(message)


def _subset_of(loader, size: int, seed: int, key: str) -> TensorLoader:
    if not isinstance(loader, TensorLoader):
        raise ConfigError(f"{key}: subsets apply to example data sets, not to token streams")
    if size > loader.num_examples:
        raise ConfigError(f"{key}: expected at most the {loader.num_examples} examples available, received {size}")
    return subset(loader, size, seed)


def describe(bundle: fdata.DataBundle) -> str:
    text = str(bundle)
    sizes = [getattr(loader, "num_examples", None) for loader in (bundle.train, bundle.valid, bundle.test)]
    if all(s is not None for s in sizes):
        text += f" [used: {sizes[0]} train / {sizes[1]} valid / {sizes[2]} test]"
    return text

