"""One rank of the FSDP2 test (started by torchrun from test_fsdp.py): the same Δ-STN steps (both sub-steps and
the hyper step) on the same per-rank batches and random draws, once under DDP and once under FSDP2, in float64;
saves the full parameters, λ and ρ each ends with, and this rank's parameter bytes, to OUT/rank{RANK}.pt."""
import gc
import os
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from fastdstn import Hyper, HyperSpace, SelfTuning, make_optimizers
from fastdstn.nn import StnConv2d, StnDropout, StnLinear

STEPS = 3


class ConvNet(nn.Module):
    """StnConv2d and StnLinear layers with a tuned dropout between them (no BatchNorm: DDP would broadcast rank 0's
    running statistics before every forward and FSDP does not, which is not the comparison here)."""

    def __init__(self, hypers: int):
        super().__init__()
        self.conv = StnConv2d(2, 6, 3, hypers, padding=1)
        self.drop = StnDropout("drop")
        self.hidden = StnLinear(6 * 4 * 4, 16, hypers)
        self.head = StnLinear(16, 3, hypers)

    def forward(self, x):
        x = self.drop(torch.relu(self.conv(x))).flatten(1)
        return self.head(torch.tanh(self.hidden(x)))


def full(t: torch.Tensor) -> torch.Tensor:
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().clone()


def run(strategy: str, rank: int) -> dict:
    torch.manual_seed(0)
    space = HyperSpace([Hyper("drop", 0.3, 0.0, 0.9), Hyper("wd", 1e-3, 0.0, 0.1, per_example=False)])
    model = ConvNet(len(space)).double()
    for m in model.modules():    # V = 0 at construction hides the response: give it values
        if hasattr(m, "hyper_proj"):
            nn.init.normal_(m.hyper_proj, std=0.3)
    method = SelfTuning(model, space, "delta", loss_fn=F.cross_entropy, weight_decay="wd")
    method.distribute(strategy=strategy)
    optimizers = make_optimizers(model, space, "delta", lr=0.1, hyper_lr=0.05)
    data = torch.Generator().manual_seed(10 + rank)
    for step in range(STEPS):
        x = torch.randn(6, 2, 4, 4, generator=data, dtype=torch.float64)
        y = torch.randint(0, 3, (6,), generator=data)
        torch.manual_seed(100 * rank + step)      # the same draws and masks under both strategies
        method.train_step(x, y, optimizers)
        method.hyper_step(x, y, optimizers.hyper)
    local = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in model.parameters())
    return {"parameters": {n: full(p) for n, p in model.named_parameters()},
            "space": {n: full(p) for n, p in space.named_parameters()}, "local_elements": local}


def main() -> None:
    out = sys.argv[1]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    results = {strategy: run(strategy, rank) for strategy in ("ddp", "fsdp")}
    torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    gc.collect()    # the DDP and FSDP wrappers (held in reference cycles) go before their process group does
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
