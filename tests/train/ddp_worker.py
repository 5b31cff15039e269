"""One rank of the distributed tests (started by torchrun from test_distributed.py): trains the tiny run
given as JSON, then saves what this rank ends with (model, λ, ρ, a fresh perturbation draw) to
OUT/rank{RANK}.pt for the test to compare across ranks."""
import json
import os
import sys

import torch

from fastdstn.config import from_dict
from fastdstn.train import Trainer


def main() -> None:
    values, out = json.loads(sys.argv[1]), sys.argv[2]
    trainer = Trainer(from_dict(values), out, progress=False)
    summary = trainer.fit()
    rank = int(os.environ["RANK"])
    torch.save({"model": trainer.model.state_dict(), "space": trainer.space.state_dict(),
                "draw": trainer.space.sample(8).eps, "summary": summary,
                "train_batches": len(trainer.train_loader)}, os.path.join(out, f"rank{rank}.pt"))


if __name__ == "__main__":
    main()
