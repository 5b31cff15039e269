"""One rank of test_distributed's buffer test (started by torchrun): every rank sets its own BatchNorm
statistics, `SelfTuning.sync_buffers` must leave rank 0's on all, and OUT/rank{RANK}.pt records them."""
import os
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import fastdstn
from fastdstn.nn import StnLinear


def main() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = nn.Sequential(StnLinear(4, 3, 1), nn.BatchNorm1d(3))
    method = fastdstn.SelfTuning(model, fastdstn.HyperSpace([fastdstn.Hyper("d", 0.1, 0.0, 0.9)]), "delta",
                                 loss_fn=F.cross_entropy)
    method.distribute()
    bn = model[1]
    bn.running_mean.fill_(rank + 1.0)
    bn.running_var.fill_(rank + 2.0)
    bn.num_batches_tracked.fill_(rank + 5)
    method.sync_buffers()
    torch.save({k: v.clone() for k, v in bn.state_dict().items()}, os.path.join(sys.argv[1], f"rank{rank}.pt"))
    dist.barrier()    # a rank leaving the group first aborts the other at exit now and then (gloo, as in the trainer)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
