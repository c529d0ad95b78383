"""``matching``: the hard maximising assignment of a batch of score matrices, by the Hungarian method in torch."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from otkit.doubly_stochastic.projection import check_log_alpha

__all__ = ["matching"]


def _augment(cost: Tensor, i: int, u: Tensor, v: Tensor, p: Tensor, way: Tensor) -> None:
    """Assign row ``i`` (1-based) in every problem by one shortest augmenting path, updating the state in place.

    ``cost (B, n + 1, m + 1)`` (row and column 0 are the dummy of the 1-based method), potentials ``u (B, n + 1)``,
    ``v (B, m + 1)``, ``p (B, m + 1)`` the row assigned to each column (0: none), ``way (B, m + 1)`` the previous
    column on the path. Each step of the search is vectorised over the batch; problems whose path has reached a
    free column wait (their updates are masked) until every problem's has.
    """
    batch, cols = p.shape
    p[:, 0] = i
    j0 = torch.zeros(batch, dtype=torch.long, device=p.device)
    minv = torch.full((batch, cols), math.inf, dtype=cost.dtype, device=cost.device)
    used = torch.zeros((batch, cols), dtype=torch.bool, device=p.device)
    active = torch.ones(batch, dtype=torch.bool, device=p.device)
    while True:
        used.scatter_(1, j0.unsqueeze(1), True)
        i0 = p.gather(1, j0.unsqueeze(1))  # (B, 1): the row whose column j0 the path has reached
        row = cost.gather(1, i0.unsqueeze(2).expand(batch, 1, cols)).squeeze(1)
        reduced = row - u.gather(1, i0) - v
        better = ~used & (reduced < minv) & active.unsqueeze(1)
        minv = torch.where(better, reduced, minv)
        way = torch.where(better, j0.unsqueeze(1), way, out=way)
        delta, j1 = torch.where(used, math.inf, minv).min(1)
        delta = torch.where(active, delta, 0.0).unsqueeze(1)
        u.scatter_add_(1, p, torch.where(used, delta, 0.0))
        v.sub_(torch.where(used, delta, 0.0))
        minv = torch.where(used, minv, minv - delta)
        j0 = torch.where(active, j1, j0)
        active &= p.gather(1, j0.unsqueeze(1)).squeeze(1) != 0
        if not bool(active.any()):
            break
    moving = j0 != 0
    while bool(moving.any()):  # flip the path back to column 0
        j1 = way.gather(1, j0.unsqueeze(1))
        value = torch.where(moving.unsqueeze(1), p.gather(1, j1), p.gather(1, j0.unsqueeze(1)))
        p.scatter_(1, j0.unsqueeze(1), value)
        j0 = torch.where(moving, j1.squeeze(1), j0)
        moving = j0 != 0


def matching(log_alpha: Tensor) -> Tensor:
    r"""The assignment of rows to distinct columns with the largest total score, for every matrix of a batch.

    .. math::
        \sigma^\star = \arg\max_{\sigma} \sum_i \mathrm{log\_alpha}_{i, \sigma(i)}

    over the injective maps ``sigma`` from the ``n`` rows to the ``m >= n`` columns (the permutations when
    ``n = m``): the limit of :func:`otkit.sinkhorn_knopp` as ``tau -> 0``, used to evaluate Sinkhorn and
    Gumbel-Sinkhorn networks. Solved exactly (in float64) by the Hungarian method with shortest augmenting paths,
    ``O(n^2 m)`` per matrix, each step vectorised over the batch; meant for ``n`` up to a few hundred. It reads the
    progress of its searches on the host at every step, so keep it out of ``torch.compile``'d regions and CUDA
    graphs (it is not differentiable either).

    Args:
        log_alpha: ``(..., n, m)`` scores with ``n <= m``, finite, any leading batch dims.

    Returns:
        ``(..., n)`` int64: ``sigma[..., i]``, the column assigned to row ``i``. The permutation matrix is
        ``torch.nn.functional.one_hot(sigma, m)``.

    Raises:
        ValueError: when ``log_alpha`` is not a floating ``(..., n, m)`` tensor, has ``n > m`` (match the
            transpose) or holds NaN or infinite entries.

    Example:
        >>> import torch, otkit
        >>> scores = torch.tensor([[1.0, 5.0, 0.0], [4.0, 4.5, 0.0], [0.0, 0.0, 1.0]])
        >>> otkit.matching(scores)  # 5 + 4 + 1 beats the row-wise argmax, which takes column 1 twice
        tensor([1, 0, 2])
    """
    check_log_alpha(log_alpha)
    n, m = log_alpha.shape[-2:]
    if n > m:
        raise ValueError(
            f"matching assigns every row to a distinct column and needs n <= m, got shape {tuple(log_alpha.shape)}. "
            "Match the transpose (log_alpha.transpose(-1, -2)) instead."
        )
    if not bool(torch.isfinite(log_alpha).all()):
        raise ValueError(
            "log_alpha holds infinite entries; matching needs finite scores: give forbidden pairs a very low finite "
            "score instead of -inf."
        )
    batch = log_alpha.shape[:-2]
    scores = log_alpha.detach().reshape(-1, n, m).to(torch.float64)
    count = scores.shape[0]
    cost = torch.zeros((count, n + 1, m + 1), dtype=torch.float64, device=scores.device)
    cost[:, 1:, 1:] = -scores
    u = torch.zeros((count, n + 1), dtype=torch.float64, device=scores.device)
    v = torch.zeros((count, m + 1), dtype=torch.float64, device=scores.device)
    p = torch.zeros((count, m + 1), dtype=torch.long, device=scores.device)
    way = torch.zeros_like(p)
    for i in range(1, n + 1):
        _augment(cost, i, u, v, p, way)
    sigma = torch.zeros((count, n + 1), dtype=torch.long, device=scores.device)
    columns = torch.arange(m, device=scores.device).expand(count, m)
    sigma.scatter_(1, p[:, 1:], columns)  # unassigned columns (p = 0) all land on the dummy row 0
    return sigma[:, 1:].reshape(*batch, n)
