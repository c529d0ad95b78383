"""Barycenters: agreement with POT, batch dims, the debiased barycenter of one input, input checks.

Conventions: otkit's ``eps`` is POT's ``reg`` with the same cost; POT takes histograms as columns
(``A = hists.T``); both solve ``min_b sum_k w_k W_eps(a_k, b)`` with the entropy of the plan itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import otkit

ot = pytest.importorskip("ot")


def _bumps(t: torch.Tensor, centres, width: float = 0.02, floor: float = 0.0) -> torch.Tensor:
    """Normalised Gaussian bumps on the grid ``t``, one per centre: ``(k, n)``."""
    h = torch.stack([torch.exp(-((t - c) ** 2) / width) for c in centres]) + floor
    return h / h.sum(-1, keepdim=True)


@pytest.fixture
def line():
    t = torch.linspace(0, 1, 50, dtype=torch.float64)
    return t, (t[:, None] - t) ** 2


@pytest.mark.parametrize("eps", [0.01, 0.002])
def test_equals_pot_log_barycenter(line, eps):
    t, cost = line
    hists = _bumps(t, (0.2, 0.5, 0.8), floor=1e-3)
    weights = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    res = otkit.sinkhorn_barycenter(hists, cost, weights, eps, tol=1e-10, max_iter=5000)
    ref = ot.bregman.barycenter(
        hists.T.numpy(),
        cost.numpy(),
        eps,
        weights=weights.numpy(),
        method="sinkhorn_log",
        stopThr=1e-12,
        numItermax=20000,
    )
    assert bool(res.converged) and res.barycenter.shape == (50,)
    np.testing.assert_allclose(res.barycenter.numpy(), ref, rtol=0, atol=1e-9 * ref.max())


def test_equals_pot_debiased_barycenter_iterate_by_iterate(line):
    # The debiased projections converge slowly (sublinearly): compare the same number of iterations of both,
    # which run the same iterates (10 steps of the debiasing fixed point per iteration, as POT).
    t, cost = line
    hists = _bumps(t, (0.2, 0.5, 0.8), floor=1e-3)
    weights = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    res = otkit.sinkhorn_barycenter(hists, cost, weights, 0.01, debiased=True, tol=None, max_iter=300)
    ref = ot.bregman.barycenter_debiased(
        hists.T.numpy(),
        cost.numpy(),
        0.01,
        weights=weights.numpy(),
        method="sinkhorn_log",
        stopThr=0.0,
        numItermax=300,
        warn=False,
    )
    assert res.n_iter == 300 and res.debiased
    np.testing.assert_allclose(res.barycenter.numpy(), ref, rtol=1e-10, atol=1e-14)


def test_debiased_barycenter_of_one_input_is_that_input(line):
    # All weight on one input: the debiased barycenter minimises S_eps(a, b) >= 0, which is 0 at b = a, and
    # b = a is an exact fixed point of the projections. The input is a smooth bump, positive everywhere: with
    # zeros the debiasing potential is -inf there and the fixed point is only reached in the limit, and a
    # peaked input needs many more iterations (they grow like range(C) / eps). The plain barycenter is the
    # input blurred by the entropy.
    t, cost = line
    hists = _bumps(t, (0.3, 0.5, 0.8), floor=1e-4)
    weights = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    debiased = otkit.sinkhorn_barycenter(hists, cost, weights, 0.01, debiased=True, tol=1e-7)
    plain = otkit.sinkhorn_barycenter(hists, cost, weights, 0.01, tol=1e-7)
    scale = float(hists[0].max())
    assert bool(debiased.converged)
    assert float((debiased.barycenter - hists[0]).abs().max()) < 1e-4 * scale
    assert float((plain.barycenter - hists[0]).abs().max()) > 0.1 * scale


def test_batch_dims_equal_separate_solves(line):
    _, cost = line
    torch.manual_seed(0)
    hists = torch.rand(2, 2, 3, 50, dtype=torch.float64) + 0.05
    hists = hists / hists.sum(-1, keepdim=True)
    weights = torch.softmax(torch.randn(2, 2, 3, dtype=torch.float64), -1)
    costs = cost * (1 + torch.rand(2, 2, 1, 1, dtype=torch.float64))
    res = otkit.sinkhorn_barycenter(hists, costs, weights, 0.02, tol=1e-9)
    assert res.barycenter.shape == (2, 2, 50) and res.errors.shape[1:] == (2, 2)
    for i in range(2):
        for j in range(2):
            one = otkit.sinkhorn_barycenter(hists[i, j], costs[i, j], weights[i, j], 0.02, tol=1e-9)
            torch.testing.assert_close(res.barycenter[i, j], one.barycenter, rtol=1e-7, atol=1e-10)


def test_float32_and_rectangular_cost():
    # The barycenter may live on another support (cost (n, m)); float32 inputs stay float32.
    x, y = torch.linspace(0, 1, 40), torch.linspace(0, 1, 25)
    hists = _bumps(x, (0.25, 0.75)).float()
    res = otkit.sinkhorn_barycenter(hists, (x[:, None] - y) ** 2, eps=0.01, tol=1e-5)
    assert res.barycenter.dtype == torch.float32 and res.barycenter.shape == (25,)
    assert abs(float((res.barycenter * y).sum()) - 0.5) < 1e-3
    assert abs(float(res.barycenter.sum()) - 1) < 1e-4


def test_gradient_matches_finite_differences(line):
    t, cost = line
    hists = _bumps(t[:20], (0.05, 0.3), width=0.01, floor=0.01)
    weights = torch.tensor([0.3, 0.7], dtype=torch.float64, requires_grad=True)
    probe = torch.linspace(-1, 1, 20, dtype=torch.float64)

    def objective(w):
        return (
            otkit.sinkhorn_barycenter(hists, cost[:20, :20], w, 0.01, tol=None, max_iter=200).barycenter * probe
        ).sum()

    assert torch.autograd.gradcheck(objective, (weights,), eps=1e-6, atol=1e-6)


def test_bad_inputs_raise_with_the_fix(line):
    t, cost = line
    hists = _bumps(t, (0.2, 0.8))
    with pytest.raises(ValueError, match="different total masses"):
        otkit.sinkhorn_barycenter(hists * torch.tensor([[1.0], [2.0]], dtype=torch.float64), cost, eps=0.01)
    with pytest.raises(ValueError, match="n = 50"):
        otkit.sinkhorn_barycenter(_bumps(t[:10], (0.0, 0.1)), cost, eps=0.01)
    with pytest.raises(ValueError, match="last dim k = 2"):
        otkit.sinkhorn_barycenter(hists, cost, torch.ones(3), eps=0.01)
    with pytest.raises(ValueError, match="square cost"):
        otkit.sinkhorn_barycenter(hists, cost[:, :30], eps=0.01, debiased=True)
    with pytest.raises(ValueError, match="rho_a"):
        otkit.sinkhorn_barycenter(hists, cost, eps=0.01, rho_a=1.0)
    with pytest.raises(ValueError, match="negative"):
        otkit.sinkhorn_barycenter(-hists, cost, eps=0.01)


def test_unconverged_warns(line):
    t, cost = line
    with pytest.warns(otkit.ConvergenceWarning):
        res = otkit.sinkhorn_barycenter(_bumps(t, (0.2, 0.8)), cost, eps=0.001, max_iter=5)
    assert not bool(res.converged)


def _squares(k: int, size: int, floor: float = 0.0) -> torch.Tensor:
    """``k`` normalised images ``(k, size, size)`` holding rectangles at different places, plus ``floor``."""
    images = torch.full((k, size, size), floor, dtype=torch.float64)
    step = size // (k + 2)
    for i in range(k):
        images[i, step * i + 1 : step * (i + 2), step * (k - i) - 2 : step * (k - i) + step // 2 + 1] += 1.0
    return images / images.sum((-1, -2), keepdim=True)


# POT floors zero pixels at 1e-30 (its stabThr) before taking logs; otkit keeps exact zeros. Far from the inputs'
# support the true sums are exponentially small and the floor's mass outweighs them, which moves the iterates
# there: the comparisons use images with a positive floor, on which both solve the same problem.


@pytest.mark.parametrize(("eps", "method"), [(0.004, "shifted"), (0.0012, "blocked"), (1e-4, "lse")])
def test_convolutional_equals_pot_log(eps, method):
    images = _squares(3, 24, floor=1e-6)
    weights = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    res = otkit.convolutional_barycenter(images, weights, eps, tol=None, max_iter=60)
    ref = ot.bregman.convolutional_barycenter2d(
        images.numpy(), eps, weights=weights.numpy(), method="sinkhorn_log", stopThr=0.0, numItermax=60, warn=False
    )
    assert res.method == method and res.barycenter.shape == (24, 24)
    np.testing.assert_allclose(res.barycenter.numpy(), ref, rtol=0, atol=1e-10 * ref.max())


def test_blocked_axis_kernel_is_the_exact_log_sum_exp():
    # 128 pixels at eps 4e-4: the kernel spans exp(-2500), blocks of 16 columns; inputs spanning +-100 and -inf.
    from otkit.barycenter.kernels import GridKernel, axis_log_kernel

    v = torch.randn(2, 128, 128, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 30
    v[0, :, :7] = -torch.inf
    kernel = GridKernel(128, 128, 4e-4, v)
    log_k = axis_log_kernel(128, 4e-4, v)
    along_w = torch.logsumexp(v.unsqueeze(-2) + log_k, -1)
    expected = torch.logsumexp(along_w.transpose(-1, -2).unsqueeze(-2) + log_k, -1).transpose(-1, -2)
    assert kernel.method == "blocked"
    torch.testing.assert_close(kernel.apply(v), expected, rtol=1e-13, atol=1e-12)


def test_convolutional_debiased_equals_pot():
    images = _squares(2, 24, floor=1e-6)
    res = otkit.convolutional_barycenter(images, eps=0.004, debiased=True, tol=None, max_iter=60)
    ref = ot.bregman.convolutional_barycenter2d_debiased(
        images.numpy(), 0.004, method="sinkhorn_log", stopThr=0.0, numItermax=60, warn=False
    )
    np.testing.assert_allclose(res.barycenter.numpy(), ref, rtol=0, atol=1e-10 * ref.max())


def test_convolutional_at_256_equals_pot():
    # 256 x 256 float32 images, never a 65536 x 65536 kernel. POT's log-domain iterations take seconds each at
    # this size: compare converged barycenters with its scaling-domain solver (whose kernel does not underflow at
    # this eps, and which starts from another point: only the limits agree).
    images = _squares(2, 256, floor=1e-6)
    res = otkit.convolutional_barycenter(images.float(), eps=0.02, tol=1e-5)
    ref = ot.bregman.convolutional_barycenter2d(images.numpy(), 0.02, method="sinkhorn", stopThr=1e-7, warn=False)
    assert res.barycenter.dtype == torch.float32 and res.barycenter.shape == (256, 256) and bool(res.converged)
    np.testing.assert_allclose(res.barycenter.numpy(), ref, rtol=0, atol=1e-4 * ref.max())


def test_convolutional_batch_dims_equal_separate_solves():
    images = torch.stack([_squares(3, 16), _squares(3, 16).flip(-1)])  # (2, 3, 16, 16)
    weights = torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]], dtype=torch.float64)
    res = otkit.convolutional_barycenter(images, weights, 0.005, tol=1e-8)
    assert res.barycenter.shape == (2, 16, 16) and bool(res.converged.all())
    for i in range(2):
        one = otkit.convolutional_barycenter(images[i], weights[i], 0.005, tol=1e-8)
        torch.testing.assert_close(res.barycenter[i], one.barycenter, rtol=1e-6, atol=1e-9)


def test_convolutional_debiased_of_one_image_is_that_image():
    # A smooth image positive everywhere (see test_debiased_barycenter_of_one_input_is_that_input).
    t = torch.linspace(0, 1, 20, dtype=torch.float64)
    bump = torch.exp(-((t[:, None] - 0.4) ** 2 + (t - 0.6) ** 2) / 0.05) + 1e-4
    images = torch.stack([bump, bump.T]) / bump.sum()
    weights = torch.tensor([1.0, 0.0], dtype=torch.float64)
    res = otkit.convolutional_barycenter(images, weights, 0.01, debiased=True, tol=1e-7, max_iter=3000)
    assert bool(res.converged)
    assert float((res.barycenter - images[0]).abs().max()) < 1e-4 * float(images[0].max())


def _grid_clouds():
    """Two clouds of different sizes (16 and 32 points) near the sites of 4 x 4 grids, and a start near a grid.

    The sites are 0.25 apart: at eps = 1e-3 an entropic plan puts about exp(-60) of its mass across sites, so
    its barycentric map is the exact plan's to rounding, and Sinkhorn converges in a few iterations.
    """
    gen = torch.Generator().manual_seed(0)
    grid = torch.stack(torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij"), -1).reshape(-1, 2) * 0.25
    grid = grid.double()
    first = grid + 0.01 * torch.randn(16, 2, generator=gen, dtype=torch.float64)
    second = (grid * torch.tensor([1.5, 0.8], dtype=torch.float64) + 0.3).repeat(2, 1)
    second = second + 0.01 * torch.randn(32, 2, generator=gen, dtype=torch.float64)
    init = grid + 0.03 * torch.randn(16, 2, generator=gen, dtype=torch.float64)
    return [first, second], init


def test_free_support_equals_pot_exact_barycenter_at_small_eps():
    clouds, init = _grid_clouds()
    weights = torch.tensor([0.3, 0.7], dtype=torch.float64)
    res = otkit.free_support_barycenter(clouds, None, weights, 1e-3, init=init)
    ref = ot.lp.free_support_barycenter(
        [c.numpy() for c in clouds], [np.full(16, 1 / 16), np.full(32, 1 / 32)], init.numpy(), weights=weights.numpy()
    )
    assert bool(res.converged) and res.points.shape == (16, 2) and res.n_iter == res.displacements.shape[0]
    np.testing.assert_allclose(res.points.numpy(), ref, rtol=0, atol=1e-6)  # stated tolerance: 1e-6 (0.25 apart)


def test_free_support_batch_dims_and_weights_of_points():
    clouds, init = _grid_clouds()
    masses = [torch.full((16,), 1 / 16, dtype=torch.float64), None]
    batched = [torch.stack([c, c + 1.0]) for c in clouds]  # (2, n_i, 2): the second problem shifted by 1
    res = otkit.free_support_barycenter(batched, masses, eps=1e-3, init=torch.stack([init, init + 1.0]))
    one = otkit.free_support_barycenter(clouds, masses, eps=1e-3, init=init)
    assert res.points.shape == (2, 16, 2) and res.converged.shape == (2,)
    torch.testing.assert_close(res.points[0], one.points, rtol=0, atol=1e-9)
    torch.testing.assert_close(res.points[1], one.points + 1.0, rtol=0, atol=1e-9)


def test_free_support_bad_inputs_raise():
    clouds, init = _grid_clouds()
    with pytest.raises(ValueError, match="expected"):
        otkit.free_support_barycenter([clouds[0], torch.rand(5, 3, dtype=torch.float64)], eps=0.01, init=init)
    with pytest.raises(ValueError, match="2 entries for 1"):
        otkit.free_support_barycenter(clouds[:1], [None, None], eps=0.01, init=init)
    with pytest.raises(ValueError, match="non-empty list"):
        otkit.free_support_barycenter(clouds[0], eps=0.01, init=init)


def test_results_are_frozen(line):
    t, cost = line
    hists = _bumps(t, (0.2, 0.8))
    clouds, init = _grid_clouds()
    results = [
        otkit.sinkhorn_barycenter(hists, cost, eps=0.01),
        otkit.convolutional_barycenter(_squares(2, 16), eps=0.01),
        otkit.free_support_barycenter(clouds, eps=1e-3, init=init),
    ]
    for res in results:
        with pytest.raises(AttributeError):
            res.n_iter = 0


@pytest.mark.parametrize("eps", [0.05, 0.0015])  # shifted products, blocked products
def test_convolutional_gradient_matches_finite_differences(eps):
    images = _squares(2, 6, floor=0.05)
    probe = torch.linspace(-1, 1, 36, dtype=torch.float64).reshape(6, 6)

    def objective(first):
        stack = torch.stack([first / first.sum(), images[1]])
        return (otkit.convolutional_barycenter(stack, eps=eps, tol=None, max_iter=15).barycenter * probe).sum()

    assert torch.autograd.gradcheck(objective, (images[0].clone().requires_grad_(),), eps=1e-6, atol=1e-6)
