"""otkit.sinkhorn_points: streamed == dense == otkit.sinkhorn, the plan operator, envelope gradients, POT, errors."""

from __future__ import annotations

import pytest
import torch

import otkit
from otkit import SinkhornOptions
from otkit.geometry import tiles as _tiles
from tests.conftest import random_clouds

F64 = torch.float64
COSTS = ["sqeuclidean", "euclidean", "cosine", "dot"]
RELAXATIONS = [(None, None), (0.5, None), (0.7, 1.3)]
pytestmark = pytest.mark.usefixtures("one_thread")


def _clouds(batch=(2,), n=37, m=29, d=3, seed=0):
    return random_clouds(batch, n, m, d, seed)


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of 256 entries, at most 16 columns wide: every product spans several row and column blocks."""
    monkeypatch.setattr(_tiles, "TILE_ENTRIES", 256)
    monkeypatch.setattr(_tiles, "COL_BLOCK", 16)


def _options(cost, relax=(None, None), **kw):
    eps = 0.5 if cost == "dot" else 0.1
    return SinkhornOptions(eps=eps, rho_a=relax[0], rho_b=relax[1], max_iter=5000, tol=1e-12, **kw)


@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("relax", RELAXATIONS)
def test_streamed_and_dense_equal_sinkhorn_on_the_cost_matrix(cost, relax, small_tiles):
    """float64: the plan, potentials and value agree with otkit.sinkhorn on pairwise_cost(x, y) to 1e-9."""
    x, y, a, b = _clouds()
    a[0, 3] = 0  # a zero weight: an empty row
    a = a / a.sum(-1, keepdim=True)
    options = _options(cost, relax)
    ref = otkit.sinkhorn(otkit.pairwise_cost(x, y, cost), a, b, options=options.replace(domain="log"))
    for storage in ("dense", "streaming"):
        res = otkit.sinkhorn_points(x, y, a, b, cost=cost, options=options, storage=storage)
        assert res.storage == storage and bool(res.converged.all())
        torch.testing.assert_close(res.plan, ref.plan, rtol=1e-9, atol=1e-14)
        torch.testing.assert_close(res.value, ref.value, rtol=1e-9, atol=1e-12)
        if relax != (None, None):  # unbalanced potentials are unique
            torch.testing.assert_close(res.g, ref.g, rtol=1e-8, atol=1e-10)


def test_streamed_equals_dense_to_1e6_with_annealing_and_batch_dims(small_tiles):
    """Both storages run the same iterations: equal iterates after a fixed annealed run, batch (2, 3)."""
    x, y, a, b = _clouds(batch=(2, 3), n=19, m=23)
    options = SinkhornOptions(eps=0.05, max_iter=3, tol=None)
    dense = otkit.sinkhorn_points(x, y, a, b, options=options, scaling=0.7, storage="dense")
    streamed = otkit.sinkhorn_points(x, y, a, b, options=options, scaling=0.7, storage="streaming")
    assert dense.n_iter == streamed.n_iter > 3 and dense.f.shape == (2, 3, 19)
    for name in ("f", "g", "value"):
        torch.testing.assert_close(getattr(streamed, name), getattr(dense, name), rtol=1e-6, atol=1e-9)


def test_annealing_reaches_the_same_optimum_in_fewer_iterations():
    x, y, a, b = _clouds(n=60, m=50, d=2)
    options = SinkhornOptions(eps=0.003, max_iter=20000, tol=1e-10)
    plain = otkit.sinkhorn_points(x, y, a, b, options=options)
    annealed = otkit.sinkhorn_points(x, y, a, b, options=options, scaling=0.7)
    torch.testing.assert_close(annealed.value, plain.value, rtol=1e-8, atol=0)
    assert annealed.n_iter < plain.n_iter
    warm = otkit.sinkhorn_points(x, y, a, b, options=options, init=(plain.f, plain.g))
    assert warm.n_iter <= options.check_every


@pytest.mark.parametrize("storage", ["dense", "streaming"])
def test_plan_operator_equals_the_dense_plan(storage, small_tiles):
    x, y, a, b = _clouds()
    res = otkit.sinkhorn_points(x, y, a, b, options=_options("sqeuclidean", (0.5, None)), storage=storage)
    plan = res.plan  # (2, 37, 29)
    gen = torch.Generator().manual_seed(3)
    v, u = torch.randn(2, 29, generator=gen, dtype=F64), torch.randn(2, 37, 4, generator=gen, dtype=F64)
    torch.testing.assert_close(res.apply(v), (plan @ v.unsqueeze(-1)).squeeze(-1), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(res.apply(u, transpose=True), plan.transpose(-1, -2) @ u, rtol=1e-12, atol=1e-15)
    rows, cols = res.marginals()
    torch.testing.assert_close(rows, plan.sum(-1), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(cols, plan.sum(-2), rtol=1e-12, atol=1e-15)
    assert max(float(e.max()) for e in res.marginal_error) < 1e-9
    bary = (plan @ y) / plan.sum(-1, keepdim=True)
    torch.testing.assert_close(res.barycentric_map(), bary, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(res.barycentric_map(x[:, :5]), bary[:, :5], rtol=1e-10, atol=1e-12)


def test_apply_is_differentiable_in_the_vectors():
    x, y, a, b = _clouds(batch=(), n=9, m=7)
    res = otkit.sinkhorn_points(x, y, a, b, options=_options("sqeuclidean"), storage="streaming")
    v = torch.randn(7, 2, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: res.apply(t), (v,))


@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("storage", ["dense", "streaming"])
@pytest.mark.parametrize("relax", [(None, None), (0.6, 0.9)])
def test_value_gradients_match_finite_differences(cost, storage, relax):
    """Envelope gradients in x, y, a, b; balanced weights move along directions that keep the masses equal."""
    x, y, a, b = _clouds(batch=(), n=11, m=8, d=2)
    options = _options(cost, relax)
    inputs = [t.clone().requires_grad_() for t in (x, y, a, b)]
    otkit.sinkhorn_points(*inputs, cost=cost, options=options, storage=storage).value.backward()
    gen = torch.Generator().manual_seed(5)
    dirs = [torch.randn(t.shape, generator=gen, dtype=F64) for t in (x, y, a, b)]
    if relax == (None, None):
        dirs[2], dirs[3] = dirs[2] - dirs[2].mean(), dirs[3] - dirs[3].mean()
    h = 1e-6

    def value(sign):
        moved = [t + sign * h * dt for t, dt in zip((x, y, a, b), dirs, strict=True)]
        return otkit.sinkhorn_points(*moved, cost=cost, options=options, storage=storage).value

    numeric = (value(1) - value(-1)) / (2 * h)
    analytic = sum((t.grad * dt).sum() for t, dt in zip(inputs, dirs, strict=True))
    torch.testing.assert_close(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_callable_cost_and_its_limits():
    x, y, a, b = _clouds(batch=(), n=12, m=10)
    l1 = lambda p, q: (p.unsqueeze(-2) - q.unsqueeze(-3)).abs().sum(-1)  # noqa: E731
    res = otkit.sinkhorn_points(x, y, a, b, cost=l1, options=_options("l1"))
    ref = otkit.sinkhorn(l1(x, y), a, b, options=_options("l1"))
    assert res.storage == "dense"
    torch.testing.assert_close(res.plan, ref.plan, rtol=1e-9, atol=1e-14)
    with pytest.raises(ValueError, match="callable cost can only be stored densely"):
        otkit.sinkhorn_points(x, y, cost=l1, storage="streaming")
    with pytest.raises(ValueError, match="must return a tensor of shape"):
        otkit.sinkhorn_points(x, y, cost=lambda p, q: p.sum(-1))


def test_matches_pot_solve_sample():
    """ot.solve_sample (reg_type KL, |x - y|^2): the same value and plan; the lazy solver's plan too."""
    ot = pytest.importorskip("ot")
    x, y, a, b = _clouds(batch=(), n=40, m=30)
    eps = 0.5
    res = otkit.sinkhorn_points(x, y, a, b, options=SinkhornOptions(eps=eps, max_iter=5000, tol=1e-13))
    ref = ot.solve_sample(x, y, a, b, reg=eps, max_iter=100000, tol=1e-13)
    torch.testing.assert_close(res.value, torch.as_tensor(ref.value), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(res.plan, torch.as_tensor(ref.plan), rtol=1e-7, atol=1e-12)
    lazy = ot.solve_sample(x, y, a, b, reg=eps, lazy=True, batch_size=7, max_iter=100000, tol=1e-13)
    torch.testing.assert_close(res.plan, torch.as_tensor(lazy.lazy_plan[:]), rtol=1e-7, atol=1e-12)


def test_bad_inputs_are_value_errors_naming_the_argument():
    x, y, a, b = _clouds(batch=(), n=5, m=4)
    with pytest.raises(ValueError, match="x and y must have the same point dimension"):
        otkit.sinkhorn_points(x, y[:, :2])
    bad = x.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN"):
        otkit.sinkhorn_points(bad, y)
    with pytest.raises(ValueError, match="y contains NaN or Inf"):
        otkit.sinkhorn_points(x, y.clone().fill_(float("inf")))
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        otkit.sinkhorn_points(x, y, options=SinkhornOptions(eps=0.0))
    with pytest.raises(ValueError, match="a must have last dim n = 5"):
        otkit.sinkhorn_points(x, y, a[:4])
    with pytest.raises(ValueError, match="different total masses"):
        otkit.sinkhorn_points(x, y, a, 2 * b)
    with pytest.raises(ValueError, match="storage must be"):
        otkit.sinkhorn_points(x, y, storage="gpu")
    with pytest.raises(ValueError, match="scaling must be None"):
        otkit.sinkhorn_points(x, y, scaling=1.5)
    with pytest.raises(ValueError, match="cost must be one of"):
        otkit.sinkhorn_points(x, y, cost="l2")
    with pytest.raises(ValueError, match="log domain"):
        otkit.sinkhorn_points(x, y, options=SinkhornOptions(domain="kernel"))
    with pytest.raises(ValueError, match="max_iter must be >= 1"):
        otkit.sinkhorn_points(x, y, options=SinkhornOptions(max_iter=0))
    with pytest.raises(ValueError, match="exceeds 1e\\+05"):
        otkit.sinkhorn_points(x.float() * 1e3, y.float(), options=SinkhornOptions(eps=1e-3))
    with pytest.warns(otkit.ConvergenceWarning, match="did not reach tol"):
        otkit.sinkhorn_points(x, y, options=SinkhornOptions(eps=1e-3, max_iter=2, tol=1e-9))
