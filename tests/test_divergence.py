"""otkit.sinkhorn_divergence against geomloss and POT, its properties, gradients and errors.

Conventions (stated in otkit.sinkhorn_divergence): geomloss's ``p=2`` cost is ``|x - y|^2 / 2`` with
``eps = blur^2``, so ours with ``"sqeuclidean"`` and ``eps`` is twice geomloss's loss at ``blur = sqrt(eps / 2)``
(``reach = sqrt(rho / 2)``); geomloss's schedule stops after one sweep, so a slow ``scaling`` (0.999) stands for
its converged value.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import otkit
from tests.conftest import random_clouds

F64 = torch.float64
EPS = 0.05
CONVERGED = dict(tol=1e-13, max_iter=10000)
pytestmark = pytest.mark.usefixtures("one_thread")


def _clouds(n=50, m=40, d=2, seed=0, batch=()):
    return random_clouds(batch, n, m, d, seed)


def _geomloss(scaling, rho=None, p=2, debias=True):
    geomloss = pytest.importorskip("geomloss")
    blur = math.sqrt(EPS / 2) if p == 2 else EPS
    reach = None if rho is None else (math.sqrt(rho / 2) if p == 2 else rho)
    loss = geomloss.SamplesLoss(
        "sinkhorn", p=p, blur=blur, reach=reach, scaling=scaling, debias=debias, backend="tensorized"
    )
    return (lambda *args: 2 * loss(*args)) if p == 2 else loss


def _with_grads(fn, *inputs):
    leaves = [t.clone().requires_grad_() for t in inputs]
    value = fn(*leaves)
    value.backward()
    return value.detach(), [t.grad for t in leaves]


def _centred(g):
    return g - g.mean(-1, keepdim=True)


@pytest.mark.parametrize("debias", [True, False])
def test_value_and_gradients_match_geomloss(debias):
    """Balanced: values to 1e-6, gradients in x, y to 1e-3 and in the weights (up to a constant) to 1e-3."""
    x, y, a, b = _clouds()
    ours, (gx, gy, ga, gb) = _with_grads(
        lambda x, y, a, b: otkit.sinkhorn_divergence(x, y, a, b, eps=EPS, debias=debias, **CONVERGED).value,
        x,
        y,
        a,
        b,
    )
    ref, (rx, ry, ra, rb) = _with_grads(lambda x, y, a, b: _geomloss(0.999, debias=debias)(a, x, b, y), x, y, a, b)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=0)
    for mine, theirs in ((gx, rx), (gy, ry), (_centred(ga), _centred(ra)), (_centred(gb), _centred(rb))):
        assert float((mine - theirs).norm() / theirs.norm()) < 1e-3


def test_annealing_matches_geomloss_and_converges_to_the_same_divergence():
    """With geomloss's schedule and one iteration at eps after it (max_iter=1) ours runs geomloss's loop (averaged
    sweep, then its extrapolation) and equals its value to float64 rounding; with tol, annealing does not change
    the fixed point."""
    x, y, a, b = _clouds(seed=1)
    converged = otkit.sinkhorn_divergence(x, y, a, b, eps=EPS, scaling=None, **CONVERGED).value
    annealed = otkit.sinkhorn_divergence(x, y, a, b, eps=EPS, scaling=0.9, **CONVERGED).value
    torch.testing.assert_close(annealed, converged, rtol=1e-10, atol=0)
    one_sweep = otkit.sinkhorn_divergence(x, y, a, b, eps=EPS, scaling=0.9, max_iter=1, tol=None).value
    torch.testing.assert_close(one_sweep, _geomloss(0.9)(a, x, b, y), rtol=1e-12, atol=0)
    assert abs(float(one_sweep - converged)) < 2e-3 * float(converged)


@pytest.mark.parametrize("rho", [0.5, 2.0])
def test_unbalanced_value_matches_geomloss_with_its_mass_term(rho):
    """geomloss adds eps (m_a - m_b)^2 / 2 (in its units) to unbalanced divergences; ours is the plain
    OT(a, b) - OT(a, a) / 2 - OT(b, b) / 2. Unequal masses on purpose."""
    x, y, a, b = _clouds(seed=2)
    b = 1.5 * b
    ours = otkit.sinkhorn_divergence(x, y, a, b, eps=EPS, rho=rho, **CONVERGED).value
    ref = _geomloss(0.999, rho=rho)(a, x, b, y)
    mass_term = EPS * (a.sum() - b.sum()) ** 2 / 2  # twice geomloss's eps/2 (m_a - m_b)^2 at its eps = EPS / 2
    torch.testing.assert_close(ours, ref - mass_term, rtol=1e-5, atol=0)


def test_euclidean_cost_matches_geomloss_p1():
    """geomloss's p=1 is |x - y| with blur = eps, but it floors squared distances at 1e-8 (distances at 1e-4):
    ours with that cost as a callable agrees; the plain "euclidean" cost differs by that floor's effect."""
    x, y, a, b = _clouds(seed=3)
    ref = _geomloss(0.999, p=1)(a, x, b, y)
    floored = lambda p, q: torch.cdist(p, q).square().clamp_min(1e-8).sqrt()  # noqa: E731
    ours = otkit.sinkhorn_divergence(x, y, a, b, eps=EPS, cost=floored, **CONVERGED).value
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=0)
    plain = otkit.sinkhorn_divergence(x, y, a, b, eps=EPS, cost="euclidean", storage="streaming", **CONVERGED).value
    torch.testing.assert_close(plain, ref, rtol=1e-3, atol=0)


@pytest.mark.parametrize("rho", [None, 0.7])
@pytest.mark.parametrize("cost", ["sqeuclidean", "cosine"])
def test_gradients_match_finite_differences(rho, cost):
    """All four inputs at once; balanced weights move along directions that keep the masses equal."""
    x, y, a, b = _clouds(n=13, m=11, seed=4)

    def div(x, y, a, b):
        return otkit.sinkhorn_divergence(x, y, a, b, eps=0.1, rho=rho, cost=cost, **CONVERGED).value

    _, grads = _with_grads(div, x, y, a, b)
    gen = torch.Generator().manual_seed(6)
    dirs = [torch.randn(t.shape, generator=gen, dtype=F64) for t in (x, y, a, b)]
    if rho is None:
        dirs[2], dirs[3] = _centred(dirs[2]), _centred(dirs[3])
    h = 1e-6
    moved = [[t + s * h * dt for t, dt in zip((x, y, a, b), dirs, strict=True)] for s in (1, -1)]
    numeric = (div(*moved[0]) - div(*moved[1])) / (2 * h)
    analytic = sum((g * dt).sum() for g, dt in zip(grads, dirs, strict=True))
    torch.testing.assert_close(analytic, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("rho", [None, 1.0])
def test_nonnegative_and_zero_for_identical_clouds(rho):
    for seed in range(4):
        x, y, a, b = _clouds(n=30, m=30, seed=seed, batch=(2,))
        assert bool((otkit.sinkhorn_divergence(x, y, a, b, eps=EPS, rho=rho, **CONVERGED).value >= 0).all())
    same = x.clone().requires_grad_()
    value = otkit.sinkhorn_divergence(same, x, a, a, eps=EPS, rho=rho, **CONVERGED).value
    value.sum().backward()
    assert float(value.detach().abs().max()) < 1e-12 and float(same.grad.abs().max()) < 1e-10


def test_streamed_equals_dense_to_1e6(monkeypatch):
    """float64, batch of 3, tiles much smaller than the problem: values and gradients agree."""
    from otkit.geometry import tiles as _tiles

    monkeypatch.setattr(_tiles, "TILE_ENTRIES", 512)
    monkeypatch.setattr(_tiles, "COL_BLOCK", 32)
    x, y, a, b = _clouds(n=70, m=45, batch=(3,))
    results = [
        _with_grads(
            lambda x, y, a, b, s=storage: otkit.sinkhorn_divergence(
                x, y, a, b, eps=EPS, scaling=0.8, storage=s, tol=1e-10
            ).value.sum(),
            x,
            y,
            a,
            b,
        )
        for storage in ("dense", "streaming")
    ]
    (dense, dense_grads), (streamed, streamed_grads) = results
    torch.testing.assert_close(streamed, dense, rtol=1e-6, atol=1e-12)
    for g_streamed, g_dense in zip(streamed_grads, dense_grads, strict=True):
        torch.testing.assert_close(g_streamed, g_dense, rtol=1e-6, atol=1e-10)


def test_pot_empirical_divergence_is_the_linear_part_of_ours():
    """POT's empirical_sinkhorn_divergence returns <P_ab, C> - (<P_aa, C> + <P_bb, C>) / 2 at the entropic plans
    (no entropic terms): the same number from otkit's plan operators."""
    ot = pytest.importorskip("ot")
    x, y, a, b = _clouds(n=30, m=25, seed=5)
    options = otkit.SinkhornOptions(eps=EPS, **CONVERGED)

    def linear(p, q, wp, wq):
        res = otkit.sinkhorn_points(p, q, wp, wq, options=options)
        return (res.plan * otkit.pairwise_cost(p, q)).sum()

    ours = linear(x, y, a, b) - 0.5 * (linear(x, x, a, a) + linear(y, y, b, b))
    ref = ot.bregman.empirical_sinkhorn_divergence(x, y, EPS, a, b, numIterMax=100000, stopThr=1e-13)
    torch.testing.assert_close(ours, torch.as_tensor(ref).reshape(()), rtol=1e-7, atol=1e-12)


def test_bad_inputs_are_value_errors_naming_the_argument():
    x, y, a, b = _clouds(n=6, m=5)
    with pytest.raises(ValueError, match="x and y must have the same point dimension"):
        otkit.sinkhorn_divergence(x, torch.rand(5, 3, dtype=F64))
    bad = y.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="y contains NaN"):
        otkit.sinkhorn_divergence(x, bad)
    for eps in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="eps must be"):
            otkit.sinkhorn_divergence(x, y, eps=eps)
    with pytest.raises(ValueError, match="rho must be > 0"):
        otkit.sinkhorn_divergence(x, y, rho=-1.0)
    with pytest.raises(ValueError, match="b has negative entries"):
        otkit.sinkhorn_divergence(x, y, a, -b)
    with pytest.raises(ValueError, match="debias must be True or False"):
        otkit.sinkhorn_divergence(x, y, debias="yes")
    with pytest.raises(ValueError, match="max_iter must be >= 1"):
        otkit.sinkhorn_divergence(x, y, max_iter=0)


@pytest.mark.parametrize("eps", [0.02])
def test_defaults_converge_at_the_eps_users_pass_to_the_converged_value(eps):
    """300 points in the unit cube, float32, every setting at its default: no ConvergenceWarning, neither for the
    self term alone (x against x) nor for two clouds, and the value of a float64 solve run to tol 1e-12."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(300, 3, generator=gen), torch.rand(300, 3, generator=gen) * 0.8 + 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("error", otkit.ConvergenceWarning)
        itself = otkit.sinkhorn_divergence(x, x, eps=eps)
        res = otkit.sinkhorn_divergence(x, y, eps=eps)
    assert bool(itself.converged) and bool(res.converged) and abs(float(itself.value)) < 1e-6
    ref = otkit.sinkhorn_divergence(x.double(), y.double(), eps=eps, scaling=None, tol=1e-12, max_iter=20000)
    assert bool(ref.converged)
    torch.testing.assert_close(res.value.double(), ref.value, rtol=1e-5, atol=0)
