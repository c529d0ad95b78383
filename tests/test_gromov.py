"""otkit.gromov_wasserstein: equal to POT's entropic (fused) GW, batched, isometries, envelope gradients, errors."""

from __future__ import annotations

import warnings

import numpy as np
import ot
import pytest
import torch

import otkit

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")
# Tight tolerances: the fixed point is then resolved to about 1e-12, and the comparisons below are on it.
TIGHT = dict(max_outer=3000, outer_tol=1e-11, tol=1e-12, max_iter=10000)


def _spaces(n=10, m=8, seed=0, batch=()):
    """Squared-distance matrices of random clouds in 2-D and 3-D and random positive weights."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(*batch, n, 2, generator=gen, dtype=F64)
    y = torch.rand(*batch, m, 3, generator=gen, dtype=F64)
    a = torch.rand(*batch, n, generator=gen, dtype=F64) + 0.5
    b = torch.rand(*batch, m, generator=gen, dtype=F64) + 0.5
    return torch.cdist(x, x) ** 2, torch.cdist(y, y) ** 2, a / a.sum(-1, keepdim=True), b / b.sum(-1, keepdim=True)


def _pot_options():
    return dict(log=True, max_iter=3000, tol=1e-13, numItermax=10000, stopThr=1e-13)


@pytest.mark.parametrize("loss", ["square", "kl"])
def test_gw_equals_pot_entropic_gromov_wasserstein(loss):
    """Plans to 1e-10 (entries about 1e-2) and distances to 1e-10 relative: the same fixed point as POT's PGD."""
    Cx, Cy, a, b = _spaces()
    if loss == "kl":
        Cx, Cy = torch.exp(-Cx), torch.exp(-Cy)
    res = otkit.gromov_wasserstein(Cx, Cy, a, b, 0.1, loss=loss, **TIGHT)
    plan, log = ot.gromov.entropic_gromov_wasserstein(
        Cx.numpy(), Cy.numpy(), a.numpy(), b.numpy(), loss_fun=f"{loss}_loss", epsilon=0.1, **_pot_options()
    )
    assert bool(res.converged)
    np.testing.assert_allclose(res.plan.numpy(), plan, atol=1e-10)
    np.testing.assert_allclose(float(res.distance), log["gw_dist"], rtol=1e-10)
    rows, cols = res.plan.sum(-1), res.plan.sum(-2)
    assert torch.allclose(rows, a, atol=1e-11) and torch.allclose(cols, b, atol=1e-11)


@pytest.mark.parametrize("alpha", [0.3, 0.8])
def test_fused_gw_equals_pot_entropic_fused_gromov_wasserstein(alpha):
    """alpha weights the structure term as in POT; plans to 1e-10, distances to 1e-10 relative."""
    Cx, Cy, a, b = _spaces(seed=1)
    M = torch.rand(10, 8, dtype=F64)
    res = otkit.gromov_wasserstein(Cx, Cy, a, b, 0.05, M=M, alpha=alpha, **TIGHT)
    plan, log = ot.gromov.entropic_fused_gromov_wasserstein(
        M.numpy(), Cx.numpy(), Cy.numpy(), a.numpy(), b.numpy(), epsilon=0.05, alpha=alpha, **_pot_options()
    )
    np.testing.assert_allclose(res.plan.numpy(), plan, atol=1e-10)
    np.testing.assert_allclose(float(res.distance), log["fgw_dist"], rtol=1e-10)


def test_asymmetric_matrices_equal_pot():
    """Directed costs: the gradient uses both orientations, as POT's symmetric=False."""
    Cx, Cy, a, b = _spaces(seed=2)
    Cx = Cx + 0.3 * torch.rand(10, 10, dtype=F64)
    res = otkit.gromov_wasserstein(Cx, Cy, a, b, 0.1, **TIGHT)
    plan, log = ot.gromov.entropic_gromov_wasserstein(
        Cx.numpy(), Cy.numpy(), a.numpy(), b.numpy(), epsilon=0.1, **_pot_options()
    )
    np.testing.assert_allclose(res.plan.numpy(), plan, atol=1e-10)
    np.testing.assert_allclose(float(res.distance), log["gw_dist"], rtol=1e-10)


def test_batched_solve_equals_per_problem_solves():
    """A (2, 2) batch with shared Cy and a per-problem feature cost: every problem equals its own solve to 1e-9."""
    Cx, _, a, _ = _spaces(batch=(2, 2), seed=3)
    _, Cy, _, b = _spaces(seed=4)
    M = torch.rand(2, 2, 10, 8, dtype=F64)
    options = dict(eps=0.1, M=M, alpha=0.5, max_outer=500, outer_tol=1e-11, tol=1e-12, max_iter=5000)
    res = otkit.gromov_wasserstein(Cx, Cy, a, b, **options)
    assert res.plan.shape == (2, 2, 10, 8) and res.value.shape == (2, 2) and res.errors.shape[1:] == (2, 2)
    for i in range(2):
        for j in range(2):
            one = otkit.gromov_wasserstein(Cx[i, j], Cy, a[i, j], b, **{**options, "M": M[i, j]})
            torch.testing.assert_close(res.plan[i, j], one.plan, atol=1e-9, rtol=0)
            torch.testing.assert_close(res.value[i, j], one.value, atol=1e-9, rtol=1e-9)


def test_proximal_solver_equals_ot_batch_solve_gromov_batch():
    """solver="ppa" is the proximal method of ot.batch.solve_gromov_batch: after the same 10 outer iterations
    (each inner solve converged) the plans agree to 1e-10 and the values to 1e-10, fused, on a batch of 3."""
    Cx, Cy, a, b = _spaces(batch=(3,), seed=11)
    M = torch.rand(3, 10, 8, dtype=F64)
    res = otkit.gromov_wasserstein(
        Cx, Cy, a, b, 0.1, M=M, alpha=0.5, solver="ppa", max_outer=10, outer_tol=None, tol=1e-11, max_iter=10000
    )
    out = ot.batch.solve_gromov_batch(
        Cx, Cy, reg=0.1, a=a, b=b, M=M, alpha=0.5, max_iter=10, tol=0, max_iter_inner=10000, tol_inner=1e-12
    )
    assert res.solver == "ppa" and res.n_outer == 10
    torch.testing.assert_close(res.plan, out.plan, atol=1e-10, rtol=0)
    torch.testing.assert_close(res.distance, out.value, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(res.value, res.distance)


def test_isometric_copy_recovers_the_permutation():
    """A cloud against a rotated, shifted and permuted copy of itself: the plan's row maxima are the permutation."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(30, 3, generator=gen, dtype=F64)
    rotation, _ = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=F64))
    perm = torch.randperm(30, generator=gen)
    y = (x @ rotation.T + 0.5)[perm]
    Cx, Cy = torch.cdist(x, x) ** 2, torch.cdist(y, y) ** 2
    scale = Cx.max()
    res = otkit.gromov_wasserstein(Cx / scale, Cy / scale, eps=0.02, tol=1e-5)
    assert bool(res.converged)
    assert torch.equal(res.plan.argmax(-1), torch.argsort(perm))  # x_i is y_j where perm[j] = i
    assert float(res.distance) < 2e-2


@pytest.mark.parametrize("loss", ["square", "kl"])
def test_value_gradients_match_finite_differences(loss):
    """d value / d (Cx, Cy, M, a, b) by the envelope theorem equals central differences to 1e-6 relative."""
    Cx, Cy, a, b = _spaces(n=7, m=6, seed=6)
    if loss == "kl":
        Cx, Cy = torch.exp(-Cx), torch.exp(-Cy)
    M = torch.rand(7, 6, dtype=F64)
    inputs = [t.clone().requires_grad_() for t in (Cx, Cy, M, a, b)]

    def value(*args):
        cx, cy, cost, wa, wb = args
        return otkit.gromov_wasserstein(cx, cy, wa, wb, 0.1, M=cost, alpha=0.6, loss=loss, **TIGHT).value

    grads = torch.autograd.grad(value(*inputs), inputs)
    gen = torch.Generator().manual_seed(7)
    for k, grad in enumerate(grads):
        direction = torch.randn(inputs[k].shape, generator=gen, dtype=F64)
        if k < 2:
            direction = direction + direction.mT  # keep the matrices symmetric
        if k > 2:
            direction = direction - direction.mean()  # keep the masses equal
        h = 1e-5
        plus = [t.detach() + h * direction if i == k else t.detach() for i, t in enumerate(inputs)]
        minus = [t.detach() - h * direction if i == k else t.detach() for i, t in enumerate(inputs)]
        fd = (value(*plus) - value(*minus)) / (2 * h)
        torch.testing.assert_close((grad * direction).sum(), fd, rtol=1e-6, atol=1e-9)


def test_value_is_the_regularised_objective():
    """value = distance + eps KL(P | a x b), the KL computed from the plan's entries."""
    Cx, Cy, a, b = _spaces(seed=8)
    res = otkit.gromov_wasserstein(Cx, Cy, a, b, 0.1, max_iter=5000, tol=1e-12, outer_tol=1e-10)
    plan = res.plan
    kl = (plan * torch.log(plan / (a[:, None] * b[None]))).sum() - plan.sum() + a.sum() * b.sum()
    torch.testing.assert_close(res.value, res.distance + 0.1 * kl, rtol=1e-10, atol=1e-12)


def test_float32_and_defaults_run_and_report():
    Cx, Cy, _, _ = _spaces(n=30, m=25, seed=9)
    res = otkit.gromov_wasserstein(Cx.float(), Cy.float(), eps=0.05)
    assert res.plan.dtype == torch.float32 and bool(res.converged) and res.n_outer <= 100
    assert res.n_inner >= res.n_outer and res.alpha == 1.0 and res.loss == "square"


def test_float64_starts_in_float32_and_ends_at_the_float64_fixed_point():
    """mixed_precision (the float64 default): float32 iterations, then float64 ones from that plan and its
    potentials; the result is float64's fixed point, equal to a float64-only solve to 1e-11 at tight settings."""
    Cx, Cy, a, b = _spaces(n=12, m=9, seed=12, batch=(3,))
    mixed = otkit.gromov_wasserstein(Cx, Cy, a, b, 0.05, **TIGHT)
    plain = otkit.gromov_wasserstein(Cx, Cy, a, b, 0.05, mixed_precision=False, **TIGHT)
    assert mixed.plan.dtype == F64 and bool(mixed.converged.all()) and bool(plain.converged.all())
    torch.testing.assert_close(mixed.plan, plain.plan, rtol=0, atol=1e-11)
    torch.testing.assert_close(mixed.distance, plain.distance, rtol=1e-10, atol=0)
    # the float32 phase stops at its floor 1e-5; every later change is float64's, down to outer_tol
    float32_steps = int((mixed.errors.amax(1) > 1e-5).sum())
    assert 1 <= float32_steps < mixed.n_outer and bool((mixed.errors[-1] <= 1e-11).all())


@pytest.mark.parametrize("scale", [1e20, 1e-30])
def test_costs_outside_float32_range_run_in_float64_only(scale):
    """Squared distances times 1e40 (their squares overflow float32) or 1e-60 (they vanish in it): the result is
    the float64-only solve's, exactly, and equals the unscaled problem's scaled (GW is homogeneous: distance
    scales by scale^2 when eps does)."""
    Cx, Cy, a, b = _spaces(seed=14)
    unit = otkit.gromov_wasserstein(Cx, Cy, a, b, 0.05, mixed_precision=False)
    scaled = dict(a=a, b=b, eps=0.05 * scale**2)
    mixed = otkit.gromov_wasserstein(Cx * scale, Cy * scale, **scaled)
    plain = otkit.gromov_wasserstein(Cx * scale, Cy * scale, mixed_precision=False, **scaled)
    assert mixed.n_outer == plain.n_outer
    torch.testing.assert_close(mixed.plan, plain.plan, rtol=0, atol=0)
    torch.testing.assert_close(mixed.plan, unit.plan, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(mixed.distance / scale**2, unit.distance, rtol=1e-9, atol=0)


def test_float32_phase_that_overflows_is_dropped(monkeypatch):
    """A float32 phase that raises FloatingPointError leaves the solve to float64 alone: the same result."""
    import otkit.gromov.solve as gromov_solve

    solve_dense = gromov_solve.solve_dense

    def overflowing(cost, *args):
        if cost.dtype == torch.float32:
            raise FloatingPointError("Sinkhorn produced non-finite potentials")
        return solve_dense(cost, *args)

    Cx, Cy, a, b = _spaces(seed=13)
    plain = otkit.gromov_wasserstein(Cx, Cy, a, b, 0.05, mixed_precision=False)
    monkeypatch.setattr(gromov_solve, "solve_dense", overflowing)
    dropped = otkit.gromov_wasserstein(Cx, Cy, a, b, 0.05)
    assert dropped.n_outer == plain.n_outer
    torch.testing.assert_close(dropped.plan, plain.plan, rtol=0, atol=0)


def test_unconverged_outer_loop_warns_once():
    Cx, Cy, _, _ = _spaces(seed=10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = otkit.gromov_wasserstein(Cx, Cy, eps=0.05, max_outer=2, outer_tol=1e-12)
    assert [w.category for w in caught] == [otkit.ConvergenceWarning]
    assert "max_outer=2" in str(caught[0].message) and not bool(res.converged)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(Cx=torch.rand(4, 5)), "Cx must be square"),
        (dict(Cy=torch.rand(3)), "Cy must have at least 2 dims"),
        (dict(M=torch.rand(4, 4)), r"M must have shape \(..., n, m\) = \(..., 4, 3\)"),
        (dict(Cx=torch.rand(2, 4, 4), Cy=torch.rand(3, 3, 3)), "do not broadcast"),
        (dict(a=torch.ones(5) / 5), "a must have last dim n = 4"),
        (dict(b=torch.ones(3)), "different total masses"),
        (dict(loss="l1"), "loss must be one of"),
        (dict(loss="kl", Cx=-torch.rand(4, 4)), "negative entries"),
        (dict(alpha=0.5), "alpha=0.5 weights the structure term"),
        (dict(M=torch.rand(4, 3), alpha=1.5), r"alpha must be a number in \[0, 1\]"),
        (dict(rho_a=1.0), "rho_a and rho_b must be None"),
        (dict(max_outer=0), "max_outer must be an int >= 1"),
        (dict(solver="cg"), "solver must be one of"),
        (dict(init=torch.rand(3, 4)), r"init must be a plan of shape \(..., 4, 3\)"),
        (dict(Cx=torch.full((4, 4), float("nan"))), "Cx contains NaN"),
        (dict(max_itr=3), "unexpected keyword argument"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, message):
    args = dict(Cx=torch.rand(4, 4), Cy=torch.rand(3, 3))
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        otkit.gromov_wasserstein(**args)
