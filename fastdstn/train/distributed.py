"""The process group a run belongs to: one process (the default) or one of several started by torchrun.

torchrun (and SLURM through it) describes the job in the environment: WORLD_SIZE, RANK, LOCAL_RANK,
MASTER_ADDR/PORT. A run with WORLD_SIZE > 1 joins the default process group (NCCL on CUDA, gloo on CPU)
and each process takes the GPU numbered by its LOCAL_RANK. Everything here is a no-op in a run of one
process, so the single-process trainer does no collective at all.
"""
from __future__ import annotations

import dataclasses
import os
from datetime import timedelta
from typing import Any, List, Sequence

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    owns_group: bool = False     # this module initialized the process group, so it tears it down

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run directory (logs, plots, checkpoints) and shows progress."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """The device of this process: on CUDA the GPU numbered by LOCAL_RANK (one process per GPU)."""
        if device.type != "cuda" or not self.distributed:
            return device
        if self.local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK={self.local_rank}, but this node has {torch.cuda.device_count()} "
                               f"CUDA devices: start at most one process per GPU (torchrun --nproc_per_node)")
        torch.cuda.set_device(self.local_rank)
        return torch.device("cuda", self.local_rank)

    def sum(self, values: Sequence[float]) -> List[float]:
        """Element-wise sums over all ranks (one all-reduce in float64)."""
        if not self.distributed:
            return [float(v) for v in values]
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        buffer = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
        dist.all_reduce(buffer)
        return buffer.tolist()

    def any(self, flag: bool) -> bool:
        """Whether any rank raised `flag` (e.g. a signal arrived): every rank then acts at the same step."""
        return bool(self.sum([float(flag)])[0]) if self.distributed else flag

    def gather(self, obj: Any) -> List[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        out: List[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def close(self, clean_exit: bool = True) -> None:
        """Leaves the process group this module joined. On a clean exit the ranks first meet at a barrier, so
        that none tears its connections down while a peer is still finishing (rank 0 writes the run directory
        last); after an error a barrier could wait for a rank that is gone, so there is none."""
        if self.owns_group and dist.is_initialized():
            if clean_exit:
                dist.barrier()
            dist.destroy_process_group()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise RuntimeError(f"environment variable {name}: expected an integer, received {value!r}") from None


def join(device_type: str, timeout_minutes: float = 30.0) -> World:
    """The World of this process; joins the default process group when the environment describes a job of
    several processes (torchrun) and no group exists yet. A group the caller created is used as it is."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    size = _env_int("WORLD_SIZE", 1)
    if size <= 1:
        return World()
    if not dist.is_available():
        raise RuntimeError(f"WORLD_SIZE={size}, but this torch build has no torch.distributed")
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes))
    return World(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0), owns_group=True)
