"""What every solve returns: the raw iterate of a loop, and the base of the public results."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from otkit.options import SinkhornOptions

__all__ = ["Iterate", "Solution", "generalised_kl", "safe_log"]


@dataclass
class Iterate:
    """Potentials (cost units) and bookkeeping returned by a Sinkhorn loop."""

    f: Tensor  # (*batch, n)
    g: Tensor  # (*batch, m)
    n_iter: int
    errors: Tensor  # (n_checks, *batch)


def safe_log(w: Tensor) -> Tensor:
    """``log w`` with ``-inf`` at zeros and a zero (not NaN) gradient there."""
    positive = w > 0
    return torch.where(positive, torch.log(torch.where(positive, w, 1.0)), -torch.inf)


def generalised_kl(p: Tensor, q: Tensor) -> Tensor:
    """``sum p log(p / q) - p + q`` over the last dim, with ``0 log 0 = 0``. Shapes ``(..., n) -> (...)``.

    Entries with ``p = 0`` are masked before the division so that their gradient is 0, not ``0 * inf``.
    """
    pos = p > 0
    ratio = torch.where(pos, p, 1.0) / torch.where(pos, q, 1.0)
    return (torch.where(pos, p * torch.log(ratio), 0.0) - p + q).sum(-1)


@dataclass(frozen=True)
class Solution:
    """The fields every result has, and what is derived from them and from the subclass's ``marginals()``.

    The base of :class:`~otkit.SinkhornResult` and :class:`~otkit.PointCloudResult` (which document the
    fields).
    """

    f: Tensor
    g: Tensor
    a: Tensor = field(repr=False)
    b: Tensor = field(repr=False)
    options: SinkhornOptions
    n_iter: int
    errors: Tensor = field(repr=False)

    @property
    def eps(self) -> float:
        """Entropic regularisation."""
        return self.options.eps

    @property
    def rho_a(self) -> float | None:
        """KL weight on the row marginal, ``None`` when it is a hard constraint."""
        return self.options.rho_a

    @property
    def rho_b(self) -> float | None:
        """KL weight on the column marginal, ``None`` when it is a hard constraint."""
        return self.options.rho_b

    @property
    def tol(self) -> float | None:
        """The tolerance the errors were compared with (``None``: fixed iteration count)."""
        return self.options.tol

    @property
    def error(self) -> Tensor:
        """The last stopping error per problem ``(*batch)``: relative L1 violation of the column condition."""
        return self.errors[-1]

    @property
    def converged(self) -> Tensor:
        """Per-problem convergence flags ``(*batch)`` (all ``True`` when no tolerance was asked for)."""
        if self.tol is None:
            return torch.ones_like(self.error, dtype=torch.bool)
        return self.error <= self.tol

    @property
    def marginal_error(self) -> tuple[Tensor, Tensor]:
        """L1 violation of the marginal optimality conditions per problem, ``((*batch), (*batch))``.

        For a balanced side this is ``|P 1 - a|_1``; for a side relaxed with weight ``rho`` it is
        ``|P 1 - a * exp(-f / rho)|_1``, the condition an unbalanced optimum satisfies.
        """
        rows, cols = self.marginals()
        target_a = self.a if self.rho_a is None else torch.exp(safe_log(self.a) - self.f / self.rho_a)
        target_b = self.b if self.rho_b is None else torch.exp(safe_log(self.b) - self.g / self.rho_b)
        return (rows - target_a).abs().sum(-1), (cols - target_b).abs().sum(-1)
