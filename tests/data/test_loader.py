"""fastdstn/data/loader.py: batch order is a function of (seed, epoch) alone; positions resume exactly."""
import pytest
import torch

from fastdstn.data import BatchStream, SequenceLoader, TensorLoader


def _loader(n=23, batch_size=5, **kw):
    x = torch.arange(n, dtype=torch.float32).view(n, 1) * 10
    y = torch.arange(n)
    return TensorLoader(x, y, batch_size, **kw)


def _ids(batches):
    return [y.tolist() for _, y in batches]


def test_len_and_every_example_once_per_epoch():
    loader = _loader(shuffle=True, seed=3)
    assert len(loader) == 5 and len(_loader(drop_last=True)) == 4
    seen = sum(_ids(loader.batches(0)), [])
    assert sorted(seen) == list(range(23))
    assert [len(b) for b in _ids(loader.batches(0))] == [5, 5, 5, 5, 3]
    for x, y in loader.batches(1):
        assert torch.equal(x[:, 0], y.float() * 10)  # inputs and targets stay paired


def test_order_depends_only_on_seed_and_epoch():
    a, b = _loader(shuffle=True, seed=3), _loader(shuffle=True, seed=3)
    list(a.batches(0))  # drawing batches first must not change a later epoch's order
    assert _ids(a.batches(2)) == _ids(b.batches(2))
    assert _ids(a.batches(0)) != _ids(a.batches(1))
    assert _ids(a.batches(0)) != _ids(_loader(shuffle=True, seed=4).batches(0))
    assert _ids(_loader().batches(5)) == _ids(_loader().batches(0))  # no shuffle: fixed order
    assert sum(_ids(_loader().batches(0)), []) == list(range(23))


def test_start_resumes_mid_epoch():
    loader = _loader(shuffle=True, seed=1)
    full = _ids(loader.batches(4))
    assert _ids(loader.batches(4, start=2)) == full[2:]
    assert _ids(loader.batches(4, start=len(loader))) == []


def test_iter_advances_the_epoch():
    loader = _loader(shuffle=True, seed=1)
    first, second = _ids(loader), _ids(loader)
    assert first == _ids(loader.batches(0)) and second == _ids(loader.batches(1))
    loader.set_epoch(0)
    assert _ids(loader) == first


def test_stream_crosses_epochs_and_resumes():
    loader = _loader(shuffle=True, seed=2)
    stream = loader.stream()
    got = [next(stream)[1].tolist() for _ in range(7)]
    assert got == (_ids(loader.batches(0)) + _ids(loader.batches(1)))[:7]
    assert stream.position == (1, 2)
    state = stream.state_dict()
    tail = [next(stream)[1].tolist() for _ in range(6)]
    resumed = BatchStream(loader)
    resumed.load_state_dict(state)
    assert [next(resumed)[1].tolist() for _ in range(6)] == tail


def test_transform_and_device_kept():
    loader = _loader(transform=lambda x: x.double())
    x, y = next(iter(loader))
    assert x.dtype == torch.float64 and y.dtype == torch.long and x.device == loader.device
    moved = loader.to("cpu")
    assert _ids(moved.batches(0)) == _ids(loader.batches(0))


@pytest.mark.parametrize("kwargs, exc, word", [
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"batch_size": 2.5}, TypeError, "batch_size"),
    ({"seed": -1}, ValueError, "seed"),
])
def test_bad_arguments(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        _loader(**kwargs)


def test_bad_inputs_and_positions():
    with pytest.raises(TypeError, match="inputs"):
        TensorLoader([1, 2], torch.arange(2), 1)
    with pytest.raises(ValueError, match="lengths differ"):
        TensorLoader(torch.zeros(3, 1), torch.arange(2), 1)
    loader = _loader()
    with pytest.raises(ValueError, match="start"):
        list(loader.batches(0, start=99))
    with pytest.raises(ValueError, match="epoch"):
        loader.batches(-1)
    with pytest.raises(ValueError, match="missing"):
        loader.stream().load_state_dict({"epoch": 0})


def test_sequence_loader_bptt_windows():
    tokens = torch.arange(103)
    loader = SequenceLoader(tokens, batch_size=4, bptt=7)
    # 103 // 4 = 25 steps per column; column j holds tokens 25j .. 25j+24.
    assert loader.data.shape == (25, 4) and loader.data[0].tolist() == [0, 25, 50, 75]
    batches = list(loader.batches(0))
    assert len(batches) == len(loader) == 4  # 24 target steps in windows of 7, 7, 7, 3
    assert [x.shape[0] for x, _ in batches] == [7, 7, 7, 3]
    for x, y in batches:
        assert x.shape == y.shape and x.shape[1] == 4 and torch.equal(y, x + 1)
    assert torch.cat([x for x, _ in batches]).t().reshape(-1).tolist() == [
        t for j in range(4) for t in range(25 * j, 25 * j + 24)]
    assert loader.num_tokens == 24 * 4
    assert [x.tolist() for x, _ in loader.batches(3, start=1)] == [x.tolist() for x, _ in batches[1:]]
    stream = loader.stream(0, 3)
    next(stream)
    assert stream.position == (0, 4) and torch.equal(next(stream)[0], batches[0][0])


def test_sequence_loader_bad_arguments():
    with pytest.raises(TypeError, match="tokens"):
        SequenceLoader(torch.arange(10.0), 2, 3)
    with pytest.raises(ValueError, match="bptt"):
        SequenceLoader(torch.arange(10), 2, 0)
    with pytest.raises(ValueError, match="too few"):
        SequenceLoader(torch.arange(3), 2, 3)


# ---------------------------------------------------------------------------------------------- shards
@pytest.mark.parametrize("n, world", [(10, 3), (12, 4), (7, 2)])
def test_padded_shards_deal_the_epoch_order_like_distributed_sampler(n, world):
    loader = TensorLoader(torch.arange(n).float(), torch.arange(n), 2, shuffle=True, seed=5)
    order = loader.order(3)
    shards = [loader.shard(r, world, pad=True) for r in range(world)]
    per_rank = -(-n // world)
    padded = torch.cat([order, order[:per_rank * world - n]])
    for r, part in enumerate(shards):
        assert torch.equal(part.order(3), padded[r::world])
        assert len(part) == -(-per_rank // 2)       # the same number of batches on every rank
    assert set(torch.cat([p.order(3) for p in shards]).tolist()) == set(range(n))


def test_unpadded_shards_partition_the_examples_exactly():
    loader = TensorLoader(torch.arange(9).float(), torch.arange(9), 4)
    seen = [y for r in range(2) for _, ys in loader.shard(r, 2, pad=False).batches(0) for y in ys.tolist()]
    assert sorted(seen) == list(range(9))


def test_shard_arguments_are_checked():
    loader = TensorLoader(torch.zeros(4), torch.zeros(4), 2)
    with pytest.raises(ValueError, match="rank: expected < world_size=2, received 2"):
        loader.shard(2, 2, pad=True)
    with pytest.raises(ValueError, match="already a shard"):
        loader.shard(0, 2, pad=True).shard(0, 2, pad=True)
    with pytest.raises(ValueError, match="4 examples cannot be dealt to 5 processes"):
        loader.shard(0, 5, pad=False)


def test_sequence_shards_are_contiguous_stretches_with_equal_batches():
    loader = SequenceLoader(torch.arange(42), 2, 3)      # 21 steps per column
    parts = [loader.shard(r, 2) for r in range(2)]
    assert [len(p) for p in parts] == [4, 4]              # 10 target rows each, bptt 3
    targets = [t for p in parts for _, t in p.batches(0)]
    rows = torch.cat(targets)[:, 0].tolist()
    assert rows == list(range(1, 21))                     # every target row of the stream, once
