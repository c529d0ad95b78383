"""Every bad input to otkit.sinkhorn raises a ValueError that names the argument and the fix."""

from __future__ import annotations

import math

import pytest
import torch

import otkit


def _cost(*shape):
    return torch.rand(*shape, dtype=torch.float64)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cost": torch.tensor([[0.0, math.nan]])}, "cost contains NaN"),
        ({"cost": torch.tensor([[0.0, math.inf]])}, "cost contains Inf"),
        ({"cost": torch.zeros(3)}, "at least 2 dims"),
        ({"cost": torch.zeros(0, 4)}, "empty dimension"),
        ({"cost": torch.zeros(2, 0, 4)}, "empty dimension"),
        ({"cost": torch.zeros(3, 4, dtype=torch.int64)}, "floating tensor"),
        ({"cost": [[0.0, 1.0]]}, "torch.Tensor"),
        ({"eps": 0.0}, "eps must be a finite number > 0"),
        ({"eps": -1.0}, "eps must be a finite number > 0"),
        ({"eps": math.nan}, "eps must be"),
        ({"a": torch.tensor([0.5, math.nan, 0.5])}, "a contains NaN"),
        ({"a": torch.tensor([0.5, -0.2, 0.7])}, "a has negative"),
        ({"a": torch.zeros(3)}, "a has zero total mass"),
        ({"b": torch.zeros(4)}, "b has zero total mass"),
        ({"b": torch.full((4,), math.inf)}, "b contains NaN or Inf"),
        ({"a": torch.full((5,), 0.2)}, "a must have last dim n = 3"),
        ({"b": torch.full((3, 4), 0.25)}, "does not broadcast"),
        ({"a": torch.full((3,), 0.5)}, "different total masses"),
        ({"rho_a": 0.0}, "rho_a must be > 0"),
        ({"rho_b": -2.0}, "rho_b must be > 0"),
        ({"max_iter": 0}, "max_iter must be >= 1 for sinkhorn"),
        ({"max_iter": -1}, "max_iter must be an int >= 0"),
        ({"max_iter": 2.5}, "max_iter must be an int"),
        ({"tol": -1.0}, "tol must be None"),
        ({"domain": "fast"}, "domain must be"),
        ({"grad": "backprop"}, "grad must be"),
        ({"backend": "fast"}, "backend must be"),
        ({"check_every": 0}, "check_every must be"),
        ({"init": (torch.zeros(3),)}, "init must be a pair"),
        ({"init": (torch.zeros(5), torch.zeros(4))}, r"init\[0\] \(f\)"),
        ({"init": (torch.zeros(3), torch.full((4,), math.nan))}, r"init\[1\] \(g\) contains NaN"),
    ],
)
def test_bad_input_raises_value_error(kwargs, match):
    args = {"cost": _cost(2, 3, 4), "eps": 0.1}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        otkit.sinkhorn(**args)


def test_unequal_masses_are_fine_when_a_side_is_relaxed():
    res = otkit.sinkhorn(_cost(3, 4), torch.full((3,), 0.5), None, eps=0.1, rho_b=1.0, max_iter=2000)
    assert bool(torch.isfinite(res.plan).all())


def test_inf_rho_means_balanced():
    cost = _cost(3, 4)
    hard = otkit.sinkhorn(cost, eps=0.1, max_iter=2000, tol=1e-12)
    inf = otkit.sinkhorn(cost, eps=0.1, rho_a=math.inf, rho_b=math.inf, max_iter=2000, tol=1e-12)
    assert inf.rho_a is None and inf.rho_b is None
    torch.testing.assert_close(inf.plan, hard.plan)
