"""Each step updates exactly the parameter group docs/METHOD.md §4 names, and computes no other gradient."""
import pytest
import torch
import torch.nn.functional as F

from fastdstn import SelfTuning, make_optimizers
from fastdstn.nn import general_parameters, response_parameters
from stn_test_models import MLP, mlp_problem, small_space


def snapshot(params):
    return [p.detach().clone() for p in params]


def changed(before, params):
    return [not torch.equal(b, p.detach()) for b, p in zip(before, params)]


@pytest.fixture
def setup():
    return mlp_problem()


@pytest.mark.parametrize("mode", ["delta", "centered"])
def test_two_sub_steps_update_only_their_groups(setup, mode):
    space, model, x, y = setup
    method = SelfTuning(model, space, mode, loss_fn=F.cross_entropy, weight_decay="wd")
    opts = make_optimizers(model, space, mode, lr=0.1)
    general, response = general_parameters(model), response_parameters(model)
    hyper = list(space.parameters())

    g0, r0, h0 = snapshot(general), snapshot(response), snapshot(hyper)
    method.general_step(x, y, opts.general)
    assert all(changed(g0, general)) and not any(changed(r0, response)) and not any(changed(h0, hyper))
    assert all(p.grad is None for p in response), "the general sub-step must not compute the response branch"

    general_grads = [p.grad.clone() for p in general]
    g1, r1 = snapshot(general), snapshot(response)
    method.response_step(x, y, space.sample(16).eps.detach(), opts.response)
    assert not any(changed(g1, general)) and all(changed(r1, response)) and not any(changed(h0, hyper))
    for before, p in zip(general_grads, general):
        assert torch.equal(before, p.grad), "the response sub-step must not compute general gradients"
    assert all(p.requires_grad for p in model.parameters()), "freezing is undone after the step"

    m0, hy0 = snapshot(model.parameters()), snapshot(hyper)
    method.hyper_step(x, y, opts.hyper)
    assert not any(changed(m0, list(model.parameters())))
    assert all(changed(hy0, hyper)), "λ and ρ move in the hyper step"
    assert all(p.grad is None or torch.equal(p.grad, g) for p, g in zip(general, general_grads))


def test_stn_mode_updates_general_and_response_jointly(setup):
    space, model, x, y = setup
    method = SelfTuning(model, space, "stn", loss_fn=F.cross_entropy, weight_decay="wd")
    opts = make_optimizers(model, space, "stn", lr=0.1)
    assert opts.response is None
    before, h0 = snapshot(model.parameters()), snapshot(space.parameters())
    out = method.train_step(x, y, opts)
    assert set(out) == {"train_loss"}
    assert all(changed(before, list(model.parameters())))
    assert not any(changed(h0, list(space.parameters())))


def test_train_step_reports_both_losses_and_hyper_step_learns(setup):
    space, model, x, y = setup
    method = SelfTuning(model, space, "delta", loss_fn=F.cross_entropy, weight_decay="wd")
    opts = make_optimizers(model, space, "delta", lr=0.05)
    first = method.train_step(x, y, opts)
    assert set(first) == {"train_loss", "response_loss"}
    for _ in range(30):
        method.train_step(x, y, opts)
    assert method.train_step(x, y, opts)["train_loss"] < first["train_loss"]
    out = method.hyper_step(x, y, opts.hyper)
    assert set(out) == {"val_loss", "entropy"}


def test_linearized_hyper_step_option_and_prediction(setup):
    space, model, x, y = setup
    method = SelfTuning(model, space, "delta", loss_fn=F.cross_entropy, linearized_hyper=True)
    opts = make_optimizers(model, space, "delta")
    hy0 = snapshot(space.parameters())
    method.hyper_step(x, y, opts.hyper)
    assert all(changed(hy0, list(space.parameters())))
    model.train()
    torch.testing.assert_close(method.predict(x), model.eval()(x))   # a plain network at h = 0
    assert model.training is False
    with pytest.raises(ValueError, match="linearized_hyper"):
        SelfTuning(model, space, "centered", loss_fn=F.cross_entropy, linearized_hyper=True)


def test_bad_method_arguments():
    space = small_space()
    with pytest.raises(ValueError, match="no STN layer"):
        SelfTuning(torch.nn.Linear(2, 2), space, loss_fn=F.mse_loss)
    with pytest.raises(KeyError, match="no hyperparameter named 'l2'"):
        SelfTuning(MLP(3), space, loss_fn=F.mse_loss, weight_decay="l2")
    with pytest.raises(ValueError, match="'delta'"):
        SelfTuning(MLP(3), space, "deltaa", loss_fn=F.mse_loss)


def test_fixed_mode_trains_general_weights_only(setup):
    space, model, x, y = setup
    method = SelfTuning(model, space, "fixed", loss_fn=F.cross_entropy, weight_decay="wd")
    opts = make_optimizers(model, space, "fixed", lr=0.1)
    assert opts.response is None
    general, response = general_parameters(model), response_parameters(model)
    g0, r0, h0 = snapshot(general), snapshot(response), snapshot(space.parameters())
    assert set(method.train_step(x, y, opts)) == {"train_loss"}
    assert all(changed(g0, general)) and not any(changed(r0, response))
    assert not any(changed(h0, list(space.parameters())))
    with pytest.raises(RuntimeError, match="no hyper step"):
        method.hyper_step(x, y, opts.hyper)
