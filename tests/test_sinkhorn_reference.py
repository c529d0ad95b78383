"""otkit.sinkhorn against POT and geomloss on random problems (conventions stated per test)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import otkit
from tests.conftest import random_problem

ot = pytest.importorskip("ot")

SHAPES = [((3,), 20, 7), ((2, 2), 12, 12), ((), 40, 5), ((2,), 6, 30)]


def _pot_log(cost, a, b, eps):
    """Per-problem ot.bregman.sinkhorn_log in float64 numpy, stacked back to (*batch, n, m)."""
    c = cost.double().reshape(-1, *cost.shape[-2:]).numpy()
    aa = a.double().expand(cost.shape[:-1]).reshape(-1, cost.shape[-2]).numpy()
    bb = b.double().expand(cost.shape[:-2] + cost.shape[-1:]).reshape(-1, cost.shape[-1]).numpy()
    plans = [
        ot.bregman.sinkhorn_log(x, y, ci, eps, numItermax=100000, stopThr=1e-15)
        for x, y, ci in zip(aa, bb, c, strict=True)
    ]
    return torch.as_tensor(np.stack(plans)).reshape(cost.shape)


@pytest.mark.parametrize(("batch", "n", "m"), SHAPES)
@pytest.mark.parametrize("eps", [0.02, 0.1, 1.0])
def test_balanced_float64_matches_sinkhorn_log(batch, n, m, eps):
    cost, a, b = random_problem(batch, n, m)
    res = otkit.sinkhorn(cost, a, b, eps=eps, max_iter=20000, tol=1e-13)
    assert bool(res.converged.all())
    torch.testing.assert_close(res.plan, _pot_log(cost, a, b, eps), rtol=0, atol=1e-10)
    rows, cols = res.marginal_error
    assert float(rows.max()) < 1e-11 and float(cols.max()) < 1e-11


@pytest.mark.parametrize(("batch", "n", "m"), SHAPES)
@pytest.mark.parametrize("eps", [0.05, 0.5])
@pytest.mark.parametrize("domain", ["log", "kernel"])
def test_balanced_float32_matches_to_1e4_relative(batch, n, m, eps, domain):
    cost, a, b = random_problem(batch, n, m)
    res = otkit.sinkhorn(cost.float(), a.float(), b.float(), eps=eps, max_iter=5000, tol=1e-6, domain=domain)
    ref = _pot_log(cost, a, b, eps)
    # relative to each plan's largest entry: float32 cannot resolve entries far below it more finely
    scale = ref.amax((-2, -1), keepdim=True)
    assert float(((res.plan.double() - ref).abs() / scale).max()) < 1e-4
    assert res.plan.dtype == torch.float32


@pytest.mark.parametrize("eps", [0.05, 0.3])
def test_batch_matches_pot_solve_batch(eps):
    cost, a, b = random_problem((5,), 30, 8)
    ref = ot.batch.solve_batch(
        cost, reg=eps, a=a, b=b, max_iter=20000, tol=1e-14, method="log_sinkhorn", reg_type="kl", grad="detach"
    )
    res = otkit.sinkhorn(cost, a, b, eps=eps, max_iter=20000, tol=1e-13)
    torch.testing.assert_close(res.plan, ref.plan, rtol=0, atol=1e-10)


@pytest.mark.parametrize("eps", [0.05, 0.2, 1.0])
def test_value_equals_pot_solve_value(eps):
    """Balanced, unit masses: our objective is POT's ``ot.solve(..., reg_type="KL").value``."""
    cost, a, b = random_problem((), 25, 9)
    res = otkit.sinkhorn(cost, a, b, eps=eps, max_iter=20000, tol=1e-13)
    ref = ot.solve(cost, a, b, reg=eps, reg_type="KL", max_iter=20000, tol=1e-14)
    torch.testing.assert_close(res.value, ref.value, rtol=1e-10, atol=1e-12)


def _generalised_kl(p, q):
    return float((torch.xlogy(p, p) - torch.xlogy(p, q) - p + q).sum())


@pytest.mark.parametrize(("rho_a", "rho_b"), [(0.5, 2.0), (1.0, None), (None, 0.3), (5.0, 5.0)])
@pytest.mark.parametrize("eps", [0.05, 0.5])
@pytest.mark.parametrize("domain", ["log", "kernel"])
def test_unbalanced_matches_pot_kl(rho_a, rho_b, eps, domain):
    """``reg_type="kl"``: POT's entropic term is KL(P | a x b), as ours; ``reg_m = inf`` keeps a side hard."""
    cost, a, b = random_problem((3,), 15, 6)
    b = b * 1.7  # unequal masses are allowed when a side is relaxed
    res = otkit.sinkhorn(cost, a, b, eps=eps, rho_a=rho_a, rho_b=rho_b, max_iter=50000, tol=1e-14, domain=domain)
    reg_m = (rho_a or float("inf"), rho_b or float("inf"))
    for i in range(3):
        ref = ot.unbalanced.sinkhorn_unbalanced(
            a[i].numpy(), b[i].numpy(), cost[i].numpy(), eps, reg_m, reg_type="kl", numItermax=200000, stopThr=1e-15
        )
        ref = torch.as_tensor(ref)
        torch.testing.assert_close(res.plan[i], ref, rtol=0, atol=1e-10)
        # POT's log["total_cost"] leaves out mass terms; the full objective is computed here from its plan
        value = float((ref * cost[i]).sum()) + eps * _generalised_kl(ref, a[i, :, None] * b[i, None, :])
        if rho_a is not None:
            value += rho_a * _generalised_kl(ref.sum(1), a[i])
        if rho_b is not None:
            value += rho_b * _generalised_kl(ref.sum(0), b[i])
        assert abs(float(res.value[i]) - value) < 1e-10


def test_value_matches_geomloss():
    """geomloss halves the squared distance (cost |x - y|^2 / 2) and anneals eps down to blur**2.

    Its schedule stops at the target eps after one sweep, so a slow schedule (scaling 0.9999) is used to reach
    the fixed point; balanced problems only (its unbalanced output uses another mass convention).
    """
    eps = 0.1
    geomloss = pytest.importorskip("geomloss")
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(30, 2, generator=gen, dtype=torch.float64)
    y = torch.randn(20, 2, generator=gen, dtype=torch.float64)
    a = torch.rand(30, generator=gen, dtype=torch.float64) + 0.1
    b = torch.rand(20, generator=gen, dtype=torch.float64) + 0.1
    a, b = a / a.sum(), b / b.sum()
    loss = geomloss.SamplesLoss("sinkhorn", p=2, blur=eps**0.5, debias=False, scaling=0.9999, backend="tensorized")
    ref = loss(a, x, b, y)
    cost = torch.cdist(x, y) ** 2 / 2
    res = otkit.sinkhorn(cost, a, b, eps=eps, max_iter=20000, tol=1e-13)
    torch.testing.assert_close(res.value, ref, rtol=1e-6, atol=1e-8)
