"""Entropic Gromov-Wasserstein and fused GW between spaces given by their intra-cost matrices."""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from otkit._checks import check_cost, check_masses, compute_dtype, is_tracing, prepare_marginal
from otkit.dense.result import SinkhornResult
from otkit.dense.solve import solve_dense
from otkit.gromov.losses import Decomposition, GromovLoss, check_loss, decompose
from otkit.gromov.outer import SOLVERS, GromovSolver, check_alpha, check_outer, run_outer, warn_outer, weights_envelope
from otkit.gromov.result import GromovResult
from otkit.options import SinkhornOptions, SinkhornSettings, Unpack, resolve_options

__all__ = ["gromov_wasserstein", "is_symmetric"]


def _check_square(matrix: Tensor, name: str, size: str) -> None:
    check_cost(matrix, name)
    if matrix.shape[-1] != matrix.shape[-2]:
        raise ValueError(
            f"{name} must be square, ({size} points) x ({size} points) with any batch dims before, got shape "
            f"{tuple(matrix.shape)}: pass the intra-space costs (distances between the points of one space)."
        )


def is_symmetric(matrix: Tensor) -> bool:
    """Whether ``matrix (..., n, n)`` equals its transpose up to rounding of its dtype (one host read)."""
    tol = 1e-12 if matrix.dtype == torch.float64 else 1e-5
    return bool((matrix - matrix.mT).abs().max() <= tol * matrix.abs().max())


def _batch_shape(Cx: Tensor, Cy: Tensor, M: Tensor | None) -> torch.Size:
    shapes = [Cx.shape[:-2], Cy.shape[:-2]] + ([] if M is None else [M.shape[:-2]])
    try:
        return torch.broadcast_shapes(*shapes)
    except RuntimeError:
        named = ", ".join(f"{name} {tuple(shape)}" for name, shape in zip(("Cx", "Cy", "M"), shapes, strict=False))
        raise ValueError(
            f"the batch dims of {named} do not broadcast: give them the same leading dims (or 1 where shared)."
        ) from None


def _log_ratio(plan: Tensor, prior: Tensor) -> Tensor:
    """``log(plan / prior)`` where the prior is positive (0 elsewhere), zeros of the plan at the dtype's floor."""
    floor = torch.finfo(plan.dtype).tiny
    return torch.where(prior > 0, torch.log(plan.clamp_min(floor) / torch.where(prior > 0, prior, 1.0)), 0.0)


class _Flat:
    """The problems of a batch, flattened to ``(B, ...)``, and the state of the outer loop.

    Each outer step solves only the problems whose plan still moves by more than ``outer_tol`` (the others are
    settled: a batch then costs what its problems cost one by one); the plans, potentials and costs of every
    problem are kept here.
    """

    def __init__(self, work: Decomposition, M: Tensor | None, a: Tensor, b: Tensor, start: Tensor, batch) -> None:
        n, m = a.shape[-1], b.shape[-1]
        self.batch = batch
        self.work = Decomposition(*(t.reshape(-1, *t.shape[-2:]) for t in (work.f1, work.f2, work.h1, work.h2)))
        self.M = None if M is None else M.detach().reshape(-1, n, m)
        self.a, self.b, self.plan = a.reshape(-1, n), b.reshape(-1, m), start.reshape(-1, n, m).clone()
        self.f, self.g = torch.zeros_like(self.a), torch.zeros_like(self.b)
        self.cost = torch.zeros_like(self.plan)
        self.inner_error = self.a.new_zeros(self.a.shape[0])
        self.active = torch.arange(self.a.shape[0], device=a.device)

    def step(self, alpha: float, symmetric: bool, solver: str, options: SinkhornOptions, has_init: bool):
        """The outer step: the linearised costs of the active problems and their inner solve."""
        eps = options.eps

        def step(previous: SinkhornResult | None) -> SinkhornResult:
            idx, work = self.active, self.work
            part = Decomposition(work.f1[idx], work.f2[idx], work.h1[idx], work.h2[idx])
            a, b = self.a[idx], self.b[idx]
            constant = part.constant(a, b)
            constant = 2 * constant if symmetric else constant + part.constant(a, b, transposed=True)
            cost = alpha * part.gradient(self.plan[idx], constant, symmetric)
            if self.M is not None:
                cost = cost + (1 - alpha) * self.M[idx]
            if solver == "ppa":  # the proximal term: -eps log(P_k / (a b)), exact from the previous solve
                if previous is not None:
                    cost = cost - (self.f[idx].unsqueeze(-1) + self.g[idx].unsqueeze(-2) - self.cost[idx])
                elif has_init:
                    cost = cost - eps * _log_ratio(self.plan[idx], a.unsqueeze(-1) * b.unsqueeze(-2))
            warm = None if previous is None else (self.f[idx], self.g[idx])
            result = solve_dense(cost, a, b, options, warm)
            self.f[idx], self.g[idx], self.cost[idx] = result.f, result.g, result.cost
            self.inner_error[idx] = result.error
            return result

        return step

    def change(self, outer_tol: float | None):
        """The plans' relative L1 change ``(B,)`` (0 for settled problems); settles those within ``outer_tol``."""

        def change(previous: SinkhornResult | None, current: SinkhornResult) -> Tensor:
            idx = self.active
            plan = current.plan
            moved = (plan - self.plan[idx]).abs().sum((-2, -1)) / self.a[idx].sum(-1)
            self.plan[idx] = plan
            errors = torch.zeros_like(self.inner_error)
            errors[idx] = moved
            if outer_tol is not None:
                self.active = idx[moved > outer_tol]
            return errors.reshape(self.batch)

        return change

    def solution(self, options: SinkhornOptions, last: SinkhornResult) -> SinkhornResult:
        """Every problem's last inner solve as one :class:`~otkit.SinkhornResult` ``(*batch, n, m)``."""
        n, m = self.a.shape[-1], self.b.shape[-1]
        return SinkhornResult(
            f=self.f.reshape(*self.batch, n),
            g=self.g.reshape(*self.batch, m),
            cost=self.cost.reshape(*self.batch, n, m),
            a=self.a.reshape(*self.batch, n),
            b=self.b.reshape(*self.batch, m),
            options=options,
            n_iter=last.n_iter,
            errors=self.inner_error.reshape(1, *self.batch),
            domain=last.domain,
            backend=last.backend,
        )


def _check_init(init: Tensor, shape: torch.Size, like: Tensor) -> Tensor:
    if not isinstance(init, Tensor) or init.shape[-2:] != shape[-2:]:
        got = tuple(init.shape) if isinstance(init, Tensor) else type(init).__name__
        raise ValueError(f"init must be a plan of shape (..., {shape[-2]}, {shape[-1]}), got {got}.")
    init = init.detach().to(like.dtype).expand(shape)
    if not is_tracing() and not bool(((init >= 0) & torch.isfinite(init)).all()):
        raise ValueError("init must be a finite, non-negative plan (e.g. the outer product of a and b).")
    return init


def gromov_wasserstein(
    Cx: Tensor,
    Cy: Tensor,
    a: Tensor | None = None,
    b: Tensor | None = None,
    eps: float | None = None,
    *,
    M: Tensor | None = None,
    alpha: float | None = None,
    loss: GromovLoss = "square",
    symmetric: bool | None = None,
    init: Tensor | None = None,
    solver: GromovSolver = "pgd",
    max_outer: int = 1000,
    outer_tol: float | None = 1e-5,
    options: SinkhornOptions | None = None,
    **settings: Unpack[SinkhornSettings],
) -> GromovResult:
    r"""Entropic Gromov-Wasserstein (and fused GW) between two spaces given by their intra-cost matrices.

    .. math::
        \min_{P 1 = a,\ P^\top 1 = b}\ (1 - \alpha) \langle P, M\rangle
        + \alpha \sum_{ijkl} L(C^x_{ik}, C^y_{jl}) P_{ij} P_{kl} + \varepsilon\,\mathrm{KL}(P \,|\, a \otimes b)

    with ``L(c, c') = (c - c')^2`` (``loss="square"``) or ``c log(c / c') - c + c'`` (``"kl"``), by mirror descent
    (Peyre, Cuturi, Solomon 2016): each outer iteration solves, with :func:`otkit.sinkhorn` warm-started from the
    previous potentials, the entropic OT problem on the gradient of the objective at the current plan,
    ``G = (1 - alpha) M + alpha dF/dP``, computed from the decomposition of the loss in products of ``n x n``,
    ``n x m`` and ``m x m`` matrices (never the ``n^2 m^2`` tensor). Without ``M`` it is Gromov-Wasserstein
    (``alpha = 1``); with it, fused GW (Vayer et al. 2019).

    Conventions (those of POT's ``ot.gromov.entropic_gromov_wasserstein`` and
    ``entropic_fused_gromov_wasserstein`` with ``solver="PGD"``): ``eps`` is POT's ``epsilon``, the weight of the
    entropy in every inner problem (POT's ``-epsilon H(P)`` and ``eps KL(P | a x b)`` differ by a constant on the
    transport polytope: same plans); ``alpha`` weights the structure term and ``1 - alpha`` the feature term; the
    first linearisation is at ``init`` (``a b^T`` by default, POT's ``G0``). Stopping rule: the outer loop stops
    when every problem's plan moved by at most ``outer_tol`` in relative L1 norm ``|P_k - P_{k-1}|_1 / |a|_1``
    (POT: the Frobenius norm of the change, every 10 iterations, below ``tol``). In a batch, a problem that met the
    rule is settled: later outer iterations solve only the others, so each problem stops where it would alone.

    Args:
        Cx: ``(..., n, n)`` costs between the points of the source space (distances, shortest paths, ...).
        Cy: ``(..., m, m)`` costs of the target space; batch dims broadcast with those of ``Cx`` (and ``M``).
        a: ``(n,)`` or ``(..., n)`` weights of the source points; ``None``: ``1/n``.
        b: ``(m,)`` or ``(..., m)`` weights of the target points; ``None``: ``1/m``. Same mass as ``a``.
        eps: Entropic regularisation (> 0), in the units of the objective; ``None``: that of ``options`` (0.05
            by default).
        M: ``(..., n, m)`` feature cost between the points of the two spaces: fused Gromov-Wasserstein.
        alpha: Weight of the structure term in ``[0, 1]``, only with ``M`` (0.5 by default then, as POT).
        loss: ``"square"`` or ``"kl"`` (entries of ``Cx`` and ``Cy`` >= 0; zeros of ``Cy`` enter its log as
            ``1e-15``, POT's convention).
        symmetric: Whether ``Cx`` and ``Cy`` are symmetric (then the gradient costs half); ``None``: checked.
        init: ``(..., n, m)`` plan of the first linearisation; ``None``: ``a b^T``.
        solver: ``"pgd"`` (default): mirror descent on the entropic objective above. ``"ppa"``: proximal point
            iterations, ``KL(P | P_k)`` in place of ``KL(P | a x b)`` (POT's ``solver="PPA"``, the method of
            ``ot.batch.solve_gromov_batch``): they converge to a stationary point of the objective without
            entropy, so ``value`` equals ``distance`` (with its envelope gradient) and ``eps`` is a step size.
        max_outer: Maximum number of outer iterations (>= 1; 1000, POT's default).
        outer_tol: Tolerance on the plan's change (see above); ``None`` runs exactly ``max_outer``.
        options: Settings of the inner Sinkhorn solves, a :class:`~otkit.SinkhornOptions`.
        **settings: Any other field of :class:`~otkit.SinkhornOptions` for the inner solves (``max_iter``,
            ``tol``, ``domain``, ...); ``rho_a`` and ``rho_b`` must stay ``None``.

    Returns:
        A :class:`~otkit.GromovResult`: ``plan``, ``value`` (the regularised objective, differentiable in
        ``Cx``, ``Cy``, ``M``, ``a``, ``b`` by the envelope theorem), ``distance`` (without the entropic term,
        POT's ``gw_dist``/``fgw_dist``), ``n_outer``, ``converged``, ``errors`` and the last inner ``solution``.

    Raises:
        ValueError: for matrices that are not square, a ``M`` that is not ``(..., n, m)``, batch dims that do not
            broadcast, NaN/Inf entries, bad weights or unequal masses, an unknown ``loss``, negative entries with
            ``loss="kl"``, ``alpha`` outside ``[0, 1]`` or without ``M``, relaxed marginals, or bad outer settings.

    Example:
        >>> import torch, otkit
        >>> x, y = torch.rand(30, 2, generator=torch.Generator().manual_seed(0)).split([20, 10])
        >>> Cx, Cy = torch.cdist(x, x) ** 2, torch.cdist(y, y) ** 2  # 20 points in 2-D, 10 others
        >>> res = otkit.gromov_wasserstein(Cx, Cy, eps=0.05)
        >>> res.plan.shape, bool(res.converged), round(float(res.distance), 3)
        (torch.Size([20, 10]), True, 0.052)

    A problem that does not converge warns :class:`~otkit.ConvergenceWarning` once (outer loop or last inner
    solve), and its ``converged`` is ``False``. Mirror descent finds a stationary point: GW is not convex, and a
    different ``init`` or ``eps`` may give another one.
    """
    options = resolve_options("otkit.gromov_wasserstein", options, eps, settings)
    outer_tol = check_outer(max_outer, outer_tol, options)
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(map(repr, SOLVERS))}, got {solver!r}.")
    _check_square(Cx, "Cx", "n")
    _check_square(Cy, "Cy", "m")
    n, m = Cx.shape[-1], Cy.shape[-1]
    if M is not None:
        check_cost(M, "M")
        if M.shape[-2:] != (n, m):
            raise ValueError(
                f"M must have shape (..., n, m) = (..., {n}, {m}) to match Cx and Cy, got {tuple(M.shape)}."
            )
    alpha = check_alpha(alpha, M is not None)
    check_loss(loss, Cx, Cy)
    batch = _batch_shape(Cx, Cy, M)
    dtype = compute_dtype(functools.reduce(torch.promote_types, [t.dtype for t in (Cx, Cy, M) if t is not None]))
    Cx, Cy = Cx.to(dtype).expand(*batch, n, n), Cy.to(dtype).expand(*batch, m, m)
    M = None if M is None else M.to(dtype).expand(*batch, n, m)
    a = prepare_marginal(a, (*batch, n), Cx, "a", "n")
    b = prepare_marginal(b, (*batch, m), Cx, "b", "m")
    check_masses(a, b)
    a0, b0 = a.detach(), b.detach()
    start = a0.unsqueeze(-1) * b0.unsqueeze(-2) if init is None else _check_init(init, (*batch, n, m), Cx)
    parts = decompose(loss, Cx, Cy)
    if symmetric is None:
        symmetric = is_symmetric(Cx.detach()) and is_symmetric(Cy.detach())
    with torch.no_grad():
        flat = _Flat(parts.detach(), M, a0, b0, start, batch)
        run = run_outer(
            flat.step(alpha, symmetric, solver, options, init is not None), flat.change(outer_tol), max_outer, outer_tol
        )
        solution = flat.solution(options, run.solution)
        plan = solution.plan
        entropic = solution.value - (plan * solution.cost).sum((-2, -1))  # eps KL(P | a x b)
    distance = alpha * parts.quadratic(plan)
    if M is not None:
        distance = distance + (1 - alpha) * (M * plan).sum((-2, -1))
    if solver == "ppa":  # a stationary point of the objective without entropy; (f, g) are its multipliers
        entropic = torch.zeros_like(entropic)
    envelope = weights_envelope(
        a, b, plan.sum(-1), plan.sum(-2), solution.f, solution.g, 0.0 if solver == "ppa" else options.eps
    )
    run.solution = solution  # every problem's last inner solve, for the report
    warn_outer(run, outer_tol, max_outer)
    return GromovResult(
        value=distance + entropic + envelope,
        distance=distance,
        solution=solution,
        errors=run.errors,
        n_outer=run.n_outer,
        n_inner=run.n_inner,
        outer_tol=outer_tol,
        alpha=alpha,
        loss=loss,
        solver=solver,
    )
