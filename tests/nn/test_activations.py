"""Every activation of torch.nn in Δ-STN's response sub-step, which back-propagates through the tangents of the
dual pass: PyTorch's own rule where it is differentiable, fastdstn's (fastdstn.nn.activations) where not."""
import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn

from fastdstn import Hyper, HyperSpace, SelfTuning, convert, feeding, make_optimizers
from fastdstn.nn import GLU, Hardsigmoid
from fastdstn.ops import use_backend

ARGUMENTS = {"Threshold": (0.1, 20.0), "Softmin": (-1,), "Softmax": (-1,), "LogSoftmax": (-1,)}
ACTIVATIONS = [name for name in nn.modules.activation.__all__ if name != "MultiheadAttention"]
SUPPLIED = {"Hardsigmoid": Hardsigmoid, "GLU": GLU}     # the rules fastdstn supplies


def make(name: str) -> nn.Module:
    return getattr(nn, name)(*ARGUMENTS.get(name, ())).double()


def differentiable_tangent(act: nn.Module) -> bool:
    """Whether the backward through act's forward-mode tangent runs (the response sub-step's need)."""
    x = torch.randn(2, 4, 3, 4, dtype=torch.float64) * 4
    source = torch.randn_like(x, requires_grad=True)
    try:
        with fwAD.dual_level():
            fwAD.unpack_dual(act(fwAD.make_dual(x, source * 1.0))).tangent.sum().backward()
    except RuntimeError as error:
        assert "is not implemented" in str(error), error
        return False
    return True


def test_fastdstn_supplies_every_rule_pytorch_lacks():
    lacking = {name for name in ACTIVATIONS if not differentiable_tangent(make(name))}
    assert lacking <= set(SUPPLIED), f"no fastdstn rule for {sorted(lacking - set(SUPPLIED))}"
    for name, cls in SUPPLIED.items():
        act = cls(*ARGUMENTS.get(name, ()))
        assert differentiable_tangent(act), name


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_response_sub_step_and_dual_pass_through_each_activation(name):
    """Converted (so Hardsigmoid and GLU become fastdstn's), the tangent equals torch.func.jvp in float64 and a
    Δ-STN training step runs."""
    torch.manual_seed(0)
    width = 8 if name == "GLU" else 4            # GLU halves its input
    space = HyperSpace([Hyper("wd", 1e-3, 0.0, 1.0, per_example=False)])
    model = convert(nn.Sequential(nn.Linear(6, width), make(name), nn.Linear(4, 3)).double(), space)
    assert type(model[1]) is SUPPLIED.get(name, getattr(nn, name))
    with torch.no_grad():
        for layer in (model[0], model[2]):
            layer.hyper_proj.normal_()
    # (B, 2, features): Softmax2d needs a 3-d input
    x, eps = torch.randn(5, 2, 6, dtype=torch.float64) * 3, torch.randn(5, 1, dtype=torch.float64)

    def run(h, dual=False):
        torch.manual_seed(1)              # RReLU draws its slopes in training
        with feeding(h, dual=dual):
            return model(x)

    with use_backend("reference"):
        with fwAD.dual_level():
            tangent = fwAD.unpack_dual(run(eps, dual=True)).tangent
        _, expected = torch.func.jvp(run, (torch.zeros_like(eps),), (eps,))
    torch.testing.assert_close(tangent, expected, rtol=1e-10, atol=1e-10)
    method = SelfTuning(model, space, "delta", loss_fn=lambda out, y: F.cross_entropy(out.flatten(0, 1), y.flatten()),
                        weight_decay="wd")
    losses = method.train_step(x, torch.randint(0, 3, (5, 2)), make_optimizers(model, space, "delta"))
    assert torch.isfinite(losses["response_loss"])
