"""convert() on the models people bring (tests/zoo/zoo.py): coverage, equality at h = 0, the three modes, and
Δ-STN's linearized prediction against torch.func.jvp through the math path, in float64."""
import warnings

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.nn.attention import SDPBackend, sdpa_kernel

from fastdstn import HyperSpace, SelfTuning, convert, feeding, make_optimizers
from fastdstn.method.steps import frozen
from fastdstn.nn import dual_routes, general_parameters, response_parameters
from fastdstn.ops import use_backend

import zoo

SEED = 1234


def converted(name: str, dtype=torch.float64):
    z = zoo.build(name)
    original = z.model.to(dtype)
    space = HyperSpace(z.hypers)
    inputs = z.inputs.to(dtype) if z.inputs.is_floating_point() else z.inputs
    return z, original, convert(original, space, dropout=z.dropout), space, inputs


def randomize_response(model):
    """V = 0 at conversion makes the best-response invisible; move V and b_r so that every path counts."""
    torch.manual_seed(7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("hyper_proj", "response_bias")):
                p.normal_(0, 0.3)


@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_coverage_is_complete_and_h0_is_the_original(name):
    z, original, model, space, x = converted(name)
    report = model.stn_conversion
    assert report.complete, str(report)
    assert report.unread == ["wd"], report.unread          # the weight decay is SelfTuning's, not a site's
    assert {hyper for hyper, _ in report.dropout.values()} == set(z.dropout.values())
    original.eval(), model.eval()
    with torch.no_grad():
        expected = original(x)
        torch.testing.assert_close(model(x), expected, rtol=1e-12, atol=1e-12)
        with feeding(torch.randn(x.shape[0], len(space), dtype=torch.float64)):    # V = 0: any h
            torch.testing.assert_close(model(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["stn", "centered", "delta"])
@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_all_modes_train_and_tune(name, mode):
    z, _, model, space, x = converted(name, torch.float32)
    method = SelfTuning(model, space, mode, loss_fn=z.loss_fn, weight_decay="wd")
    optimizers = make_optimizers(model, space, mode)
    lam = space.lam.detach().clone()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)      # e.g. an STN layer that got no gradient
        losses = method.train_step(x, z.targets, optimizers)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    out = method.hyper_step(x, z.targets, optimizers.hyper)
    assert torch.isfinite(out["val_loss"])
    assert not torch.equal(lam, space.lam.detach()), "λ moves in the hyper step"


@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_linearized_prediction_equals_jvp_through_the_math_path(name):
    z, _, model, space, x = converted(name)
    model.train()
    torch.func.replace_all_batch_norm_modules_(model)    # torch.func cannot update running statistics in place
    randomize_response(model)
    with torch.no_grad():
        eps = space.sample(x.shape[0]).eps.double()
    values = space.example_values(space.lam.detach() + eps)

    def run(h, dual=False):
        torch.manual_seed(SEED)             # the same dropout masks in every pass
        with feeding(h, dual=dual, values=values):
            return model(x)

    with use_backend("reference"), sdpa_kernel(SDPBackend.MATH):
        with fwAD.dual_level():
            primal, tangent = fwAD.unpack_dual(run(eps, dual=True))
        jvp_primal, jvp_tangent = torch.func.jvp(run, (torch.zeros_like(eps),), (eps,))
    torch.testing.assert_close(primal, jvp_primal, rtol=1e-10, atol=1e-10)
    scale = max(1.0, jvp_tangent.abs().max().item())
    err = (tangent - jvp_tangent).abs().max().item()
    assert err < 1e-9 * scale, f"{name}: max |dual - jvp| = {err:.3e} (tangent scale {scale:.3g})"


@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_dual_routes_keep_the_response_sub_steps_numbers(name):
    """SelfTuning's dual pass runs inside dual_routes() (the fused BatchNorm/LayerNorm tangents, attention_dual for
    SDPA calls) with the general weights frozen: the linearized prediction and the response parameters' gradients
    equal those of PyTorch's own forward-mode rules through the math path."""
    z, _, model, space, x = converted(name)
    model.train()
    randomize_response(model)
    with torch.no_grad():
        eps = space.sample(x.shape[0]).eps.double()
    values = space.example_values(space.lam.detach() + eps)
    general, response = general_parameters(model), response_parameters(model)
    results = []
    for routes in (dual_routes, lambda: sdpa_kernel(SDPBackend.MATH)):
        torch.manual_seed(SEED)
        with frozen(general), routes(), fwAD.dual_level(), feeding(eps, dual=True, values=values):
            primal, tangent = fwAD.unpack_dual(model(x))
            loss = z.loss_fn(primal + tangent, z.targets)
            grads = torch.autograd.grad(loss, response, allow_unused=True)
        results.append([primal, tangent] + [g for g in grads if g is not None])
    assert len(results[0]) == len(results[1])
    for routed, unrouted in zip(*results):
        scale = max(1.0, unrouted.abs().max().item())
        assert (routed - unrouted).abs().max().item() < 1e-9 * scale
