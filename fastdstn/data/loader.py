"""In-memory batch loaders with an explicit data position (epoch, batch index).

The trainer checkpoints "where the data is" as two integers and resumes bit-exactly: the batch order of an
epoch is a pure function of (seed, epoch), never of how many batches were drawn before. Tensors may live on
the model's device; batches are then gathered on that device (no DataLoader workers, no host round trip).
"""
from __future__ import annotations

from typing import Callable, Dict, Iterator, Optional, Tuple

import numpy as np
import torch

Tensor = torch.Tensor
Batch = Tuple[Tensor, Tensor]


def epoch_generator(seed: int, salt: int, epoch: int) -> torch.Generator:
    """A CPU generator for one (seed, stream, epoch). SeedSequence mixes the three integers so that
    neighbouring seeds and epochs give unrelated streams (seed·K + epoch would collide)."""
    state = np.random.SeedSequence([int(seed), int(salt), int(epoch)]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, received {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, received {value}")
    return int(value)


class TensorLoader:
    """Batches of (inputs[i], targets[i]) from two tensors of equal length.

    * `batches(epoch, start=0)`: the batches of `epoch` from batch index `start` on. With `shuffle` the order
      is a permutation drawn from (seed, salt, epoch) on the CPU, so it is the same on every device.
    * `len(loader)`: batches per epoch (the last one is partial unless `drop_last`).
    * `iter(loader)`: the batches of `loader.epoch`, then `epoch` advances by one, so a plain
      `for x, y in loader` loop sees a new order each epoch. A trainer that checkpoints uses `batches`.
    * `stream(epoch, index)`: an endless `BatchStream` that crosses epoch boundaries (hyper steps cycling
      through validation batches independently of the training batches) and reports its position.

    `transform` maps a stored input batch to what the model sees (e.g. uint8 pixels → normalized floats),
    so large image sets stay 4x smaller in memory and are converted one batch at a time.

    Without shuffle and transform, batches are views of the stored tensors (no copy): treat them as
    read-only (fastdstn's augmentation never writes its input).
    """

    def __init__(
        self,
        inputs: Tensor,
        targets: Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        salt: int = 0,
        drop_last: bool = False,
        transform: Optional[Callable[[Tensor], Tensor]] = None,
    ) -> None:
        if not isinstance(inputs, Tensor):
            raise TypeError(f"inputs: expected a torch.Tensor, received {type(inputs).__name__}")
        if not isinstance(targets, Tensor):
            raise TypeError(f"targets: expected a torch.Tensor, received {type(targets).__name__}")
        if inputs.shape[0] != targets.shape[0]:
            raise ValueError(f"inputs and targets: lengths differ ({inputs.shape[0]} vs {targets.shape[0]})")
        if inputs.device != targets.device:
            raise ValueError(f"inputs and targets: devices differ ({inputs.device} vs {targets.device})")
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.seed = _check_int("seed", seed, 0)
        if inputs.shape[0] == 0 or (drop_last and inputs.shape[0] < self.batch_size):
            raise ValueError(f"inputs: {inputs.shape[0]} examples give no batch of batch_size={self.batch_size}")
        self.inputs, self.targets = inputs, targets
        self.shuffle, self.salt, self.drop_last, self.transform = bool(shuffle), int(salt), bool(drop_last), transform
        self.epoch = 0
        self.rank, self.world_size, self.pad = 0, 1, False

    def shard(self, rank: int, world_size: int, *, pad: bool) -> "TensorLoader":
        """This process's share of every epoch in a run of `world_size` processes, dealt as
        torch.utils.data.DistributedSampler deals: the epoch's order (the same on every rank), then every
        world_size-th example from `rank` on. pad: first wrap the order around to a multiple of world_size, so
        every rank gets as many batches as the others (training: DDP's collectives need the same number of steps
        on every rank); without it the shards partition the examples exactly (evaluation)."""
        world_size = _check_int("world_size", world_size, 1)
        rank = _check_int("rank", rank, 0)
        if rank >= world_size:
            raise ValueError(f"rank: expected < world_size={world_size}, received {rank}")
        if self.rank != 0 or self.world_size != 1:
            raise ValueError("shard: this loader is already a shard; shard the full loader")
        if self.num_examples < world_size:
            raise ValueError(f"shard: {self.num_examples} examples cannot be dealt to {world_size} processes")
        part = TensorLoader.__new__(TensorLoader)
        part.__dict__.update(self.__dict__)
        part.rank, part.world_size, part.pad = rank, world_size, bool(pad)
        if len(part) == 0:
            raise ValueError(f"shard: rank {rank} of {world_size} gets no batch of batch_size={self.batch_size}")
        return part

    @property
    def device(self) -> torch.device:
        return self.inputs.device

    @property
    def num_examples(self) -> int:
        """Examples stored (all ranks together)."""
        return int(self.inputs.shape[0])

    @property
    def examples_per_epoch(self) -> int:
        """Examples this loader yields per epoch (this rank's share when sharded)."""
        n, w = self.num_examples, self.world_size
        return -(-n // w) if self.pad else len(range(self.rank, n, w))

    def __len__(self) -> int:
        n, b = self.examples_per_epoch, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def order(self, epoch: int) -> Tensor:
        """The example order of `epoch` (a CPU int64 tensor); this rank's part of it when sharded."""
        epoch = _check_int("epoch", epoch, 0)
        if not self.shuffle:
            order = torch.arange(self.num_examples)
        else:
            order = torch.randperm(self.num_examples, generator=epoch_generator(self.seed, self.salt, epoch))
        if self.world_size == 1:
            return order
        if self.pad:
            order = order.repeat(-(-self.examples_per_epoch * self.world_size // self.num_examples))
            order = order[:self.examples_per_epoch * self.world_size]
        return order[self.rank::self.world_size]

    def batches(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        start = _check_int("start", start, 0)
        if start > len(self):
            raise ValueError(f"start: batch index {start} is past the end of an epoch of {len(self)} batches")
        order = self.order(epoch)
        return self._iterate(order, start)

    def _iterate(self, order: Tensor, start: int) -> Iterator[Batch]:
        # One host→device copy of the permutation per epoch; each batch is then an on-device gather.
        order = order.to(self.device, non_blocking=True) if self.shuffle or self.world_size > 1 else None
        b = self.batch_size
        for i in range(start, len(self)):
            if order is None:
                x, y = self.inputs[i * b:(i + 1) * b], self.targets[i * b:(i + 1) * b]
            else:
                idx = order[i * b:(i + 1) * b]
                x, y = self.inputs.index_select(0, idx), self.targets.index_select(0, idx)
            yield (self.transform(x) if self.transform is not None else x), y

    def set_epoch(self, epoch: int) -> None:
        self.epoch = _check_int("epoch", epoch, 0)

    def __iter__(self) -> Iterator[Batch]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        return self.batches(epoch)

    def stream(self, epoch: int = 0, index: int = 0) -> "BatchStream":
        return BatchStream(self, epoch, index)

    def to(self, device) -> "TensorLoader":
        """The same loader with its tensors on `device` (a new object; order and positions unchanged)."""
        moved = TensorLoader.__new__(TensorLoader)
        moved.__dict__.update(self.__dict__)
        moved.inputs, moved.targets = self.inputs.to(device), self.targets.to(device)
        return moved

    def __repr__(self) -> str:
        shard = f", rank {self.rank} of {self.world_size}" if self.world_size > 1 else ""
        return (f"TensorLoader({self.examples_per_epoch} examples{shard}, batch_size={self.batch_size}, "
                f"{len(self)} batches, shuffle={self.shuffle}, device={self.device})")


class BatchStream:
    """An endless iterator over a loader's batches, epoch after epoch, with a resumable position.

    `position` is (epoch, index) of the *next* batch; `state_dict()` / `load_state_dict()` carry it through a
    checkpoint, and a stream rebuilt at a position yields exactly the batches the original would have."""

    def __init__(self, loader, epoch: int = 0, index: int = 0) -> None:
        self.loader = loader
        self.epoch = _check_int("epoch", epoch, 0)
        self.index = _check_int("index", index, 0)
        if self.index > len(loader):
            raise ValueError(f"index: batch {self.index} is past the end of an epoch of {len(loader)} batches")
        self._it: Optional[Iterator[Batch]] = None

    @property
    def position(self) -> Tuple[int, int]:
        return self.epoch, self.index

    def __iter__(self) -> "BatchStream":
        return self

    def __next__(self) -> Batch:
        if self.index >= len(self.loader):
            self.epoch, self.index, self._it = self.epoch + 1, 0, None
        if self._it is None:
            self._it = self.loader.batches(self.epoch, self.index)
        batch = next(self._it)
        self.index += 1
        return batch

    def state_dict(self) -> Dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        missing = {"epoch", "index"} - set(state)
        if missing:
            raise ValueError(f"state: missing {', '.join(sorted(missing))}")
        self.__init__(self.loader, state["epoch"], state["index"])


class SequenceLoader:
    """Language-model batches: a token stream laid out as (steps, B) columns, cut into windows of `bptt`.

    Batch i is (data[i·bptt : i·bptt + L], data[i·bptt + 1 : i·bptt + 1 + L]) with L = min(bptt, rest),
    in order, the same every epoch (the hidden state is carried from one window to the next, so the order
    cannot be shuffled). Same position interface as `TensorLoader`: `batches(epoch, start)`, `len`, `stream`.
    Batches are read-only views of `data`.
    """

    def __init__(self, tokens: Tensor, batch_size: int, bptt: int) -> None:
        if not isinstance(tokens, Tensor) or tokens.dim() != 1 or tokens.dtype != torch.long:
            raise TypeError("tokens: expected a 1-d torch.long tensor of token ids")
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.bptt = _check_int("bptt", bptt, 1)
        steps = tokens.numel() // self.batch_size
        if steps < 2:
            raise ValueError(f"tokens: {tokens.numel()} tokens are too few for batch_size={self.batch_size}")
        # Trailing tokens that do not fill a column are dropped, as in the usual batchify.
        self.data = tokens[: steps * self.batch_size].view(self.batch_size, steps).t().contiguous()
        self.epoch = 0

    @property
    def device(self) -> torch.device:
        return self.data.device

    @property
    def num_tokens(self) -> int:
        """Target tokens per epoch (what a perplexity averages over)."""
        return (self.data.shape[0] - 1) * self.batch_size

    def __len__(self) -> int:
        return -(-(self.data.shape[0] - 1) // self.bptt)

    def batches(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        _check_int("epoch", epoch, 0)
        start = _check_int("start", start, 0)
        if start > len(self):
            raise ValueError(f"start: batch index {start} is past the end of an epoch of {len(self)} batches")
        return self._iterate(start)

    def _iterate(self, start: int) -> Iterator[Batch]:
        last = self.data.shape[0] - 1
        for i in range(start, len(self)):
            lo = i * self.bptt
            length = min(self.bptt, last - lo)
            yield self.data[lo:lo + length], self.data[lo + 1:lo + 1 + length]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = _check_int("epoch", epoch, 0)

    def __iter__(self) -> Iterator[Batch]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        return self.batches(epoch)

    def stream(self, epoch: int = 0, index: int = 0) -> BatchStream:
        return BatchStream(self, epoch, index)

    def shard(self, rank: int, world_size: int) -> "SequenceLoader":
        """This process's share in a run of `world_size` processes: the `rank`-th of world_size equal contiguous
        stretches of every column (plus the one row its last targets need), so the hidden state still flows
        through consecutive text, every rank has the same number of batches, and the shards' targets
        partition the stream's; up to world_size − 1 final rows are left out when the steps do not divide."""
        world_size = _check_int("world_size", world_size, 1)
        rank = _check_int("rank", rank, 0)
        if rank >= world_size:
            raise ValueError(f"rank: expected < world_size={world_size}, received {rank}")
        steps = (self.data.shape[0] - 1) // world_size
        if steps < 1:
            raise ValueError(f"shard: {self.data.shape[0]} steps per column cannot be dealt to {world_size} processes")
        part = SequenceLoader.__new__(SequenceLoader)
        part.__dict__.update(self.__dict__)
        part.data = self.data[rank * steps: (rank + 1) * steps + 1]
        return part

    def to(self, device) -> "SequenceLoader":
        moved = SequenceLoader.__new__(SequenceLoader)
        moved.__dict__.update(self.__dict__)
        moved.data = self.data.to(device)
        return moved

    def __repr__(self) -> str:
        return (f"SequenceLoader({self.num_tokens} target tokens, batch_size={self.batch_size}, bptt={self.bptt}, "
                f"{len(self)} batches, device={self.device})")
