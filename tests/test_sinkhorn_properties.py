"""Invariants of otkit.sinkhorn: shapes, marginals, domains, batching, precision, warm starts, stopping."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import otkit
from otkit.dense import loops as _iterations
from tests.conftest import random_problem


@settings(max_examples=40, deadline=None)
@given(
    batch=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    n=st.integers(1, 12),
    m=st.integers(1, 12),
    eps=st.floats(0.05, 5.0),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    relax=st.sampled_from([(None, None), (1.0, None), (None, 0.5), (0.3, 3.0)]),
    seed=st.integers(0, 2**16),
)
def test_shapes_and_marginals(batch, n, m, eps, dtype, relax, seed):
    cost, a, b = random_problem(tuple(batch), n, m, dtype=dtype, seed=seed)
    tol = 1e-9 if dtype == torch.float64 else 1e-5
    res = otkit.sinkhorn(cost, a, b, eps=eps, rho_a=relax[0], rho_b=relax[1], max_iter=5000, tol=tol)
    assert res.f.shape == (*batch, n) and res.g.shape == (*batch, m)
    assert res.plan.shape == (*batch, n, m) and res.value.shape == tuple(batch)
    assert bool(torch.isfinite(res.plan).all()) and bool((res.plan >= 0).all())
    assert bool(res.converged.all())
    rows, cols = res.marginal_error
    assert float(rows.max()) <= 20 * tol and float(cols.max()) <= 20 * tol


@pytest.mark.parametrize("relax", [(None, None), (0.5, 2.0), (None, 1.0)])
@pytest.mark.parametrize(("n", "m"), [(50, 6), (6, 50), (17, 17)])
def test_log_and_kernel_domains_agree(relax, n, m):
    cost, a, b = random_problem((4,), n, m)
    kw = dict(eps=0.05, rho_a=relax[0], rho_b=relax[1], max_iter=3000, tol=1e-12)
    log = otkit.sinkhorn(cost, a, b, domain="log", **kw)
    kernel = otkit.sinkhorn(cost, a, b, domain="kernel", **kw)
    assert log.domain == "log" and kernel.domain == "kernel"
    torch.testing.assert_close(log.plan, kernel.plan, rtol=1e-9, atol=1e-12)
    # and after a fixed small number of iterations the iterates coincide too
    kw.update(max_iter=7, tol=None)
    torch.testing.assert_close(
        otkit.sinkhorn(cost, a, b, domain="log", **kw).plan,
        otkit.sinkhorn(cost, a, b, domain="kernel", **kw).plan,
        rtol=1e-10,
        atol=1e-13,
    )


def test_auto_picks_kernel_when_safe_and_log_when_not():
    cost, _, _ = random_problem((2,), 10, 4, dtype=torch.float32)
    assert otkit.sinkhorn(cost, eps=0.05).domain == "kernel"  # spread 1 / 0.05 = 20
    wide = cost * 10  # spread 200 > 50 in float32
    res = otkit.sinkhorn(wide, eps=0.05, max_iter=2000, tol=1e-5)
    assert res.domain == "log" and bool(torch.isfinite(res.plan).all())
    assert otkit.sinkhorn(wide.double(), eps=0.05, max_iter=3000).domain == "kernel"  # 200 < 300 in float64


def test_batched_equals_looped_and_cache_blocking(monkeypatch):
    cost, a, b = random_problem((7,), 30, 5)
    whole = otkit.sinkhorn(cost, a, b, eps=0.1, max_iter=500, tol=None)
    for i in range(7):
        one = otkit.sinkhorn(cost[i], a[i], b[i], eps=0.1, max_iter=500, tol=None)
        torch.testing.assert_close(whole.plan[i], one.plan, rtol=1e-12, atol=1e-14)
    monkeypatch.setattr(_iterations, "CPU_CHUNK_BYTES", 3 * 30 * 5 * 8)  # groups of 3 problems
    chunked = otkit.sinkhorn(cost, a, b, eps=0.1, max_iter=500, tol=None)
    torch.testing.assert_close(chunked.plan, whole.plan, rtol=1e-12, atol=1e-14)
    converged = otkit.sinkhorn(cost, a, b, eps=0.1, max_iter=5000, tol=1e-10)
    assert converged.errors.shape[1:] == (7,) and bool(converged.converged.all())


def test_marginals_broadcast_over_batch():
    cost, a, _ = random_problem((3, 2), 9, 4)
    res = otkit.sinkhorn(cost, a[0, 0], None, eps=0.2, max_iter=2000, tol=1e-12)
    rows, cols = res.marginals()
    torch.testing.assert_close(rows, a[0, 0].expand(3, 2, 9), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(cols, torch.full((3, 2, 4), 0.25, dtype=torch.float64), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_use_float32(dtype):
    cost, _, _ = random_problem((4,), 64, 8, dtype=torch.float32)
    low = otkit.sinkhorn(cost.to(dtype), eps=0.05, max_iter=500, tol=1e-6)
    ref = otkit.sinkhorn(cost.to(dtype).float(), eps=0.05, max_iter=500, tol=1e-6)
    assert low.f.dtype == torch.float32 and low.plan.dtype == torch.float32
    torch.testing.assert_close(low.plan, ref.plan)
    assert bool(torch.isfinite(low.value).all())


def test_large_half_precision_costs_do_not_overflow():
    cost = (torch.rand(2, 30, 6) * 6e4).half()  # near float16's max: exp(-C/eps) would overflow in float16
    res = otkit.sinkhorn(cost, eps=5000.0, max_iter=2000, tol=1e-5)
    assert bool(torch.isfinite(res.plan).all()) and bool(res.converged.all())


def test_warm_start_converges_immediately():
    cost, a, b = random_problem((3,), 40, 6)
    first = otkit.sinkhorn(cost, a, b, eps=0.05, max_iter=5000, tol=1e-10)
    assert first.n_iter > 10
    again = otkit.sinkhorn(cost, a, b, eps=0.05, max_iter=5000, tol=1e-10, init=(first.f, first.g), check_every=1)
    assert again.n_iter == 1
    torch.testing.assert_close(again.plan, first.plan, rtol=1e-8, atol=1e-12)


def test_checks_are_spaced_and_errors_recorded():
    cost, a, b = random_problem((2,), 20, 5)
    res = otkit.sinkhorn(cost, a, b, eps=0.05, max_iter=1000, tol=1e-10, check_every=10)
    assert res.n_iter % 10 == 0
    assert res.errors.shape == (res.n_iter // 10, 2)  # one host read per 10 iterations, not per iteration
    assert bool((res.errors[-1] <= 1e-10).all()) and bool((res.errors[0] > res.errors[-1]).all())
    fixed = otkit.sinkhorn(cost, a, b, eps=0.05, max_iter=37, tol=None)
    assert fixed.n_iter == 37 and fixed.errors.shape == (1, 2) and bool(fixed.converged.all())


def test_non_convergence_warns_and_flags():
    cost, a, b = random_problem((3,), 30, 5)
    with pytest.warns(otkit.ConvergenceWarning, match="max_iter"):
        res = otkit.sinkhorn(cost, a, b, eps=0.01, max_iter=3, tol=1e-12)
    assert not bool(res.converged.any()) and bool(torch.isfinite(res.plan).all())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        otkit.sinkhorn(cost, a, b, eps=0.5, max_iter=2000, tol=1e-8)


def test_zero_weights_give_empty_rows_and_columns():
    cost, a, b = random_problem((2,), 12, 6, zero_weights=True)
    for domain in ("log", "kernel"):
        res = otkit.sinkhorn(cost, a, b, eps=0.1, max_iter=3000, tol=1e-12, domain=domain)
        assert bool((res.plan[..., 0, :] == 0).all()) and bool((res.plan[..., :, -1] == 0).all())
        assert bool(torch.isfinite(res.f).all() & torch.isfinite(res.g).all())
        rows, cols = res.marginal_error
        assert float(rows.max()) < 1e-10 and float(cols.max()) < 1e-10


def test_small_eps_approaches_the_assignment():
    scipy_opt = pytest.importorskip("scipy.optimize")
    gen = torch.Generator().manual_seed(3)
    cost = 0.5 + 0.5 * torch.rand(8, 8, generator=gen, dtype=torch.float64)
    perm = torch.randperm(8, generator=gen)
    cost[torch.arange(8), perm] = 0.3 * torch.rand(8, generator=gen, dtype=torch.float64)
    res = otkit.sinkhorn(cost, eps=0.01, max_iter=20000, tol=1e-10)
    assert bool(res.converged)
    rows, cols = scipy_opt.linear_sum_assignment(cost.numpy())
    assignment = torch.zeros(8, 8, dtype=torch.float64)
    assignment[rows, cols] = 1 / 8
    torch.testing.assert_close(res.plan, assignment, rtol=0, atol=1e-4)
