"""The result of a minibatch coupling: the plan, the cost it was computed from, and how to sample pairs from it."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from otkit.dense import SinkhornResult

__all__ = ["Coupling", "draw_pairs"]


@dataclass(frozen=True)
class Coupling:
    """A batch of transport plans between minibatches ``x0 (..., n, *dim)`` and ``x1 (..., m, *dim)``.

    Attributes:
        plan: ``(..., n, m)`` transport plans (each sums to 1 for the balanced methods; an ``"unbalanced"``
            plan has the mass its solve found).
        cost: ``(..., n, m)`` the squared Euclidean costs the plans were computed from (divided by each
            problem's largest cost when ``normalize_cost=True``).
        method: ``"exact"``, ``"sinkhorn"``, ``"unbalanced"`` or ``"partial"``.
        assignment: ``(..., n)`` int64 column of each row for ``"exact"`` with ``n == m`` (``plan`` is then
            the permutation matrix divided by ``n``); ``None`` otherwise.
        solution: The :class:`~otkit.SinkhornResult` of the entropic methods (potentials, ``n_iter``,
            ``converged``); ``None`` for ``"exact"``.

    Example:
        >>> import torch
        >>> from otkit.couplings import plan
        >>> x0 = torch.tensor([[0.0], [1.0], [2.0]])
        >>> coupling = plan(x0, x0.flip(0) + 0.1, method="exact")
        >>> coupling.assignment, round(float(coupling.value), 4), bool(coupling.converged)
        (tensor([2, 1, 0]), 0.01, True)
    """

    plan: Tensor
    cost: Tensor = field(repr=False)
    method: str
    assignment: Tensor | None = field(default=None, repr=False)
    solution: SinkhornResult | None = field(default=None, repr=False)

    @property
    def value(self) -> Tensor:
        """The transport cost ``<P, C>`` per problem ``(...)`` (without entropic terms)."""
        return (self.plan * self.cost).sum((-2, -1))

    @property
    def converged(self) -> Tensor:
        """Per-problem flags ``(...)``: the Sinkhorn solve's for the entropic methods, all ``True`` for exact."""
        if self.solution is None:
            return torch.ones(self.plan.shape[:-2], dtype=torch.bool, device=self.plan.device)
        return self.solution.converged

    def sample(
        self, batch_size: int, replace: bool = True, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        r"""Draw ``batch_size`` index pairs ``(i, j) ~ P / sum(P)`` from every problem's plan.

        Args:
            batch_size: Pairs per problem (>= 1; at most the number of non-zero plan entries without
                replacement).
            replace: Draw with replacement (torchcfm's default) or without.
            generator: Optional ``torch.Generator`` for reproducible draws.

        Returns:
            ``(i, j)``, two int64 tensors ``(..., batch_size)`` of row and column indices, on the plan's device.

        Raises:
            ValueError: for ``batch_size < 1``, or more pairs than non-zero entries without replacement.
        """
        _check_batch_size(batch_size)
        if self.assignment is not None:  # uniform over the n pairs of each permutation: no n x m draw needed
            rows = self._rows(self.plan.shape[:-2], self.plan.shape[-1], batch_size, replace, generator)
            return rows, self.assignment.gather(-1, rows)
        return draw_pairs(self.plan.detach(), batch_size, replace, generator)

    def _rows(self, batch: torch.Size, n: int, size: int, replace: bool, generator: torch.Generator | None) -> Tensor:
        """Rows of a permutation plan drawn uniformly, ``(*batch, size)``."""
        device = self.plan.device
        count = int(torch.Size(batch).numel())
        if replace:
            rows = torch.randint(n, (count, size), generator=generator, device=device)
        else:
            if size > n:
                raise ValueError(
                    f"cannot draw {size} distinct pairs without replacement from a permutation of {n} pairs. "
                    "Use replace=True or a smaller batch_size."
                )
            keys = torch.rand(count, n, generator=generator, device=device)
            rows = keys.argsort(-1)[:, :size]
        return rows.reshape(*batch, size)


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}.")


def draw_pairs(
    weights: Tensor, batch_size: int, replace: bool = True, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Draw ``batch_size`` index pairs ``(i, j) ~ W / sum(W)`` from each non-negative ``weights (..., n, m)``.

    Returns:
        ``(i, j)``: int64 tensors ``(..., batch_size)``.

    Raises:
        ValueError: for ``batch_size < 1``, or more pairs than non-zero entries without replacement.
    """
    _check_batch_size(batch_size)
    n, m = weights.shape[-2:]
    flat = weights.reshape(-1, n * m)
    if not replace and bool(((flat > 0).sum(-1) < batch_size).any()):
        raise ValueError(
            f"cannot draw {batch_size} distinct pairs without replacement: a plan has fewer non-zero entries. "
            "Use replace=True or a smaller batch_size."
        )
    index = torch.multinomial(flat, batch_size, replacement=replace, generator=generator)
    index = index.reshape(*weights.shape[:-2], batch_size)
    return index // m, index % m
