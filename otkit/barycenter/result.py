"""The results of the barycenter solvers: frozen, documented, holding what the iterations produced."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from otkit.options import SinkhornOptions

__all__ = ["BarycenterResult", "FreeSupportBarycenterResult"]


@dataclass(frozen=True)
class BarycenterResult:
    """A batch of barycenters on a fixed support or a grid.

    Returned by :func:`~otkit.sinkhorn_barycenter` and :func:`~otkit.convolutional_barycenter`.

    Attributes:
        barycenter: ``(*batch, m)`` (or ``(*batch, H, W)`` on a grid) the barycenter of each problem.
        weights: ``(*batch, k)`` the weights of the inputs, normalised to sum to 1.
        options: The :class:`~otkit.SinkhornOptions` of the iterations.
        debiased: Whether the debiased barycenter (Janati et al. 2020) was computed.
        n_iter: Iterations run (one iteration projects on both constraints of every input).
        errors: ``(n_checks, *batch)`` the stopping errors, ``sum_k w_k |P_k^T 1 - b|_1 / |b|_1``, at each check.
        method: How the kernel was applied: ``"shifted"`` (max-shifted products, exact to rounding),
            ``"blocked"`` (grids: shifted products over blocks of pixels, combined by a log-sum-exp) or ``"lse"``
            (log-sum-exp terms, for kernels beyond float64's range).

    Example:
        >>> import torch, otkit
        >>> t = torch.linspace(0, 1, 40, dtype=torch.float64)
        >>> hists = torch.softmax(-((t - torch.tensor([[0.3], [0.7]])) ** 2) / 0.01, -1)  # (k=2, n=40)
        >>> res = otkit.sinkhorn_barycenter(hists.expand(3, 2, 40), (t[:, None] - t) ** 2, eps=0.01)
        >>> res.barycenter.shape, res.weights.shape, res.error.shape, bool(res.converged.all())
        (torch.Size([3, 40]), torch.Size([3, 2]), torch.Size([3]), True)
    """

    barycenter: Tensor
    weights: Tensor = field(repr=False)
    options: SinkhornOptions
    debiased: bool
    n_iter: int
    errors: Tensor = field(repr=False)
    method: str

    @property
    def eps(self) -> float:
        """Entropic regularisation."""
        return self.options.eps

    @property
    def error(self) -> Tensor:
        """The last stopping error per problem, ``(*batch)``."""
        return self.errors[-1]

    @property
    def converged(self) -> Tensor:
        """Per-problem convergence flags ``(*batch)`` (all ``True`` when no tolerance was asked for)."""
        if self.options.tol is None:
            return torch.ones_like(self.error, dtype=torch.bool)
        return self.error <= self.options.tol


@dataclass(frozen=True)
class FreeSupportBarycenterResult:
    """A free-support barycenter of point clouds (:func:`~otkit.free_support_barycenter`).

    Attributes:
        points: ``(*batch, m, d)`` the barycenter's support.
        weights: ``(*batch, m)`` its weights (fixed during the iterations).
        options: The :class:`~otkit.SinkhornOptions` of the inner point-cloud solves.
        n_iter: Outer iterations run (each: one solve per input, then the barycentric update of the points).
        displacements: ``(n_iter, *batch)`` the relative mean squared displacement of the points at each outer
            iteration, ``sum_i beta_i |x_i^new - x_i|^2 / sum_i beta_i |x_i^new - mean|^2``.
        tol: The tolerance the last displacement was compared with.

    Example:
        >>> import torch, otkit
        >>> clouds = [torch.tensor([[0.0, 0.0], [0.0, 1.0]]), torch.tensor([[2.0, 0.0], [2.0, 1.0]])]
        >>> res = otkit.free_support_barycenter(clouds, eps=0.01, init=torch.tensor([[0.5, 0.2], [0.5, 0.8]]), tol=1e-5)
        >>> res.points.shape, res.weights.tolist(), bool(res.converged), res.displacements.shape[0] == res.n_iter
        (torch.Size([2, 2]), [0.5, 0.5], True, True)
    """

    points: Tensor
    weights: Tensor = field(repr=False)
    options: SinkhornOptions
    n_iter: int
    displacements: Tensor = field(repr=False)
    tol: float

    @property
    def converged(self) -> Tensor:
        """Per-problem flags ``(*batch)``: the last displacement is at most :attr:`tol`."""
        return self.displacements[-1] <= self.tol
