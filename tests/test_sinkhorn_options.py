"""SinkhornOptions: validation, dict round trip, and equivalence with the flat otkit.sinkhorn API."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

import otkit
from otkit import SinkhornOptions
from tests.conftest import random_problem


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"eps": 0.0}, "eps must be a finite number > 0"),
        ({"eps": math.inf}, "eps must be a finite number > 0"),
        ({"eps": "small"}, "eps must be a positive number"),
        ({"rho_a": -1.0}, "rho_a must be > 0"),
        ({"rho_b": math.nan}, "rho_b must be > 0"),
        ({"max_iter": -1}, "max_iter must be an int >= 0"),
        ({"max_iter": 10.0}, "max_iter must be an int"),
        ({"max_iter": True}, "max_iter must be an int"),
        ({"tol": -1e-3}, "tol must be None"),
        ({"tol": "1e-6"}, "tol must be None"),
        ({"domain": "fast"}, "domain must be 'auto', 'log' or 'kernel'"),
        ({"grad": "backprop"}, "grad must be 'unroll' or 'implicit'"),
        ({"check_every": 0}, "check_every must be an int >= 1"),
        ({"backend": "cuda"}, "backend must be 'auto', 'torch' or 'triton'"),
    ],
)
def test_validation_errors_name_the_field(changes, match):
    with pytest.raises(ValueError, match=match):
        SinkhornOptions(**changes)
    with pytest.raises(ValueError, match=match):  # replace validates as well
        SinkhornOptions().replace(**changes)


def test_values_are_normalised_and_frozen():
    options = SinkhornOptions(eps=torch.tensor(0.5), rho_a=math.inf, rho_b=2, tol=0, max_iter=0)
    assert options.eps == 0.5 and type(options.eps) is float
    assert options.rho_a is None and options.rho_b == 2.0 and type(options.rho_b) is float
    assert options.tol == 0.0 and type(options.tol) is float
    assert options.max_iter == 0  # allowed in the options: "no Sinkhorn iteration"
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.eps = 1.0
    assert SinkhornOptions(rho_b=math.inf) == SinkhornOptions()  # inf means balanced


def test_dict_round_trip():
    options = SinkhornOptions(eps=0.2, rho_b=3.0, max_iter=7, tol=None, domain="log", grad="implicit", check_every=3)
    values = options.to_dict()
    assert list(values) == [f.name for f in dataclasses.fields(SinkhornOptions)]
    assert SinkhornOptions.from_dict(values) == options
    assert SinkhornOptions.from_dict(json.loads(json.dumps(values))) == options
    assert SinkhornOptions.from_dict({}) == SinkhornOptions()
    assert options.replace(grad="unroll", max_iter=9) == dataclasses.replace(options, grad="unroll", max_iter=9)
    assert options.grad == "implicit"  # replace returns a copy


def test_unknown_keys_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"'n_iter'.*valid keys: eps, rho_a, rho_b, max_iter, tol, domain, grad"):
        SinkhornOptions.from_dict({"eps": 0.1, "n_iter": 3})
    with pytest.raises(ValueError, match="valid keys"):
        SinkhornOptions().replace(rho_prompts=0.1)


@pytest.mark.parametrize("relax", [(None, None), (0.5, None), (1.0, 2.0)])
@pytest.mark.parametrize("grad", ["unroll", "implicit"])
def test_flat_api_equals_options(relax, grad):
    cost, a, b = random_problem((3,), 8, 5)
    cost.requires_grad_()
    kw = dict(eps=0.1, rho_a=relax[0], rho_b=relax[1], max_iter=1000, tol=1e-8, grad=grad, check_every=5)
    flat = otkit.sinkhorn(cost, a, b, **kw)
    init = (flat.f.detach(), flat.g.detach())
    solved = otkit.sinkhorn(cost, a, b, options=SinkhornOptions(**kw))
    for x, y in ((flat.f, solved.f), (flat.g, solved.g), (flat.errors, solved.errors)):
        assert torch.equal(x, y)
    assert (flat.n_iter, flat.domain, flat.backend) == (solved.n_iter, solved.domain, solved.backend)
    grads = [torch.autograd.grad(res.value.sum(), cost)[0] for res in (flat, solved)]
    assert torch.equal(*grads)
    warm = otkit.sinkhorn(cost, a, b, init=init, **kw)
    assert torch.equal(warm.f, otkit.sinkhorn(cost, a, b, init=init, options=SinkhornOptions(**kw)).f)


def test_solve_refuses_zero_iterations():
    options = SinkhornOptions(max_iter=0)
    with pytest.raises(ValueError, match="max_iter must be >= 1 for sinkhorn"):
        otkit.sinkhorn(torch.rand(3, 4), options=options)
    with pytest.raises(ValueError, match="max_iter must be >= 1 for sinkhorn"):
        otkit.sinkhorn(torch.rand(3, 4), max_iter=0)
    with pytest.raises(ValueError, match="max_iter must be >= 1 for sinkhorn"):
        otkit.multi_prompt_transport(torch.randn(1, 5, 4), torch.randn(2, 3, 4), options=options)


def test_convergence_warning_points_at_the_caller():
    cost, a, b = random_problem((2,), 20, 6)
    for solve in (
        lambda: otkit.sinkhorn(cost, a, b, eps=0.01, max_iter=2),
        lambda: otkit.sinkhorn(cost, a, b, options=SinkhornOptions(eps=0.01, max_iter=2)),
    ):
        with pytest.warns(otkit.ConvergenceWarning) as caught:
            solve()
        assert caught[0].filename == __file__
