"""Δ-STN's dual forward (docs/METHOD.md §5) against torch.func.jvp and central finite differences in float64."""
import pytest
import torch
import torch.autograd.forward_ad as fwAD

from fastdstn import feeding
from fastdstn import ops
from fastdstn.ops import use_backend

from stn_test_models import model_and_inputs, small_space

KINDS = ["mlp", "cnn", "lstm"]
SEED = 1234


def run(model, x, h, values, dual=False):
    """One forward with dropout masks fixed by SEED."""
    torch.manual_seed(SEED)
    with feeding(h, dual=dual, values=values):
        return model(x)


def batch_of(kind, x):
    return x.shape[1] if kind == "lstm" else x.shape[0]


@pytest.fixture(params=KINDS)
def setting(request):
    kind = request.param
    space = small_space()
    model, x = model_and_inputs(kind, len(space))
    # torch.func cannot run BatchNorm's in-place running-stat update; batch statistics stay.
    torch.func.replace_all_batch_norm_modules_(model)
    batch = batch_of(kind, x)
    with torch.no_grad():
        eps = space.sample(batch).eps
    values = space.example_values(space.lam.detach() + eps)
    return kind, model, x, eps, values


def dual_pass(model, x, eps, values):
    with fwAD.dual_level():
        out = run(model, x, eps, values, dual=True)
        primal, tangent = fwAD.unpack_dual(out)
    return primal, tangent


def test_dual_tangent_equals_jvp_in_h(setting):
    kind, model, x, eps, values = setting
    with use_backend("reference"):      # torch.func.jvp needs ops with forward-mode formulas
        primal, tangent = dual_pass(model, x, eps, values)
        f = lambda h: run(model, x, h, values)  # noqa: E731
        jvp_primal, jvp_tangent = torch.func.jvp(f, (torch.zeros_like(eps),), (eps,))
    torch.testing.assert_close(primal, jvp_primal, rtol=0, atol=1e-12)
    err = (tangent - jvp_tangent).abs().max().item()
    assert err < 1e-10 * max(1.0, jvp_tangent.abs().max().item()), f"{kind}: max |dual - jvp| = {err:.3e}"


def test_dual_primal_is_the_general_network(setting):
    kind, model, x, eps, values = setting
    primal, _ = dual_pass(model, x, eps, values)
    torch.testing.assert_close(primal, run(model, x, None, values), rtol=0, atol=1e-12)


def test_dual_tangent_matches_central_differences(setting):
    kind, model, x, eps, values = setting
    _, tangent = dual_pass(model, x, eps, values)
    delta = 1e-6
    finite = (run(model, x, delta * eps, values) - run(model, x, -delta * eps, values)) / (2 * delta)
    err = (tangent - finite).abs().max().item()
    assert err < 1e-6 * max(1.0, finite.abs().max().item()), f"{kind}: max |dual - FD| = {err:.3e}"


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_dual_response_gradients_flow_only_to_response_parameters(setting, backend):
    kind, model, x, eps, values = setting
    general = {n for n, p in model.named_parameters() if not n.endswith(("response_weight", "response_bias", "hyper_proj"))}
    for n, p in model.named_parameters():
        p.requires_grad_(n not in general)
    with fwAD.dual_level(), ops.use_backend(backend):
        out = run(model, x, eps, values, dual=True)
        primal, tangent = fwAD.unpack_dual(out)
        if ops.current_backend() == "reference":
            # (A custom op cannot tell autograd that y is independent of W_r: its primal joins the graph,
            # and its backward then skips the inputs that need no gradient.)
            assert not primal.requires_grad, "the primal must not record a graph in the response sub-step"
        (primal + tangent).pow(2).sum().backward()
    for n, p in model.named_parameters():
        if n in general:
            assert p.grad is None, n
        elif n.endswith("hyper_proj") or n.endswith("response_weight"):
            assert p.grad is not None and p.grad.abs().sum() > 0, n
