"""otkit.matching against scipy's linear_sum_assignment; otkit.gumbel_sinkhorn's samples and their distribution."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

import otkit

F64 = torch.float64


@pytest.mark.parametrize(("batch", "n", "m"), [((40,), 5, 5), ((2, 6), 7, 11), ((3,), 1, 4), ((1,), 60, 60)])
def test_matching_is_the_optimal_assignment(batch, n, m):
    scores = torch.randn(*batch, n, m, dtype=F64)
    sigma = otkit.matching(scores)
    assert sigma.shape == (*batch, n) and sigma.dtype == torch.int64
    flat_scores, flat_sigma = scores.reshape(-1, n, m), sigma.reshape(-1, n)
    for s, sig in zip(flat_scores, flat_sigma, strict=True):
        rows, cols = linear_sum_assignment(s.numpy(), maximize=True)
        assert len(set(sig.tolist())) == n  # distinct columns
        assert math.isclose(float(s[torch.arange(n), sig].sum()), float(s.numpy()[rows, cols].sum()), rel_tol=1e-12)
        assert sig.tolist() == cols.tolist()  # continuous scores: the optimum is unique


def test_matching_with_ties_and_integer_scores_reaches_the_optimum():
    scores = torch.randint(0, 3, (30, 6, 6)).double()
    sigma = otkit.matching(scores)
    for s, sig in zip(scores, sigma, strict=True):
        rows, cols = linear_sum_assignment(s.numpy(), maximize=True)
        assert float(s[torch.arange(6), sig].sum()) == float(s.numpy()[rows, cols].sum())


def test_matching_is_the_small_temperature_limit_of_sinkhorn_knopp():
    """With a clear best permutation (a margin of about 2 over the others), tau = 0.02 is already at the limit."""
    perms = torch.stack([torch.randperm(6) for _ in range(20)])
    scores = 0.3 * torch.randn(20, 6, 6, dtype=F64) + 2 * torch.nn.functional.one_hot(perms, 6)
    assert torch.equal(otkit.matching(scores), perms)
    soft = otkit.sinkhorn_knopp(scores, n_iter=200, tau=0.02)
    hard = torch.nn.functional.one_hot(perms, 6).to(F64)
    torch.testing.assert_close(soft, hard, rtol=0, atol=1e-3)


@pytest.mark.parametrize(
    ("scores", "match"),
    [
        (torch.zeros(4, 3), "n <= m"),
        (torch.tensor([[0.0, -math.inf], [0.0, 0.0]]), "infinite"),
        (torch.zeros(3), "shape"),
    ],
)
def test_matching_bad_input_raises(scores, match):
    with pytest.raises(ValueError, match=match):
        otkit.matching(scores)


def test_gumbel_sinkhorn_samples_are_doubly_stochastic_and_reproducible():
    log_alpha = torch.randn(4, 5, 3, dtype=F64, requires_grad=True)
    samples = otkit.gumbel_sinkhorn(log_alpha, 0.5, 30, 6, torch.Generator().manual_seed(1))
    assert samples.shape == (6, 4, 5, 3)
    torch.testing.assert_close(samples.sum(-2), torch.full((6, 4, 3), 5 / 3, dtype=F64), rtol=0, atol=1e-12)
    again = otkit.gumbel_sinkhorn(log_alpha, 0.5, 30, 6, torch.Generator().manual_seed(1))
    torch.testing.assert_close(samples, again, rtol=0, atol=0)
    assert not torch.allclose(samples[0], samples[1])  # independent noise per sample
    (grad,) = torch.autograd.grad(samples[:, :, 0, 0].sum(), log_alpha)
    assert bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0
    noiseless = otkit.gumbel_sinkhorn(log_alpha, 0.5, 30, 2, noise_scale=0.0)
    torch.testing.assert_close(noiseless, otkit.sinkhorn_knopp(log_alpha, 30, 0.5).expand(2, -1, -1, -1))


def test_gumbel_sinkhorn_samples_follow_the_gumbel_matching_distribution():
    """At small tau, the permutations of the samples are distributed as matching(log_alpha + G), G ~ Gumbel.

    The reference draws its noise with numpy; over the 6 permutations of a 3 x 3 matrix the frequencies of
    4000 samples each agree to within 0.03 (about four standard deviations).
    """
    log_alpha = torch.tensor([[1.0, 0.2, -0.5], [0.0, 0.8, 0.3], [-0.2, 0.1, 0.6]], dtype=F64)
    count = 4000
    samples = otkit.gumbel_sinkhorn(log_alpha, 0.05, 60, count, torch.Generator().manual_seed(0))
    ours = otkit.matching(samples)
    noise = torch.from_numpy(np.random.default_rng(0).gumbel(size=(count, 3, 3)))
    reference = otkit.matching(log_alpha + noise)
    for perm in itertools.permutations(range(3)):
        perm = torch.tensor(perm)
        freq = float((ours == perm).all(-1).double().mean())
        freq_ref = float((reference == perm).all(-1).double().mean())
        assert abs(freq - freq_ref) < 0.03, (perm, freq, freq_ref)


def test_gumbel_sinkhorn_bad_input_raises():
    with pytest.raises(ValueError, match="n_samples"):
        otkit.gumbel_sinkhorn(torch.zeros(3, 3), n_samples=0)
    with pytest.raises(ValueError, match="noise_scale"):
        otkit.gumbel_sinkhorn(torch.zeros(3, 3), noise_scale=-1.0)
    with pytest.raises(ValueError, match="tau"):
        otkit.gumbel_sinkhorn(torch.zeros(3, 3), tau=0.0)
