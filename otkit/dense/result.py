"""The result of an entropic OT solve: potentials plus everything derived from them on demand."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from otkit._solution import Solution, generalised_kl, safe_log

__all__ = ["SinkhornResult"]


@dataclass(frozen=True)
class SinkhornResult(Solution):
    """Solution of a batch of entropic optimal transport problems.

    The plan is never stored: it is rebuilt from the potentials, exactly as
    ``P[..., i, j] = a_i * b_j * exp((f_i + g_j - C_ij) / eps)``, each time :attr:`plan` is read, so a result
    costs only ``O(n + m)`` memory per problem beyond the cost it refers to.

    Attributes:
        f: Row potential ``(*batch, n)`` in cost units (float32 for half-precision inputs).
        g: Column potential ``(*batch, m)`` in cost units.
        cost: The cost ``(*batch, n, m)`` in the dtype the solver computed in.
        a: Row marginal ``(*batch, n)``.
        b: Column marginal ``(*batch, m)``.
        options: The :class:`~otkit.SinkhornOptions` of the solve (``eps``, ``rho_a``, ``rho_b`` and
            ``tol`` are also readable directly on the result).
        n_iter: Sinkhorn iterations run (one iteration updates ``f`` then ``g``).
        errors: Stopping errors ``(n_checks, *batch)`` recorded at each convergence check (see :attr:`tol`); the
            triton backend keeps the last check only (``n_checks = 1``).
        domain: ``"log"`` or ``"kernel"``, the domain the iterations ran in.
        backend: ``"torch"`` (PyTorch loops) or ``"triton"`` (the fused GPU kernel), where they ran.

    Example:
        >>> import torch, otkit
        >>> res = otkit.sinkhorn(torch.rand(3, 20, 5), eps=0.1)  # three problems of 20 x 5
        >>> res.f.shape, res.g.shape, res.plan.shape, res.value.shape
        (torch.Size([3, 20]), torch.Size([3, 5]), torch.Size([3, 20, 5]), torch.Size([3]))
        >>> rows, cols = res.marginals()  # 1/20 and 1/5 each, to tol
        >>> bool(res.converged.all()), round(float(rows.sum(-1).max()), 4)
        (True, 1.0)
    """

    cost: Tensor = field(repr=False)
    domain: str
    backend: str = "torch"

    @property
    def plan(self) -> Tensor:
        """The transport plan ``(*batch, n, m)``, differentiable through the potentials and the inputs.

        Computed as ``exp((f + g - C) / eps + log a + log b)``: a zero weight gives an exact zero even where the
        exponent of its (meaningless) potential is huge, and a zero gradient. Without a gradient to record, the
        same operations in the same order run in one buffer (bit for bit the same plan, one allocation).
        """
        log_a, log_b = safe_log(self.a).unsqueeze(-1), safe_log(self.b).unsqueeze(-2)
        if torch.is_grad_enabled() and any(t.requires_grad for t in (self.f, self.g, self.cost, self.a, self.b)):
            log_kernel = (self.f.unsqueeze(-1) + self.g.unsqueeze(-2) - self.cost) / self.eps
            return torch.exp(log_kernel + log_a + log_b)
        plan = self.f.unsqueeze(-1) + self.g.unsqueeze(-2)  # the potentials carry the cost's batch dims
        return plan.sub_(self.cost).div_(self.eps).add_(log_a).add_(log_b).exp_()

    def marginals(self) -> tuple[Tensor, Tensor]:
        """Row and column sums of the plan, ``(*batch, n)`` and ``(*batch, m)``."""
        plan = self.plan
        return plan.sum(-1), plan.sum(-2)

    @property
    def value(self) -> Tensor:
        r"""The regularised objective at the plan, per problem ``(*batch)``.

        .. math::
            \langle P, C\rangle + \varepsilon\,\mathrm{KL}(P \,|\, a \otimes b)
            + \rho_a \mathrm{KL}(P 1 \,|\, a) + \rho_b \mathrm{KL}(P^\top 1 \,|\, b)

        with the generalised KL ``KL(p|q) = sum p log(p/q) - p + q`` and the mass terms of a balanced side left
        out. For a balanced problem with unit masses it equals POT's ``ot.solve(C, a, b, reg=eps).value``
        (``reg_type="KL"``); with masses ``m`` it exceeds it by ``eps * (m**2 - m)``, the generalised KL's mass
        term. Because ``log(P / (a b)) = (f + g - C) / eps`` exactly, the entropic part is computed from the
        potentials without taking the log of small plan entries.
        """
        plan = self.plan
        rows, cols = plan.sum(-1), plan.sum(-2)
        mass = rows.sum(-1)
        value = (rows * self.f).sum(-1) + (cols * self.g).sum(-1)
        value = value + self.eps * (self.a.sum(-1) * self.b.sum(-1) - mass)
        if self.rho_a is not None:
            value = value + self.rho_a * generalised_kl(rows, self.a)
        if self.rho_b is not None:
            value = value + self.rho_b * generalised_kl(cols, self.b)
        return value
