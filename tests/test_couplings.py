"""Minibatch OT couplings: exact against POT's network simplex, entropic against otkit.sinkhorn and torchcfm."""

from __future__ import annotations

import math
import signal

import numpy as np
import ot
import pytest
import torch
from scipy.stats import chisquare

import otkit
from otkit.couplings import Coupling, OTPlanSampler, assignment, linear_assignment, plan

torchcfm_ot = pytest.importorskip("torchcfm.optimal_transport")


def _clouds(seed: int, n: int, m: int, d: int = 2, groups: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(*groups, n, d, generator=gen, dtype=torch.float64)
    x1 = torch.randn(*groups, m, d, generator=gen, dtype=torch.float64) * 0.5 + 1.0
    return x0, x1


def _emd_value(cost: torch.Tensor) -> float:
    c = cost.double().numpy()
    return float(ot.emd2(ot.unif(c.shape[0]), ot.unif(c.shape[1]), c))


@pytest.fixture(params=["compiled", "torch"])
def assignment_backend(request, monkeypatch):
    """Each assignment test runs on the compiled CPU auction and on the torch methods (the GPU's, and the CPU's
    where otkit was installed without a C compiler)."""
    if request.param == "torch":
        monkeypatch.setattr(assignment, "_auction", None)
    return request.param


def test_the_compiled_auction_is_built_where_the_tests_run():
    """The test environment has a C compiler: the optional extension must have been built (or the compiled
    tests below would silently test the torch methods twice)."""
    assert assignment.COMPILED_AUCTION


def _assert_optimal(cost: torch.Tensor, sigma: torch.Tensor, rel: float = 1e-9, abs: float = 1e-9) -> None:
    for c, s in zip(cost.reshape(-1, *cost.shape[-2:]), sigma.reshape(-1, sigma.shape[-1]), strict=True):
        assert sorted(s.tolist()) == list(range(c.shape[-1]))
        assert float(c.double().gather(1, s[:, None]).sum()) == pytest.approx(
            c.shape[-1] * _emd_value(c), rel=rel, abs=abs
        )


@pytest.mark.parametrize(("seed", "n", "d"), [(0, 1, 2), (1, 7, 2), (2, 64, 2), (3, 40, 30), (4, 128, 3)])
def test_exact_assignment_reaches_the_emd_optimum(seed, n, d, assignment_backend):
    x0, x1 = _clouds(seed, n, n, d)
    res = plan(x0, x1, "exact")
    assert sorted(res.assignment.tolist()) == list(range(n))
    torch.testing.assert_close(res.plan.sum(-1), torch.full((n,), 1.0 / n, dtype=torch.float64))
    torch.testing.assert_close(res.plan.sum(-2), torch.full((n,), 1.0 / n, dtype=torch.float64))
    assert float(res.value) == pytest.approx(_emd_value(res.cost), rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("n", [2, 12, 40])  # the Hungarian method (n <= 16) and the warm-started auction in torch
def test_exact_assignment_on_integer_costs_with_ties_is_optimal(n, assignment_backend):
    gen = torch.Generator().manual_seed(5)
    cost = torch.randint(0, 4, (6, n, n), generator=gen).double()  # many tied optima
    _assert_optimal(cost, linear_assignment(cost), rel=0.0)


def test_both_assignment_methods_agree_at_the_size_that_switches_them(assignment_backend):
    """Sides 16 (Hungarian) and 17 (auction): the same optimum as POT on random costs, one batch of problems."""
    gen = torch.Generator().manual_seed(6)
    for n in (16, 17):
        cost = torch.rand(4, n, n, generator=gen, dtype=torch.float64)
        _assert_optimal(cost, linear_assignment(cost))


@pytest.mark.parametrize("d", [2, 3072])
def test_the_compiled_auction_is_exact_on_minibatches_of_the_benchmark(d):
    """Squared distances of 300-sample Gaussian batches, low- and high-dimensional, in float32 like the
    benchmark's: the assignment's total cost equals POT's emd optimum (the torch auction's is tested above)."""
    gen = torch.Generator().manual_seed(d)
    x0, x1 = torch.randn(300, d, generator=gen), 0.5 * torch.randn(300, d, generator=gen) + 1.0
    res = plan(x0, x1, "exact")
    _assert_optimal(res.cost, res.assignment, rel=1e-12)


def test_assignment_of_costs_far_from_zero_and_of_constant_costs(assignment_backend):
    """Costs offset by 1e6 (the auction works relative to the smallest cost) and costs with no range at all."""
    gen = torch.Generator().manual_seed(8)
    small = torch.rand(3, 30, 30, generator=gen, dtype=torch.float64)
    _assert_optimal(small, linear_assignment(small + 1e6), rel=1e-12)
    constant = linear_assignment(torch.full((2, 20, 20), 3.0))
    for s in constant:
        assert sorted(s.tolist()) == list(range(20))


@pytest.mark.parametrize("tol", [1e-2, 1e-5])
def test_assignment_tol_bounds_the_excess_cost(tol, assignment_backend):
    """A looser tol stops earlier, but the returned assignment stays within tol * n * range of the optimum."""
    gen = torch.Generator().manual_seed(9)
    cost = torch.rand(4, 50, 50, generator=gen, dtype=torch.float64)
    for c, s in zip(cost, linear_assignment(cost, tol=tol), strict=True):
        best = 50 * _emd_value(c)
        assert sorted(s.tolist()) == list(range(50))
        assert best - 1e-12 <= float(c.gather(1, s[:, None]).sum()) <= best + tol * 50 * float(c.max() - c.min())


def test_the_compiled_auction_takes_any_layout_and_checks_its_arguments():
    gen = torch.Generator().manual_seed(10)
    cost = torch.rand(5, 24, 24, generator=gen)
    _assert_optimal(cost.transpose(-1, -2), linear_assignment(cost.transpose(-1, -2)))  # not contiguous, float32
    with pytest.raises(ValueError, match="empty dimension"):
        linear_assignment(torch.rand(0, 6, 6))
    work, out = cost.double(), torch.empty(5, 24, dtype=torch.long)
    with pytest.raises(ValueError, match="tol > 0"):
        assignment._auction.solve(work.data_ptr(), 5, 24, 0.0, out.data_ptr())
    work[2, 0, 0], work[2, 1, 1] = 1.7e308, -1.7e308  # linear_assignment refuses these before the call
    with pytest.raises(OverflowError, match="overflows float64"):
        assignment._auction.solve(work.data_ptr(), 5, 24, 1e-9, out.data_ptr())


@pytest.mark.parametrize("scale", [5e-324, 1e-200, 1e200])
def test_assignment_of_costs_with_denormal_or_huge_ranges(scale, assignment_backend):
    """Ranges far from 1 are scaled by a power of two first (a denormal range left the auction's eps no room
    above 0): integer costs times ``scale`` keep their optimum."""
    cost = torch.randint(0, 5, (4, 20, 20), generator=torch.Generator().manual_seed(13)).double()
    sigma = linear_assignment(cost * scale)
    _assert_optimal(cost, sigma, rel=0.0)


def test_assignment_tol_below_float64_resolution_is_refused(assignment_backend):
    with pytest.raises(ValueError, match="tol must be >= 1e-12"):
        linear_assignment(torch.rand(3, 3), tol=1e-13)


def test_the_compiled_auction_writes_to_the_cpu_whatever_the_default_device():
    cost = torch.rand(2, 30, 30, generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    with torch.device("meta"):  # the output buffer must not follow the default device
        sigma = linear_assignment(cost)
    assert sigma.device.type == "cpu"
    _assert_optimal(cost, sigma)


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs POSIX interval timers")
def test_a_signal_handler_stops_a_long_batch_of_the_compiled_auction():
    """The C loop looks at Python's signal handlers between problems: Ctrl-C (here a timer's handler that raises)
    stops a batch of 400 problems that takes a few tenths of a second, long before its end."""

    class Stop(Exception):
        pass

    def stop(*_):
        raise Stop

    cost = torch.rand(400, 200, 200, generator=torch.Generator().manual_seed(15), dtype=torch.float64)
    sigma = torch.full((400, 200), -1)
    previous = signal.signal(signal.SIGALRM, stop)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.02)
        with pytest.raises(Stop):  # the module itself: the timer must fire inside the C loop
            assignment._auction.solve(cost.data_ptr(), 400, 200, 1e-9, sigma.data_ptr())
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    solved = (sigma >= 0).all(-1)
    assert 0 < int(solved.sum()) < 400  # stopped between problems, the first ones solved
    _assert_optimal(cost[:2], sigma[:2])


def test_a_cost_range_beyond_float64_is_refused(assignment_backend):
    cost = torch.rand(2, 20, 20, dtype=torch.float64)
    cost[1, 0, 0], cost[1, 1, 1] = 1.7e308, -1.7e308  # finite entries, an infinite range
    with pytest.raises(ValueError, match="Divide the cost by a constant"):
        linear_assignment(cost)


def test_a_warm_start_stage_that_is_not_finite_leaves_the_first_stage_prices(monkeypatch):
    """Any starting prices are valid: a problem whose second warm-start stage fails keeps the first stage's."""
    real = assignment.solve_iterations

    def failing_for_problem_0(*args, **kwargs):
        result = real(*args, **kwargs)
        result.g[0] = math.nan
        return result

    monkeypatch.setattr(assignment, "_auction", None)  # the warm start is the torch auction's
    monkeypatch.setattr(assignment, "solve_iterations", failing_for_problem_0)
    cost = torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    _assert_optimal(cost, linear_assignment(cost))


@pytest.mark.parametrize(("n", "m"), [(6, 4), (5, 3), (12, 8)])
def test_exact_lp_plan_of_unequal_batches_is_an_optimal_transport_plan(n, m):
    x0, x1 = _clouds(n + m, n, m)
    res = plan(x0, x1, "exact")
    assert res.assignment is None
    torch.testing.assert_close(res.plan.sum(-1), torch.full((n,), 1.0 / n, dtype=torch.float64))
    torch.testing.assert_close(res.plan.sum(-2), torch.full((m,), 1.0 / m, dtype=torch.float64))
    assert float(res.value) == pytest.approx(_emd_value(res.cost), rel=1e-6)


def test_group_dims_solve_each_minibatch_like_a_single_call():
    x0, x1 = _clouds(6, 16, 16, groups=(3, 2))
    grouped = plan(x0, x1, "exact", group_dims=2)
    assert grouped.plan.shape == (3, 2, 16, 16) and grouped.assignment.shape == (3, 2, 16)
    for g in range(3):
        for h in range(2):
            single = plan(x0[g, h], x1[g, h], "exact")
            assert float(grouped.value[g, h]) == pytest.approx(float(single.value), rel=1e-9)
            assert float(grouped.value[g, h]) == pytest.approx(_emd_value(single.cost), rel=1e-6)
    entropic = plan(x0, x1, "sinkhorn", eps=1.0, group_dims=2)
    torch.testing.assert_close(entropic.plan[1, 0], plan(x0[1, 0], x1[1, 0], "sinkhorn", eps=1.0).plan)


def test_images_are_flattened_for_the_cost():
    gen = torch.Generator().manual_seed(7)
    x0, x1 = torch.randn(10, 3, 4, 4, generator=gen), torch.randn(10, 3, 4, 4, generator=gen)
    res = plan(x0, x1)
    torch.testing.assert_close(res.cost, torch.cdist(x0.flatten(1), x1.flatten(1)) ** 2, rtol=1e-4, atol=1e-4)
    a, b = OTPlanSampler("exact").sample_plan(x0, x1)
    assert a.shape == x0.shape and b.shape == x1.shape


@pytest.mark.parametrize("shift", [0.0, 0.3, 1e3])
def test_float32_squared_distances_are_accurate_near_and_far_from_the_origin(shift):
    """Points near the origin go straight into the product; points far from it (1e3 here, against a spread of
    about 1) are centred first, without which float32's |x|^2 + |y|^2 - 2<x, y> would lose every digit."""
    from otkit.couplings import squared_distances

    gen = torch.Generator().manual_seed(12)
    x0, x1 = torch.randn(3, 50, 8, generator=gen) + shift, torch.randn(3, 40, 8, generator=gen) + shift + 0.5
    exact = torch.cdist(x0.double(), x1.double()) ** 2
    cost = squared_distances(x0, x1, group_dims=1)
    assert cost.dtype == torch.float32
    torch.testing.assert_close(cost.double(), exact, rtol=1e-5, atol=1e-5 * float(exact.mean()))


def test_entropic_plan_equals_otkit_sinkhorn_and_torchcfm():
    x0, x1 = _clouds(8, 24, 24)
    ours = OTPlanSampler("sinkhorn", reg=0.05, normalize_cost=True, tol=1e-9, max_iter=5000)
    cost = torch.cdist(x0, x1) ** 2
    reference = otkit.sinkhorn(cost / cost.max(), eps=0.05, tol=1e-9, max_iter=5000).plan
    torch.testing.assert_close(ours.get_map(x0, x1), reference, rtol=1e-6, atol=1e-9)
    theirs = torchcfm_ot.OTPlanSampler("sinkhorn", reg=0.05, normalize_cost=True)
    np.testing.assert_allclose(ours.get_map(x0, x1).numpy(), theirs.get_map(x0, x1), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("method", ["unbalanced", "partial"])
def test_unbalanced_and_partial_match_torchcfm(method):
    x0, x1 = _clouds(9, 20, 20)
    ours = OTPlanSampler(method, reg=0.1, reg_m=0.5, normalize_cost=True, tol=1e-10, max_iter=5000).get_map(x0, x1)
    theirs = torchcfm_ot.OTPlanSampler(method, reg=0.1, reg_m=0.5, normalize_cost=True).get_map(x0, x1)
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-3, atol=1e-7)


def test_sampled_pairs_follow_the_plan():
    x0, x1 = _clouds(10, 4, 5)
    coupling = plan(x0, x1, "sinkhorn", eps=2.0)
    gen = torch.Generator().manual_seed(0)
    draws = 40000
    i, j = coupling.sample(draws, generator=gen)
    counts = torch.bincount(i * 5 + j, minlength=20).double()
    expected = coupling.plan.flatten() * draws
    assert chisquare(counts.numpy(), expected.numpy() * draws / expected.sum().item()).pvalue > 1e-3
    exact = plan(*_clouds(11, 6, 6), "exact")
    i, j = exact.sample(6000, generator=gen)
    assert torch.equal(j, exact.assignment[i])
    assert chisquare(torch.bincount(i, minlength=6).numpy()).pvalue > 1e-3
    i, j = exact.sample(6, replace=False, generator=gen)
    assert sorted(i.tolist()) == list(range(6))


def test_sampler_methods_return_tensors_on_the_inputs_device():
    x0, x1 = _clouds(12, 16, 16)
    y0, y1 = torch.arange(16), torch.arange(16) + 100
    sampler = OTPlanSampler("exact")
    pi = sampler.get_map(x0, x1)
    assert isinstance(pi, torch.Tensor) and pi.shape == (16, 16)
    i, j = sampler.sample_map(pi, 16, replace=False)
    assert torch.equal(pi[i, j] > 0, torch.ones(16, dtype=torch.bool))
    a, b, la, lb = sampler.sample_plan_with_labels(x0, x1, y0, y1)
    assert torch.equal(a, x0[la]) and torch.equal(b, x1[lb - 100])
    assert sampler.sample_plan_with_labels(x0, x1)[2:] == (None, None)
    traj = sampler.sample_trajectory(torch.stack([x0, x1, x0 + 1.0], dim=1))
    assert traj.shape == (16, 3, 2)
    cost = ((traj[:, 0] - traj[:, 1]) ** 2).sum(-1).mean()
    assert float(cost) == pytest.approx(_emd_value(torch.cdist(x0, x1) ** 2), rel=1e-6)


def test_bad_input_raises_with_a_message():
    x0, x1 = _clouds(13, 8, 8)
    with pytest.raises(ValueError, match="Unknown method"):
        OTPlanSampler("greedy")
    with pytest.raises(ValueError, match="reg"):
        OTPlanSampler("sinkhorn", reg=0.0)
    with pytest.raises(ValueError, match="method must be one of"):
        plan(x0, x1, "emd")
    with pytest.raises(ValueError, match="same shape"):
        plan(x0, x1[:, :1])
    with pytest.raises(ValueError, match="group dims"):
        plan(x0[None], x1[None].expand(2, 8, 2), group_dims=1)
    with pytest.raises(ValueError, match="NaN"):
        plan(x0.clone().fill_(float("nan")), x1)
    with pytest.raises(ValueError, match="lcm"):
        plan(torch.randn(4099, 2), torch.randn(4097, 2))
    with pytest.raises(ValueError, match="takes no eps"):
        plan(x0, x1, "exact", eps=0.1)
    with pytest.raises(ValueError, match="unbalanced"):
        plan(x0, x1, "sinkhorn", rho_a=1.0)
    with pytest.raises(ValueError, match="square"):
        linear_assignment(torch.rand(3, 4))
    with pytest.raises(ValueError, match="batch_size"):
        plan(x0, x1).sample(0)
    with pytest.raises(ValueError, match="without replacement"):
        plan(x0, x1).sample(9, replace=False)
    with pytest.raises(ValueError, match="pi must be"):
        OTPlanSampler("exact").sample_map(torch.zeros(3, 3), 2)
    assert isinstance(plan(x0, x1), Coupling)
