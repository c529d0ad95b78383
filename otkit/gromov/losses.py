r"""The losses of Gromov-Wasserstein and their decomposition: the quadratic term without the ``n^2 m^2`` tensor.

A loss ``L(c, c')`` between an entry ``c`` of ``Cx`` and ``c'`` of ``Cy`` that splits as
``L(c, c') = f_1(c) + f_2(c') - h_1(c) h_2(c')`` (Peyre, Cuturi, Solomon 2016, Prop. 1) gives, for a plan ``P`` with
marginals ``p = P 1`` and ``q = P^T 1``,

.. math::
    F(P) = \sum_{ijkl} L(C^x_{ik}, C^y_{jl}) P_{ij} P_{kl}
         = p^\top f_1(C^x) p + q^\top f_2(C^y) q - \langle h_1(C^x) P h_2(C^y)^\top, P\rangle

and its gradient ``dF/dP = f_1(C^x) p \oplus f_2(C^y) q - h_1(C^x) P h_2(C^y)^\top`` plus the same with both
matrices transposed (twice the first part for symmetric matrices): products of ``n x n``, ``n x m`` and ``m x m``
matrices only.

- ``"square"``: ``L = (c - c')^2``: ``f_1 = c^2``, ``f_2 = c'^2``, ``h_1 = c``, ``h_2 = 2 c'``;
- ``"kl"``: ``L = c log(c / c') - c + c'``: ``f_1 = c log c - c``, ``f_2 = c'``, ``h_1 = c``, ``h_2 = log c'``, with
  ``0 log 0 = 0`` and ``log c'`` floored at ``log(1e-15)`` (POT's convention for zero entries of ``Cy``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from otkit._checks import is_tracing

__all__ = ["KL_FLOOR", "LOSSES", "Decomposition", "GromovLoss", "check_loss", "decompose"]

GromovLoss = Literal["square", "kl"]
LOSSES = ("square", "kl")
# The smallest entry of Cy whose log the KL loss takes (zeros are raised to it).
KL_FLOOR = 1e-15


@dataclass(frozen=True)
class Decomposition:
    """``f_1(Cx)``, ``f_2(Cy)``, ``h_1(Cx)``, ``h_2(Cy)`` of a loss, ``(..., n, n)`` and ``(..., m, m)``."""

    f1: Tensor
    f2: Tensor
    h1: Tensor
    h2: Tensor

    def detach(self) -> Decomposition:
        """The same matrices cut from autograd (the solver iterates on them)."""
        return Decomposition(self.f1.detach(), self.f2.detach(), self.h1.detach(), self.h2.detach())

    def cross(self, plan: Tensor, transposed: bool = False) -> Tensor:
        """``h_1(Cx) P h_2(Cy)^T`` ``(..., n, m)``, or ``h_1(Cx)^T P h_2(Cy)`` with ``transposed``."""
        if transposed:
            return self.h1.mT @ plan @ self.h2
        return self.h1 @ plan @ self.h2.mT

    def constant(self, a: Tensor, b: Tensor, transposed: bool = False) -> Tensor:
        """``f_1(Cx) a + f_2(Cy) b`` as rows plus columns, ``(..., n, m)`` (transposed matrices with ``transposed``)."""
        f1, f2 = (self.f1.mT, self.f2.mT) if transposed else (self.f1, self.f2)
        rows = (f1 @ a.unsqueeze(-1)).squeeze(-1)
        cols = (f2 @ b.unsqueeze(-1)).squeeze(-1)
        return rows.unsqueeze(-1) + cols.unsqueeze(-2)

    def quadratic(self, plan: Tensor) -> Tensor:
        """``F(P)`` per problem ``(...)``, differentiable in the matrices (and the plan).

        ``p`` and ``q`` are the plan's own marginals.
        """
        p, q = plan.sum(-1), plan.sum(-2)
        rows = (p.unsqueeze(-2) @ self.f1 @ p.unsqueeze(-1)).squeeze(-1).squeeze(-1)
        cols = (q.unsqueeze(-2) @ self.f2 @ q.unsqueeze(-1)).squeeze(-1).squeeze(-1)
        return rows + cols - (self.cross(plan) * plan).sum((-2, -1))


def check_loss(loss: str, Cx: Tensor, Cy: Tensor) -> None:
    """Raise unless ``loss`` is known and, for ``"kl"``, both matrices are non-negative (one host read)."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(map(repr, LOSSES))}, got {loss!r}.")
    if loss == "kl" and not is_tracing():
        for name, matrix in (("Cx", Cx), ("Cy", Cy)):
            if bool((matrix < 0).any()):
                raise ValueError(
                    f"loss='kl' compares non-negative entries (c log(c / c') - c + c'), but {name} has negative "
                    f"entries (smallest {float(matrix.min()):.3g}). Use loss='square', or pass similarities >= 0."
                )


def decompose(loss: GromovLoss, Cx: Tensor, Cy: Tensor) -> Decomposition:
    """The decomposition of ``loss`` at ``Cx (..., n, n)`` and ``Cy (..., m, m)``, differentiable in both."""
    if loss == "square":
        return Decomposition(Cx.square(), Cy.square(), Cx, 2 * Cy)
    return Decomposition(torch.xlogy(Cx, Cx) - Cx, Cy, Cx, torch.log(Cy.clamp_min(KL_FLOOR)))
