"""otkit.gromov_wasserstein_points: the streamed low-rank path equals the matrix path (plans, values, gradients)."""

from __future__ import annotations

import pytest
import torch

import otkit
from otkit.geometry import tiles as _tiles

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")
SETTINGS = dict(eps=0.1, outer_tol=1e-9, tol=1e-11, max_iter=5000, max_outer=1000)


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of 64 entries, at most 8 columns wide: every product spans several row and column blocks."""
    monkeypatch.setattr(_tiles, "TILE_ENTRIES", 64)
    monkeypatch.setattr(_tiles, "COL_BLOCK", 8)


def _clouds(seed=0, n=12, m=9):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(2, n, 2, generator=gen, dtype=F64)
    y = torch.rand(2, m, 3, generator=gen, dtype=F64) + 2.0  # far from x and from the origin
    a = torch.rand(2, n, generator=gen, dtype=F64) + 0.5
    b = torch.rand(2, m, generator=gen, dtype=F64) + 0.5
    u, v = torch.rand(2, n, 4, generator=gen, dtype=F64), torch.rand(2, m, 4, generator=gen, dtype=F64)
    return x, y, a / a.sum(-1, keepdim=True), b / b.sum(-1, keepdim=True), u, v


@pytest.mark.parametrize("fused", [False, True])
def test_streamed_points_equal_the_matrix_solve(fused, small_tiles):
    """float64, a batch of 2 with d = 2 against d' = 3: plans to 1e-12, values and distances to 1e-11, and the
    gradients in the points (and features, weights) to 1e-10, against otkit.gromov_wasserstein on the matrices."""
    x, y, a, b, u, v = _clouds()
    leaves = [t.clone().requires_grad_() for t in (x, y, a, b, u, v)]
    px, py, pa, pb, pu, pv = leaves
    extra = dict(features=(pu, pv), alpha=0.4) if fused else {}
    streamed = otkit.gromov_wasserstein_points(px, py, pa, pb, **SETTINGS, **extra)
    assert streamed.solution.storage == "streaming" and bool(streamed.converged.all())
    copies = [t.clone().requires_grad_() for t in (x, y, a, b, u, v)]
    mx, my, ma, mb, mu, mv = copies
    extra = dict(M=torch.cdist(mu, mv) ** 2, alpha=0.4) if fused else {}
    matrix = otkit.gromov_wasserstein(torch.cdist(mx, mx) ** 2, torch.cdist(my, my) ** 2, ma, mb, **SETTINGS, **extra)
    torch.testing.assert_close(streamed.plan, matrix.plan, atol=1e-12, rtol=0)
    torch.testing.assert_close(streamed.value, matrix.value, atol=1e-11, rtol=1e-11)
    torch.testing.assert_close(streamed.distance, matrix.distance, atol=1e-11, rtol=1e-11)
    count = 6 if fused else 4
    grads = torch.autograd.grad(streamed.value.sum(), leaves[:count])
    expected = torch.autograd.grad(matrix.value.sum(), copies[:count])
    for k, (got, want) in enumerate(zip(grads, expected, strict=True)):
        if k in (2, 3):  # weights: the potentials' common shift is free, compare along mass-preserving changes
            got, want = got - got.mean(-1, keepdim=True), want - want.mean(-1, keepdim=True)
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-8)


def test_dense_storage_equals_streaming():
    x, y, a, b, _, _ = _clouds(seed=1)
    streamed = otkit.gromov_wasserstein_points(x, y, a, b, **SETTINGS)
    dense = otkit.gromov_wasserstein_points(x, y, a, b, storage="dense", **SETTINGS)
    assert dense.solution.storage == "dense"
    torch.testing.assert_close(dense.plan, streamed.plan, atol=1e-13, rtol=0)
    torch.testing.assert_close(dense.value, streamed.value, atol=1e-12, rtol=1e-12)


def test_float32_points_agree_with_float64():
    """The default float32 path (unit-square clouds, eps 0.1) gives the float64 distance to 1e-4 relative."""
    gen = torch.Generator().manual_seed(2)
    x, y = torch.rand(60, 2, generator=gen, dtype=F64), torch.rand(40, 3, generator=gen, dtype=F64)
    low = otkit.gromov_wasserstein_points(x.float(), y.float(), eps=0.1)
    high = otkit.gromov_wasserstein_points(x, y, eps=0.1)
    assert low.plan.dtype == torch.float32 and bool(low.converged) and bool(high.converged)
    torch.testing.assert_close(low.distance.double(), high.distance, rtol=1e-4, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(x=torch.rand(5)), r"x must have shape \(..., points, dim\)"),
        (dict(y=torch.ones(4, 2, dtype=torch.int64)), "y must be a floating tensor"),
        (dict(y=torch.full((4, 2), float("inf"))), "y contains NaN or Inf"),
        (dict(x=torch.rand(2, 5, 2), y=torch.rand(3, 4, 2)), "do not broadcast"),
        (dict(features=(torch.rand(5, 3), torch.rand(4, 2))), "features must have shapes"),
        (dict(features=torch.rand(5, 3)), "features must be a pair"),
        (dict(alpha=0.3), "alpha=0.3 weights the structure term"),
        (dict(outer_tol=-1.0), "outer_tol must be None"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, message):
    args = dict(x=torch.rand(5, 2), y=torch.rand(4, 3))
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        otkit.gromov_wasserstein_points(**args)
