"""The Hungarian method (shortest augmenting paths) on batches of small costs, each search step batched in torch.

Used by :func:`otkit.couplings.linear_assignment` for sides of at most ``HUNGARIAN_MAX_SIDE`` (there the few
steps of each search, vectorised over the batch, beat the auction's rounds); it is exact in float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["hungarian"]


def hungarian(cost: Tensor) -> Tensor:
    """The minimising assignment of ``(G, n, m)`` float64 costs with ``n <= m``: ``(G, n)`` distinct columns."""
    count, n, m = cost.shape
    padded = torch.zeros((count, n + 1, m + 1), dtype=cost.dtype, device=cost.device)
    padded[:, 1:, 1:] = cost
    u = torch.zeros((count, n + 1), dtype=cost.dtype, device=cost.device)
    v = torch.zeros((count, m + 1), dtype=cost.dtype, device=cost.device)
    p = torch.zeros((count, m + 1), dtype=torch.long, device=cost.device)
    way = torch.zeros_like(p)
    for i in range(1, n + 1):
        _augment(padded, i, u, v, p, way)
    sigma = torch.zeros((count, n + 1), dtype=torch.long, device=cost.device)
    columns = torch.arange(m, device=cost.device).expand(count, m)
    sigma.scatter_(1, p[:, 1:], columns)  # unassigned columns (p = 0) all land on the dummy row 0
    return sigma[:, 1:]


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
