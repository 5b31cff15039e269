import math

import pytest
import torch

from fastdstn import Hyper, HyperSpace


@pytest.mark.parametrize("hyper", [Hyper("a", 0.3, 0.0, 1.0), Hyper("b", 2.0, low=1.0), Hyper("c", -2.0, high=0.5),
                                   Hyper("d", 3.0), Hyper("e", 1e-4, 0.0, 1e-2)])
def test_transform_round_trip(hyper):
    u = hyper.unconstrain(hyper.init)
    assert hyper.constrain(torch.tensor(u, dtype=torch.float64)).item() == pytest.approx(hyper.init, rel=1e-9)


def test_constrained_values_stay_in_range():
    h = Hyper("a", 0.5, 0.0, 2.0)
    c = h.constrain(torch.linspace(-30, 30, 101, dtype=torch.float64))
    assert (c >= 0).all() and (c <= 2).all()
    assert (Hyper("b", 2.0, low=1.0).constrain(torch.linspace(-30, 30, 11)) >= 1).all()
    assert (Hyper("c", 0.0, high=1.0).constrain(torch.linspace(-30, 30, 11)) <= 1).all()


def test_initial_values_and_scales():
    space = HyperSpace([Hyper("p", 0.25, 0.0, 1.0, scale=0.5), Hyper("holes", 2.5, 0.0, 5.0, discrete=True)])
    assert space.values() == pytest.approx({"p": 0.25, "holes": 2.5}, rel=1e-6)
    assert space.value("p") == pytest.approx(0.25, rel=1e-6)
    assert space.scales()["p"] == pytest.approx(0.5, rel=1e-6)
    assert len(space) == 2 and space.names == ["p", "holes"]


def test_sample_per_example_and_per_batch_columns():
    space = HyperSpace([Hyper("p", 0.25, 0.0, 1.0), Hyper("wd", 1e-3, 0.0, 1.0, per_example=False)])
    draw = space.sample(64)
    assert draw.eps.shape == (64, 2)
    assert draw.noise[:, 1].eq(draw.noise[0, 1]).all(), "a per-batch column repeats row 0's draw"
    assert draw.noise[:, 0].std() > 0.5, "a per-example column draws per example"
    torch.testing.assert_close(draw.eps, space.sigma() * draw.noise)
    torch.testing.assert_close(draw.perturbed, space.lam + draw.eps)
    draw.perturbed.sum().backward()
    assert space.lam.grad is not None and space.rho.grad is not None


def test_example_values_are_detached_and_constrained():
    space = HyperSpace([Hyper("p", 0.25, 0.0, 1.0), Hyper("q", 1.0, low=0.0)])
    draw = space.sample(8)
    values = space.example_values(draw.perturbed)
    assert set(values) == {"p", "q"} and values["p"].shape == (8,)
    assert not values["p"].requires_grad
    assert ((values["p"] > 0) & (values["p"] < 1)).all() and (values["q"] > 0).all()
    assert space.current_values(3)["p"].tolist() == pytest.approx([0.25] * 3, rel=1e-6)


def test_entropy_formula():
    space = HyperSpace([Hyper("p", 0.25, 0.0, 1.0, scale=0.5), Hyper("q", 1.0, scale=2.0)])
    expected = sum(math.log(s * math.sqrt(2 * math.pi * math.e)) for s in (0.5, 2.0))
    assert space.entropy().item() == pytest.approx(expected, rel=1e-5)


def test_state_dict_round_trip_and_summary():
    a = HyperSpace([Hyper("p", 0.25, 0.0, 1.0)])
    with torch.no_grad():
        a.lam.add_(1.0)
    b = HyperSpace([Hyper("p", 0.25, 0.0, 1.0)])
    b.load_state_dict(a.state_dict())
    assert b.values() == a.values()
    assert "p ∈ [0, 1]" in repr(a)


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="p", init=0.5, low=1.0, high=0.0), "low < high"),
    (dict(name="p", init=1.5, low=0.0, high=1.0), "strictly inside"),
    (dict(name="p", init=0.0, low=0.0, high=1.0), "strictly inside"),
    (dict(name="p", init=0.5, scale=0.0), "scale"),
    (dict(name="p", init=float("nan")), "finite"),
    (dict(name="not a name", init=0.5), "identifier"),
])
def test_invalid_hyper_specs_name_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Hyper(**kwargs)


def test_space_rejects_duplicates_and_unknown_names():
    with pytest.raises(ValueError, match="unique.*p"):
        HyperSpace([Hyper("p", 0.5, 0, 1), Hyper("p", 0.2, 0, 1)])
    with pytest.raises(ValueError, match="at least one"):
        HyperSpace([])
    with pytest.raises(KeyError, match="no hyperparameter named 'x'"):
        HyperSpace([Hyper("p", 0.5, 0, 1)]).value("x")
