"""A drop-in for torchcfm's ``OTPlanSampler``: minibatch OT pairs for conditional flow matching, all in torch."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from otkit._checks import all_finite, check_positive_float
from otkit._convergence import ConvergenceWarning
from otkit.couplings.plan import METHODS, Method, plan
from otkit.couplings.result import Coupling, draw_pairs

__all__ = ["OTPlanSampler"]


class OTPlanSampler:
    """Pairs a source and a target minibatch by an OT plan for the squared Euclidean cost (OT-CFM).

    The same constructor and methods as torchcfm's ``OTPlanSampler`` (1.0.7), computed in torch on the inputs'
    device: ``get_map`` returns the plan as a tensor, the samplers return tensors. ``method`` chooses the plan,
    as in :func:`otkit.couplings.plan`: ``"exact"`` (an optimal assignment for equal batch sizes, the exact LP
    otherwise), ``"sinkhorn"`` (entropic, ``eps = reg`` as in POT's ``ot.sinkhorn``), ``"unbalanced"``
    (``rho_a = rho_b = reg_m``) or ``"partial"`` (entropic partial OT of the full unit mass, which equals the
    ``"sinkhorn"`` plan; see :func:`otkit.couplings.plan`).

    Args:
        method: ``"exact"``, ``"sinkhorn"``, ``"unbalanced"`` or ``"partial"``.
        reg: Entropic regularisation of the Sinkhorn methods (> 0), in cost units.
        reg_m: Marginal KL weight of ``"unbalanced"`` (> 0).
        normalize_cost: Divide each cost matrix by its largest entry before solving.
        num_threads: Accepted for compatibility and not used (torch's own thread setting applies).
        warn: Warn when a Sinkhorn solve does not converge (otkit's ``ConvergenceWarning``) or a plan
            has no mass and the uniform plan is used instead.
        **settings: Fields of :class:`~otkit.SinkhornOptions` for the Sinkhorn solves (``max_iter``, ``tol``); not
            used by ``"exact"``.

    Raises:
        ValueError: for an unknown method, ``reg <= 0`` or ``reg_m <= 0``.

    Example:
        >>> import torch
        >>> from otkit.couplings import OTPlanSampler
        >>> x0, x1 = torch.randn(64, 2), torch.randn(64, 2) + 3
        >>> a, b = OTPlanSampler("exact").sample_plan(x0, x1)
        >>> a.shape, b.shape
        (torch.Size([64, 2]), torch.Size([64, 2]))
    """

    def __init__(
        self,
        method: Method,
        reg: float = 0.05,
        reg_m: float = 1.0,
        normalize_cost: bool = False,
        num_threads: int | str = 1,
        warn: bool = True,
        **settings: object,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"Unknown method: {method!r}; choose one of {', '.join(map(repr, METHODS))}.")
        self.method = method
        self.reg = check_positive_float(reg, "reg")
        self.reg_m = check_positive_float(reg_m, "reg_m")
        self.normalize_cost = bool(normalize_cost)
        self.num_threads = num_threads
        self.warn = bool(warn)
        self.settings = dict(settings)
        if method == "unbalanced":
            self.settings.update(rho_a=self.reg_m, rho_b=self.reg_m)

    def coupling(self, x0: Tensor, x1: Tensor, group_dims: int = 0) -> Coupling:
        """The :class:`~otkit.couplings.Coupling` of ``x0 (*groups, n, *dim)`` and ``x1 (*groups, m, *dim)``."""
        eps, settings = (None, {}) if self.method == "exact" else (self.reg, self.settings)
        with warnings.catch_warnings():
            if not self.warn:
                warnings.simplefilter("ignore", ConvergenceWarning)
            result = plan(
                x0, x1, self.method, eps, group_dims=group_dims, normalize_cost=self.normalize_cost, **settings
            )
        mass = result.plan.sum((-2, -1), keepdim=True)
        if bool((mass < 1e-8).any()):  # an unbalanced plan can lose its mass: torchcfm falls back to uniform
            if self.warn:
                warnings.warn("Numerical errors in OT plan, reverting to uniform plan.", stacklevel=3)
            uniform = torch.full_like(result.plan, 1.0 / result.plan.shape[-2:].numel())
            result = Coupling(plan=torch.where(mass < 1e-8, uniform, result.plan), cost=result.cost, method=self.method)
        return result

    def get_map(self, x0: Tensor, x1: Tensor) -> Tensor:
        """The OT plan ``(n, m)`` between minibatches ``x0 (n, *dim)`` and ``x1 (m, *dim)``, on their device."""
        return self.coupling(x0, x1).plan

    def sample_map(
        self, pi: Tensor, batch_size: int, replace: bool = True, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Draw ``batch_size`` index pairs ``(i, j) ~ pi / sum(pi)`` from a plan ``pi (n, m)``.

        Returns:
            ``(i, j)``: int64 tensors ``(batch_size,)`` of row and column indices.

        Raises:
            ValueError: for a ``pi`` that is not a 2-D non-negative finite tensor with positive mass.
        """
        if not isinstance(pi, Tensor) or pi.dim() != 2:
            raise ValueError(f"pi must be a 2-D tensor (n, m), got {getattr(pi, 'shape', type(pi).__name__)}.")
        if not all_finite(pi) or bool((pi < 0).any()) or not bool(pi.sum() > 0):
            raise ValueError("pi must be finite, non-negative and have positive mass to be sampled.")
        return draw_pairs(pi.detach(), batch_size, replace, generator)

    def sample_plan(
        self, x0: Tensor, x1: Tensor, replace: bool = True, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Pairs ``(x0[i], x1[j])`` with ``(i, j)`` drawn from the plan, ``x0.shape[0]`` of them."""
        i, j = self.coupling(x0, x1).sample(x0.shape[0], replace, generator)
        return x0.index_select(0, i), x1.index_select(0, j)  # 5x faster than x0[i] on one thread

    def sample_plan_with_labels(
        self,
        x0: Tensor,
        x1: Tensor,
        y0: Tensor | None = None,
        y1: Tensor | None = None,
        replace: bool = True,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """:meth:`sample_plan` that also returns the labels of the drawn pairs (``None`` stays ``None``)."""
        i, j = self.coupling(x0, x1).sample(x0.shape[0], replace, generator)
        pairs = x0.index_select(0, i), x1.index_select(0, j)
        return *pairs, None if y0 is None else y0[i], None if y1 is None else y1[j]

    def sample_trajectory(self, X: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Chain populations ``X (bs, times, *dim)`` through the plans between consecutive times.

        Each trajectory starts at a sample of time 0 and moves to a target drawn from its row of the next plan.
        The ``times - 1`` plans are solved as one batch.

        Returns:
            ``(bs, times, *dim)`` the sampled trajectories.

        Raises:
            ValueError: for ``X`` with fewer than 2 dims.
        """
        if not isinstance(X, Tensor) or X.dim() < 2:
            raise ValueError(f"X must be a tensor (bs, times, *dim), got {getattr(X, 'shape', type(X).__name__)}.")
        bs, times = X.shape[:2]
        index = torch.arange(bs, device=X.device)
        steps = [X[:, 0]]
        if times > 1:
            plans = self.coupling(X[:, :-1].transpose(0, 1), X[:, 1:].transpose(0, 1), group_dims=1).plan
            for t in range(times - 1):
                rows = plans[t][index]
                index = torch.multinomial(rows / rows.sum(-1, keepdim=True), 1, generator=generator).squeeze(1)
                steps.append(X[:, t + 1][index])
        return torch.stack(steps, dim=1)
