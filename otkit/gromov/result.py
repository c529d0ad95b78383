"""The result of a Gromov-Wasserstein solve: the last inner Sinkhorn solve, the value and the outer loop's record."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from otkit.dense.result import SinkhornResult
from otkit.points.result import PointCloudResult

__all__ = ["GromovResult"]


@dataclass(frozen=True)
class GromovResult:
    r"""Solution of a batch of entropic (fused) Gromov-Wasserstein problems.

    The plan is that of the last inner Sinkhorn solve, on the cost linearised at the previous plan; it is rebuilt
    from that solve's potentials when :attr:`plan` is read (point clouds: applied tile by tile with
    ``solution.apply``, never formed unless :attr:`plan` is read).

    Attributes:
        value: ``(*batch)`` the regularised objective at the plan,
            ``(1 - alpha) <M, P> + alpha F(P) + eps KL(P | a x b)``, differentiable in ``Cx``, ``Cy``, ``M``, ``a``,
            ``b`` (or the points) by the envelope theorem: the gradient at the solution, plan held fixed.
        distance: ``(*batch)`` the (fused) GW discrepancy ``(1 - alpha) <M, P> + alpha F(P)`` at the plan, without
            the entropic term: POT's ``log["gw_dist"]`` (``log["fgw_dist"]``). Differentiable in the matrices at
            the fixed plan (not the total derivative: use :attr:`value` for that).
        solution: The last inner solve, a :class:`~otkit.SinkhornResult` (matrices) or
            :class:`~otkit.PointCloudResult` (point clouds); its ``cost`` (geometry) is the linearised cost.
        errors: ``(n_outer, *batch)`` the plan's change at each outer iteration, ``|P_k - P_{k-1}|_1 / |a|_1``
            (0 once a problem of a batch has settled).
        n_outer: Outer (mirror-descent) iterations run.
        n_inner: Sinkhorn iterations run over all the outer iterations (one batched inner solve counts once).
        outer_tol: The tolerance the errors were compared with; ``None``: a fixed number of outer iterations.
        alpha: The weight of the structure term (1 without a feature cost).
        loss: ``"square"`` or ``"kl"``.
        solver: ``"pgd"`` (mirror descent on the entropic objective) or ``"ppa"`` (proximal point iterations on
            the objective without entropy: :attr:`value` is then :attr:`distance`, with its envelope gradient).

    Example:
        >>> import torch, otkit
        >>> x = torch.rand(3, 12, 2, generator=torch.Generator().manual_seed(0))  # a batch of 3 clouds
        >>> Cx = torch.cdist(x, x) ** 2
        >>> res = otkit.gromov_wasserstein(Cx, Cx, eps=0.05)  # each cloud against itself
        >>> res.plan.shape, res.errors.shape[1:], bool(res.converged.all())
        (torch.Size([3, 12, 12]), torch.Size([3]), True)
    """

    value: Tensor
    distance: Tensor
    solution: SinkhornResult | PointCloudResult = field(repr=False)
    errors: Tensor = field(repr=False)
    n_outer: int
    n_inner: int
    outer_tol: float | None
    alpha: float
    loss: str
    solver: str = "pgd"

    @property
    def plan(self) -> Tensor:
        """The transport plan ``(*batch, n, m)`` (detached), materialised from the last inner solve."""
        return self.solution.plan.detach()

    @property
    def eps(self) -> float:
        """Entropic regularisation."""
        return self.solution.eps

    @property
    def error(self) -> Tensor:
        """The last outer error per problem ``(*batch)``."""
        return self.errors[-1]

    @property
    def converged(self) -> Tensor:
        """``(*batch)``: whether the plan settled and the last inner solve converged.

        That is: the plan moved by at most ``outer_tol`` at the last outer iteration and the last inner solve
        reached its ``tol`` (a missing tolerance counts as reached).
        """
        if self.outer_tol is None:
            return self.solution.converged
        return (self.error <= self.outer_tol) & self.solution.converged
