"""Soft sort, rank and quantile: the hard operators as eps -> 0, the OT plan's conservation laws, gradients."""

from __future__ import annotations

import pytest
import torch

import otkit


def _spread(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Values whose sorted gaps are at least 0.5 (shuffled 0, 1, 2, ... plus noise below 0.25), float64."""
    gen = torch.Generator().manual_seed(seed)
    ranks = torch.rand(*shape, generator=gen).argsort(-1).double()
    return ranks + 0.25 * torch.rand(*shape, generator=gen, dtype=torch.float64)


def _hard_ranks(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return x.argsort(dim).argsort(dim).to(x.dtype)


SETTINGS = {"max_iter": 20000, "tol": 1e-7}


def test_soft_sort_and_rank_tend_to_the_hard_ones_as_eps_decreases():
    x = _spread(0, (3, 8))
    sort_errors, rank_errors = [], []
    for eps in (1e-1, 1e-2, 1e-3, 1e-4):
        sort_errors.append(float((otkit.soft_sort(x, eps, **SETTINGS) - x.sort(-1).values).abs().max()))
        rank_errors.append(float((otkit.soft_rank(x, eps, **SETTINGS) - _hard_ranks(x)).abs().max()))
    assert sort_errors == sorted(sort_errors, reverse=True) and rank_errors == sorted(rank_errors, reverse=True)
    assert sort_errors[-1] < 1e-6 and rank_errors[-1] < 1e-6


def test_along_another_dim_and_batched():
    x = _spread(1, (4, 6)).T.contiguous()  # (6, 4): sort along dim 0
    torch.testing.assert_close(otkit.soft_sort(x, 1e-4, dim=0, **SETTINGS), x.sort(0).values, atol=1e-6, rtol=0)
    torch.testing.assert_close(otkit.soft_rank(x, 1e-4, dim=0, **SETTINGS), _hard_ranks(x, 0), atol=1e-6, rtol=0)
    row = otkit.soft_sort(x[:, 2], 0.05)
    torch.testing.assert_close(otkit.soft_sort(x, 0.05, dim=0)[:, 2], row)


def test_soft_quantile_tends_to_torch_quantile():
    x = _spread(2, (2, 3, 9))
    levels = torch.tensor([0.1, 0.15, 0.5, 0.8], dtype=torch.float64)
    ours = otkit.soft_quantile(x, levels, 1e-4, **SETTINGS)
    assert ours.shape == (2, 3, 4)
    torch.testing.assert_close(ours, torch.quantile(x, levels, dim=-1).permute(1, 2, 0), atol=1e-6, rtol=0)
    ends = otkit.soft_quantile(x, torch.tensor([0.0, 1.0]), 1e-4, **SETTINGS)
    torch.testing.assert_close(ends, torch.stack([x.amin(-1), x.amax(-1)], -1), atol=1e-6, rtol=0)
    columns = _spread(3, (2, 9, 4)).transpose(1, 2)  # (2, 4, 9), spread along dim 1
    median = otkit.soft_quantile(columns, 0.5, 1e-4, dim=1, **SETTINGS)
    assert median.shape == (2, 9)
    torch.testing.assert_close(median, torch.quantile(columns, 0.5, dim=1), atol=1e-6, rtol=0)


def test_conservation_laws_at_moderate_eps():
    x = torch.randn(5, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    soft = otkit.soft_sort(x, 0.05, tol=1e-10)
    assert bool((soft.diff(dim=-1) > 0).all())  # increasing
    torch.testing.assert_close(soft.sum(-1), x.sum(-1))  # every value's mass is sent somewhere
    ranks = otkit.soft_rank(x, 0.05, tol=1e-10)
    torch.testing.assert_close(ranks.mean(-1), torch.full((5,), 5.5, dtype=torch.float64))
    assert float(ranks.min()) >= 0 and float(ranks.max()) <= 11
    shifted = otkit.soft_sort(3.0 * x + 7.0, 0.05, tol=1e-10)  # the squashing makes it equivariant
    torch.testing.assert_close(shifted, 3.0 * soft + 7.0)


@pytest.mark.parametrize("name", ["sort", "rank", "quantile"])
def test_gradients_match_finite_differences(name):
    x = torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4)).requires_grad_()
    fixed = {"tol": None, "max_iter": 60}  # a fixed iteration count: a smooth function of x
    ops = {
        "sort": lambda v: otkit.soft_sort(v, 0.1, **fixed),
        "rank": lambda v: otkit.soft_rank(v, 0.1, **fixed),
        "quantile": lambda v: otkit.soft_quantile(v, torch.tensor([0.3, 0.5]), 0.1, **fixed),
    }
    assert torch.autograd.gradcheck(ops[name], (x,), eps=1e-6, atol=1e-6)


def test_implicit_gradients_match_finite_differences_at_the_optimum():
    x = torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(5)).requires_grad_()
    weights = torch.linspace(-1.0, 2.0, 6, dtype=torch.float64)

    def loss(v):
        return (otkit.soft_rank(v, 0.1, grad="implicit", tol=1e-13, max_iter=5000) * weights).sum()

    (grad,) = torch.autograd.grad(loss(x), x)
    step = 1e-6
    numeric = torch.stack(
        [(loss(x.detach() + step * e) - loss(x.detach() - step * e)) / (2 * step) for e in torch.eye(6).double()]
    )
    torch.testing.assert_close(grad, numeric, atol=1e-6, rtol=1e-5)


def test_float32_and_a_single_value():
    x = torch.tensor([[2.0, -1.0, 0.5]])
    assert otkit.soft_sort(x, 0.01).dtype == torch.float32
    torch.testing.assert_close(otkit.soft_sort(torch.tensor([4.0]), 0.1), torch.tensor([4.0]))
    torch.testing.assert_close(otkit.soft_rank(torch.tensor([4.0]), 0.1), torch.tensor([0.0]))


def test_bad_input_raises_with_a_message():
    with pytest.raises(ValueError, match="floating"):
        otkit.soft_sort(torch.arange(4))
    with pytest.raises(ValueError, match="out of range"):
        otkit.soft_rank(torch.rand(3), dim=1)
    with pytest.raises(ValueError, match="empty"):
        otkit.soft_sort(torch.rand(2, 0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        otkit.soft_quantile(torch.rand(5), 1.5)
    with pytest.raises(ValueError, match="1-D"):
        otkit.soft_quantile(torch.rand(5), torch.rand(2, 2))
    with pytest.raises(ValueError, match="eps"):
        otkit.soft_sort(torch.rand(5), eps=-1.0)
    with pytest.raises(ValueError, match="NaN"):
        otkit.soft_sort(torch.tensor([1.0, float("nan")]))
