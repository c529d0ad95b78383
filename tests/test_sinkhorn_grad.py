"""Gradients of otkit.sinkhorn: unrolled and implicit against finite differences and each other."""

from __future__ import annotations

import pytest
import torch

import otkit
from otkit.dense import implicit as _implicit
from tests.conftest import random_problem

RELAXATIONS = [(None, None), (1.0, None), (None, 0.7), (0.5, 2.0)]


def _loss(cost, a, b, weight, relax, grad, eps=0.3):
    res = otkit.sinkhorn(cost, a, b, eps=eps, rho_a=relax[0], rho_b=relax[1], grad=grad, max_iter=5000, tol=1e-14)
    return (res.plan * weight).sum() + res.value.sum()


@pytest.mark.parametrize("relax", RELAXATIONS)
@pytest.mark.parametrize("grad", ["unroll", "implicit"])
@pytest.mark.parametrize(("n", "m"), [(6, 4), (3, 7)])
def test_gradcheck_cost(relax, grad, n, m):
    cost, a, b = random_problem((2,), n, m)
    weight = torch.randn(2, n, m, dtype=torch.float64)
    cost.requires_grad_()
    assert torch.autograd.gradcheck(lambda c: _loss(c, a, b, weight, relax, grad), (cost,))


@pytest.mark.parametrize("relax", RELAXATIONS[1:])
@pytest.mark.parametrize("grad", ["unroll", "implicit"])
def test_gradcheck_marginals_unbalanced(relax, grad):
    cost, a, b = random_problem((2,), 5, 4)
    weight = torch.randn(2, 5, 4, dtype=torch.float64)
    a.requires_grad_()
    b.requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: _loss(cost, x, y, weight, relax, grad), (a, b))


@pytest.mark.parametrize("grad", ["unroll", "implicit"])
def test_gradcheck_marginals_balanced_on_the_simplex(grad):
    """Balanced problems need equal masses, so the weights are perturbed through a softmax."""
    cost, _, _ = random_problem((2,), 5, 4)
    weight = torch.randn(2, 5, 4, dtype=torch.float64)
    xa = torch.randn(5, dtype=torch.float64, requires_grad=True)
    xb = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    fn = lambda x, y: _loss(cost, x.softmax(-1), y.softmax(-1), weight, (None, None), grad)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (xa, xb))


@pytest.mark.parametrize("relax", RELAXATIONS)
@pytest.mark.parametrize("dense_limit", [256, 2])
def test_implicit_equals_unrolled_at_convergence(relax, dense_limit, monkeypatch):
    """Both gradient modes agree; ``dense_limit=2`` forces the conjugate-gradient solve."""
    monkeypatch.setattr(_implicit, "DENSE_SOLVE_LIMIT", dense_limit)
    cost, a, b = random_problem((3,), 9, 5, zero_weights=True)
    weight = torch.randn(3, 9, 5, dtype=torch.float64)
    grads = {}
    for grad in ("unroll", "implicit"):
        c = cost.clone().requires_grad_()
        grads[grad] = torch.autograd.grad(_loss(c, a, b, weight, relax, grad, eps=0.2), c)[0]
    torch.testing.assert_close(grads["implicit"], grads["unroll"], rtol=1e-8, atol=1e-10)
    assert bool(torch.isfinite(grads["implicit"]).all())


def test_implicit_gradients_of_float32_costs():
    cost, _, _ = random_problem((4,), 64, 6, dtype=torch.float32)
    weight = torch.randn(4, 64, 6)
    grads = {}
    for grad in ("unroll", "implicit"):
        c = cost.clone().requires_grad_()
        res = otkit.sinkhorn(c, eps=0.05, grad=grad, max_iter=1000, tol=1e-7)
        grads[grad] = torch.autograd.grad((res.plan * weight).sum(), c)[0]
    torch.testing.assert_close(grads["implicit"], grads["unroll"], rtol=1e-3, atol=1e-4)


def test_implicit_backward_does_not_keep_iterations():
    """The implicit graph saves the inputs and the potentials only, whatever the iteration count."""
    cost, _, _ = random_problem((2,), 32, 6)
    cost.requires_grad_()
    saved = {}
    for iters in (10, 200):
        storages = {}

        def pack(t, storages=storages):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            otkit.sinkhorn(cost, eps=0.1, max_iter=iters, tol=None, grad="implicit").f.sum()
        saved[iters] = sum(storages.values())
    cost_bytes = cost.numel() * cost.element_size()
    assert saved[10] == saved[200] < 2 * cost_bytes  # the cost itself plus the O(n + m) potentials


def test_unroll_differentiates_through_the_kernel_domain():
    cost, _, _ = random_problem((2,), 8, 3)
    cost.requires_grad_()
    weight = torch.randn(2, 8, 3, dtype=torch.float64)
    fn = lambda c: (otkit.sinkhorn(c, eps=0.2, max_iter=30, tol=None, domain="kernel").plan * weight).sum()  # noqa: E731
    assert torch.autograd.gradcheck(fn, (cost,))
