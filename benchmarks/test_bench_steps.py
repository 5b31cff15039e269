"""Training-step benchmarks: plain SGD step against the STN modes on the SPEC's MLP."""
import pytest
import torch
import torch.nn.functional as F

import bench_steps
from fastdstn import Hyper, HyperSpace, SelfTuning, make_optimizers


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(0)
    return torch.randn(bench_steps.BATCH, bench_steps.SIZES[0]), torch.randint(0, 10, (bench_steps.BATCH,))


def test_plain_step(benchmark, batch):
    x, y = batch
    model = bench_steps.plain_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    benchmark.group = "training step"
    benchmark.pedantic(step, rounds=10, warmup_rounds=2)


@pytest.mark.parametrize("mode", ["delta", "centered", "stn"])
@pytest.mark.parametrize("phase", ["train", "hyper"])
def test_stn_step(benchmark, batch, mode, phase):
    x, y = batch
    space = HyperSpace([Hyper(f"drop{i}", r, 0.0, 0.95) for i, r in enumerate(bench_steps.RATES)])
    model = bench_steps.stn_mlp(space)
    method = SelfTuning(model, space, mode, loss_fn=F.cross_entropy)
    optimizers = make_optimizers(model, space, mode)
    step = (lambda: method.train_step(x, y, optimizers)) if phase == "train" else (lambda: method.hyper_step(x, y, optimizers.hyper))
    benchmark.group = "training step" if phase == "train" else "hyper step"
    benchmark.pedantic(step, rounds=10, warmup_rounds=2)
