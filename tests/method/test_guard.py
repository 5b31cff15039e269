"""The finiteness guard: a NaN or infinity in any sub-step's loss, gradients or BatchNorm statistics is refused
before the optimizer steps, and the model, λ, ρ and the optimizers' states are left exactly as they were."""
import math

import pytest
import torch
import torch.nn.functional as F

from fastdstn import Hyper, HyperSpace, SelfTuning, make_optimizers
from fastdstn.hyper.space import RHO_MAX, RHO_MIN, SIGMA_MAX, SIGMA_MIN
from fastdstn.method import NonFiniteUpdate
from fastdstn.method.guard import PROFILER_SCOPE, all_finite
from fastdstn.nn import general_parameters, response_parameters
from stn_test_models import CNN, MLP, mlp_problem, small_space


def state(method, opts):
    """Everything an update may change: parameters, buffers, λ, ρ, optimizer states."""
    tensors = [*method.model.state_dict().values(), *method.space.state_dict().values()]
    for opt in (opts.general, opts.response, opts.hyper):
        if opt is not None:
            tensors += [v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    return [t.detach().clone() for t in tensors]


def same(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def poison(parameter):
    """Every gradient that reaches `parameter` becomes NaN."""
    return parameter.register_hook(lambda grad: grad * math.nan)


@pytest.fixture
def delta():
    space, model, x, y = mlp_problem()
    method = SelfTuning(model, space, "delta", loss_fn=F.cross_entropy, weight_decay="wd")
    opts = make_optimizers(model, space, "delta", lr=0.1)
    method.train_step(x, y, opts)              # momentum and Adam states exist: they must not move either
    method.hyper_step(x, y, opts.hyper)
    return method, opts, x, y


@pytest.mark.parametrize("sub_step", ["general", "response", "hyper"])
def test_a_nan_gradient_in_any_sub_step_is_refused_and_leaves_everything_as_it_was(delta, sub_step):
    method, opts, x, y = delta
    target = {"general": general_parameters(method.model)[0], "response": response_parameters(method.model)[0],
              "hyper": method.space.lam}[sub_step]
    handle = poison(target)
    before = state(method, opts)
    with pytest.raises(NonFiniteUpdate, match=f"the {sub_step} sub-step's gradient of .* is not finite") as err:
        if sub_step == "general":
            method.general_step(x, y, opts.general)
        elif sub_step == "response":
            method.response_step(x, y, method.space.sample(16).eps.detach(), opts.response)
        else:
            method.hyper_step(x, y, opts.hyper)
    assert err.value.sub_step == sub_step
    assert same(before, state(method, opts))
    assert target.grad is None, "the refused gradients are cleared"
    assert all(p.requires_grad for p in method.model.parameters()) and method.model.training
    handle.remove()
    method.train_step(x, y, opts)              # and training goes on from there
    assert not same(before, state(method, opts))


def test_stn_mode_joint_step_is_guarded():
    space = small_space()
    model = MLP(len(space)).double()
    method = SelfTuning(model, space, "stn", loss_fn=F.cross_entropy)
    opts = make_optimizers(model, space, "stn", lr=0.1)
    x, y = torch.randn(8, 12, dtype=torch.float64), torch.randint(0, 4, (8,))
    poison(general_parameters(model)[0])
    before = state(method, opts)
    with pytest.raises(NonFiniteUpdate, match="the joint sub-step's gradient of 1.weight is not finite"):
        method.train_step(x, y, opts)
    assert same(before, state(method, opts))


def test_a_non_finite_loss_is_named():
    space = small_space()
    model = MLP(len(space)).double()
    method = SelfTuning(model, space, "delta", loss_fn=lambda out, y: F.cross_entropy(out, y) * math.inf)
    opts = make_optimizers(model, space, "delta")
    with pytest.raises(NonFiniteUpdate, match="the general sub-step's loss is inf; the update was not applied"):
        method.train_step(torch.randn(8, 12, dtype=torch.float64), torch.randint(0, 4, (8,)), opts)


def test_batchnorm_statistics_of_a_refused_step_are_restored():
    torch.manual_seed(0)
    space = HyperSpace([Hyper("drop_hidden", 0.3, 0.0, 0.9)])     # the one hyperparameter the CNN reads
    model = CNN(len(space)).double()
    method = SelfTuning(model, space, "centered", loss_fn=F.cross_entropy)
    opts = make_optimizers(model, space, "centered", lr=0.1)
    x, y = torch.randn(6, 2, 8, 8, dtype=torch.float64), torch.randint(0, 3, (6,))
    method.train_step(x, y, opts)
    running = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    x[0, 0, 0, 0] = 1e300                      # the batch variance overflows
    with pytest.raises(NonFiniteUpdate, match="general sub-step"):
        method.train_step(x, y, opts)
    for key, value in running.items():
        assert torch.equal(model.state_dict()[key], value), key


def test_running_statistics_are_checked_by_name():
    class Poisoned(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("stat", torch.zeros(3))

        def forward(self, x):
            self.stat.fill_(math.nan)
            return x

    space = small_space()
    model = torch.nn.Sequential(MLP(len(space)), Poisoned())
    method = SelfTuning(model, space, "delta", loss_fn=F.cross_entropy)
    opts = make_optimizers(model, space, "delta")
    with pytest.raises(NonFiniteUpdate, match="running statistic 1.stat is not finite"):
        method.general_step(torch.randn(4, 12), torch.randint(0, 4, (4,)), opts.general)
    assert torch.equal(model[1].stat, torch.zeros(3)), "restored"


def test_all_finite_is_exact():
    assert all_finite([torch.ones(3), torch.full((2, 2), 3e38)]), "large finite values are finite (no L2 overflow)"
    assert all_finite([])
    assert not all_finite([torch.ones(3), torch.tensor([1.0, math.nan])])
    assert not all_finite([torch.tensor(-math.inf)])
    assert not all_finite([torch.ones(1000, 3).t()[:, 5:].contiguous().fill_(math.inf)])
    big = torch.randn(4096, 65)
    big[4000, 64] = math.nan
    assert not all_finite([big.t()]), "a NaN anywhere in a non-contiguous tensor"


def test_each_sub_step_check_is_one_named_profiler_scope(delta):
    """benchmarks/bench_step_cost.py reports the guard's cost from this scope."""
    method, opts, x, y = delta
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        method.train_step(x, y, opts)
    counts = {e.key: e.count for e in prof.key_averages()}
    assert counts.get(PROFILER_SCOPE) == 2, counts


@pytest.mark.parametrize("scale", [5e-324, 1e-50, SIGMA_MIN / 2, SIGMA_MAX * 2, 1.7976931348623157e308, math.inf,
                                   math.nan, 0.0, -1.0])
def test_scale_outside_the_sigma_bounds_is_refused(scale):
    with pytest.raises(ValueError, match=r"Hyper 'p': scale \(the initial σ\): expected"):
        Hyper("p", 0.5, 0.0, 1.0, scale=scale)


@pytest.mark.parametrize("scale", [SIGMA_MIN, SIGMA_MAX])
def test_sigma_stays_finite_and_positive_at_the_bounds_whatever_the_hyper_step_does(scale):
    space = HyperSpace([Hyper("p", 0.5, 0.0, 1.0, scale=scale), Hyper("q", 2.0, low=0.0, scale=scale)])
    sigma = space.sigma()
    assert torch.isfinite(sigma).all() and (sigma > 0).all()
    assert torch.isfinite(space.entropy()) and torch.isfinite(space.sample(64).perturbed).all()
    model = MLP(len(space))
    method = SelfTuning(model, space, "delta", loss_fn=F.cross_entropy)
    opts = make_optimizers(model, space, "delta", hyper_lr=1e6)      # each Adam step moves ρ by ~1e6
    x, y = torch.randn(8, 12), torch.randint(0, 4, (8,))
    for _ in range(5):
        method.hyper_step(x, y, opts.hyper)
        assert RHO_MIN <= space.rho.min().item() and space.rho.max().item() <= RHO_MAX * (1 + 1e-6)
        assert all(math.isfinite(v) and v > 0 for v in space.scales().values())
        assert all(math.isfinite(v) for v in space.values().values())


def test_sigma_clamps_a_rho_set_by_hand_and_keeps_its_gradient_at_the_bound():
    space = HyperSpace([Hyper("p", 0.5, 0.0, 1.0)])
    with torch.no_grad():
        space.rho.fill_(-1e30)
    assert space.sigma().item() == pytest.approx(SIGMA_MIN, rel=1e-4)
    space.project_()
    space.entropy().backward()
    assert space.rho.grad.item() > 0, "at the lower bound the entropy still pulls σ up"
