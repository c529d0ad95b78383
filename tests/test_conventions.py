"""The equivalences with POT, geomloss and ott-jax that docs/conventions.md states, each as one check.

Those already checked elsewhere are named on that page (tests/test_sinkhorn_reference.py, test_divergence.py,
test_points.py); this file checks the rest: POT's value with masses other than one, and every ott-jax formula.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import otkit
from tests.conftest import random_problem

CONVERGED = {"max_iter": 20000, "tol": 1e-13}


def test_value_exceeds_pot_by_the_mass_term():
    """Balanced problems of mass m: ``res.value = ot.solve(C, a, b, reg=eps).value + eps (m**2 - m)``."""
    ot = pytest.importorskip("ot")
    cost, a, b = random_problem((), 12, 7)
    mass, eps = 2.5, 0.2
    res = otkit.sinkhorn(cost, mass * a, mass * b, eps=eps, **CONVERGED)
    ref = ot.solve(cost, mass * a, mass * b, reg=eps, reg_type="KL", max_iter=20000, tol=1e-14)
    torch.testing.assert_close(res.value, ref.value + eps * (mass**2 - mass), rtol=1e-10, atol=1e-12)


@pytest.fixture(scope="module")
def ott():
    """ott-jax in float64 (jax computes in float32 unless told otherwise)."""
    jax = pytest.importorskip("jax")
    pytest.importorskip("ott")
    jax.config.update("jax_enable_x64", True)
    from ott.geometry import geometry, pointcloud
    from ott.problems.linear import linear_problem
    from ott.solvers.linear import sinkhorn
    from ott.tools import sinkhorn_divergence

    return {
        "geometry": geometry,
        "pointcloud": pointcloud,
        "linear_problem": linear_problem,
        "sinkhorn": sinkhorn,
        "sinkhorn_divergence": sinkhorn_divergence,
    }


def _ott_solve(ott, cost, a, b, eps, tau_a=1.0, tau_b=1.0):
    geom = ott["geometry"].Geometry(cost_matrix=cost.numpy(), epsilon=eps)
    problem = ott["linear_problem"].LinearProblem(geom, a=a.numpy(), b=b.numpy(), tau_a=tau_a, tau_b=tau_b)
    return ott["sinkhorn"].Sinkhorn(threshold=1e-13, max_iterations=20000)(problem)


def _array(x):
    return torch.as_tensor(np.array(x))


def test_balanced_plan_and_value_equal_ott(ott):
    """Balanced: the same plan, and ott's ``reg_ot_cost`` is our ``value``."""
    cost, a, b = random_problem((), 15, 6)
    res = otkit.sinkhorn(cost, a, b, eps=0.1, **CONVERGED)
    out = _ott_solve(ott, cost, a, b, 0.1)
    torch.testing.assert_close(res.plan, _array(out.matrix), rtol=0, atol=1e-10)
    assert abs(float(res.value) - float(out.reg_ot_cost)) < 1e-9


@pytest.mark.parametrize(("rho_a", "rho_b"), [(0.5, 2.0), (None, 0.3)])
def test_unbalanced_plan_equals_ott_with_tau_and_shifted_cost(ott, rho_a, rho_b):
    """ott's ``tau = rho / (rho + eps)`` (``1``: a balanced side); its entropic term is ``-eps H(P)`` (reference
    measure 1, not ``a x b``), so its plan for ``C`` is ours for ``C + eps (log a_i + log b_j)``."""
    cost, a, b = random_problem((), 15, 6)
    b, eps = 1.7 * b, 0.1
    tau = [1.0 if rho is None else rho / (rho + eps) for rho in (rho_a, rho_b)]
    out = _ott_solve(ott, cost, a, b, eps, *tau)
    shifted = cost + eps * (a.log()[:, None] + b.log()[None, :])
    res = otkit.sinkhorn(shifted, a, b, eps=eps, rho_a=rho_a, rho_b=rho_b, **CONVERGED)
    torch.testing.assert_close(res.plan, _array(out.matrix), rtol=0, atol=1e-10)


def test_potentials_are_ott_potentials_less_eps_log_weights(ott):
    """ott's plan is ``exp((f + g - C) / eps)``, ours ``a b exp((f + g - C) / eps)``: its ``f`` is our
    ``f + eps log a`` (and ``g`` likewise), up to the constant ``(t, -t)`` of a balanced problem."""
    cost, a, b = random_problem((), 10, 8)
    eps = 0.1
    res = otkit.sinkhorn(cost, a, b, eps=eps, **CONVERGED)
    out = _ott_solve(ott, cost, a, b, eps)
    f = _array(out.f) - eps * a.log()
    g = _array(out.g) - eps * b.log()
    shift = float((f - res.f).mean())
    torch.testing.assert_close(f - shift, res.f, rtol=0, atol=1e-9)
    torch.testing.assert_close(g + shift, res.g, rtol=0, atol=1e-9)


def test_point_cloud_equals_ott_pointcloud(ott):
    """ott's ``PointCloud`` cost is ``|x - y|^2`` (no 1/2), our ``"sqeuclidean"``."""
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(30, 2, generator=gen, dtype=torch.float64)
    y = torch.rand(20, 2, generator=gen, dtype=torch.float64)
    eps = 0.05
    res = otkit.sinkhorn_points(x, y, eps=eps, **CONVERGED)
    geom = ott["pointcloud"].PointCloud(x.numpy(), y.numpy(), epsilon=eps)
    problem = ott["linear_problem"].LinearProblem(geom)
    out = ott["sinkhorn"].Sinkhorn(threshold=1e-13, max_iterations=20000)(problem)
    torch.testing.assert_close(res.plan, _array(out.matrix), rtol=0, atol=1e-10)
    assert abs(float(res.value) - float(out.reg_ot_cost)) < 1e-9


def test_divergence_equals_ott_sinkhorn_divergence(ott):
    """Balanced: ``sinkhorn_divergence(x, y, eps=e)`` is ott's ``sinkhorn_divergence(PointCloud, x, y,
    epsilon=e)`` (same cost, same eps, no factor)."""
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(25, 3, generator=gen, dtype=torch.float64)
    y = torch.rand(35, 3, generator=gen, dtype=torch.float64) + 0.3
    eps = 0.05
    ours = otkit.sinkhorn_divergence(x, y, eps=eps, **CONVERGED).value
    solve = {"threshold": 1e-13, "max_iterations": 20000}
    theirs, _ = ott["sinkhorn_divergence"].sinkhorn_divergence(
        ott["pointcloud"].PointCloud, x.numpy(), y.numpy(), epsilon=eps, solve_kwargs=solve
    )
    assert abs(float(ours) - float(theirs)) < 1e-9
