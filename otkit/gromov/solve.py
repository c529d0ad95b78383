"""Entropic Gromov-Wasserstein and fused GW between spaces given by their intra-cost matrices."""

from __future__ import annotations

import dataclasses
import functools

import torch
from torch import Tensor

from otkit._checks import check_cost, check_masses, compute_dtype, is_tracing, prepare_marginal
from otkit.dense.result import SinkhornResult
from otkit.dense.solve import solve_dense
from otkit.gromov.losses import Decomposition, GromovLoss, check_loss, decompose
from otkit.gromov.outer import (
    SOLVERS,
    GromovSolver,
    OuterRun,
    check_alpha,
    check_outer,
    run_outer,
    warn_outer,
    weights_envelope,
)
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
    settled: a batch then costs what its problems cost one by one). The active problems' matrices and iterates are
    kept packed, ``(B_active, ...)``, and packed again only when some settle; a settled problem's plan, potentials
    and cost go to the batch's store. The parts of the linearised cost that do not depend on the plan are formed
    once: ``G(P) = base - h_1(Cx) P (s h_2(Cy))^T`` (and the same with both matrices transposed when they are not
    symmetric), ``base = alpha (f_1(Cx) a + f_2(Cy) b) (+ (1 - alpha) M)`` and ``s = alpha`` (``2 alpha`` when
    symmetric).
    """

    def __init__(
        self,
        work: Decomposition,
        M: Tensor | None,
        a: Tensor,
        b: Tensor,
        start: Tensor,
        batch,
        alpha: float,
        symmetric: bool,
        warm: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        n, m = a.shape[-1], b.shape[-1]
        self.batch, self.symmetric = batch, symmetric
        work = Decomposition(*(t.reshape(-1, *t.shape[-2:]) for t in (work.f1, work.f2, work.h1, work.h2)))
        a, b = a.reshape(-1, n), b.reshape(-1, m)
        self.a, self.b = a, b
        constant = work.constant(a, b)
        constant = 2 * constant if symmetric else constant + work.constant(a, b, transposed=True)
        base = alpha * constant
        if M is not None:
            base = base + (1 - alpha) * M.reshape(-1, n, m)
        scale = 2 * alpha if symmetric else alpha
        plan = start.reshape(-1, n, m).clone()
        zeros = torch.zeros_like(plan)
        f, g = (
            (torch.zeros_like(a), torch.zeros_like(b)) if warm is None else (t.reshape(-1, t.shape[-1]) for t in warm)
        )
        self.warm = warm is not None
        self.store = {"plan": plan, "cost": zeros, "f": f, "g": g}
        self.store["error"] = a.new_zeros(a.shape[0])
        iterates = {key: value.clone() for key, value in self.store.items()}
        self.live = {"h1": work.h1, "h2": scale * work.h2, "base": base, "a": a, "b": b, **iterates}
        self.active = torch.arange(a.shape[0], device=a.device)

    def linearised(self) -> Tensor:
        """``G(P_k)`` of the active problems ``(B_active, n, m)``."""
        live = self.live
        cost = torch.baddbmm(live["base"], live["h1"], live["plan"] @ live["h2"].mT, alpha=-1)
        if not self.symmetric:
            cost = torch.baddbmm(cost, live["h1"].mT, live["plan"] @ live["h2"], alpha=-1)
        return cost

    def step(self, solver: str, options: SinkhornOptions, has_init: bool):
        """The outer step: the linearised costs of the active problems and their inner solve."""
        eps = options.eps

        def step(previous: SinkhornResult | None) -> SinkhornResult:
            live = self.live
            cost = self.linearised()
            if solver == "ppa":  # the proximal term: -eps log(P_k / (a b)), exact from the previous solve
                if previous is not None:
                    cost = cost - (live["f"].unsqueeze(-1) + live["g"].unsqueeze(-2) - live["cost"])
                elif has_init:
                    cost = cost - eps * _log_ratio(live["plan"], live["a"].unsqueeze(-1) * live["b"].unsqueeze(-2))
            warm = (live["f"], live["g"]) if previous is not None or self.warm else None
            result = solve_dense(cost, live["a"], live["b"], options, warm)
            live["f"], live["g"], live["cost"], live["error"] = result.f, result.g, result.cost, result.error
            return result

        return step

    def change(self, outer_tol: float | None):
        """The plans' relative L1 change ``(B,)`` (0 for settled problems); settles those within ``outer_tol``."""

        def change(previous: SinkhornResult | None, current: SinkhornResult) -> Tensor:
            live = self.live
            plan = current.plan
            moved = (plan - live["plan"]).abs().sum((-2, -1)) / live["a"].sum(-1)
            live["plan"] = plan
            errors = self.store["error"].new_zeros(self.store["error"].shape)
            errors[self.active] = moved
            if outer_tol is not None:
                keep = moved > outer_tol
                if not bool(keep.all()):
                    self._pack(keep)
            return errors.reshape(self.batch)

        return change

    def _pack(self, keep: Tensor) -> None:
        """Store the problems that settled and keep only the others (``keep``, over the active ones) live."""
        settled = self.active[~keep]
        for key, value in self.store.items():
            value[settled] = self.live[key][~keep]
        self.live = {key: value[keep] for key, value in self.live.items()}
        self.active = self.active[keep]

    def finish(self) -> None:
        """Move the problems still active to the store (which then holds every problem's last iterate)."""
        self._pack(torch.zeros_like(self.active, dtype=torch.bool))

    def solution(self, options: SinkhornOptions, last: SinkhornResult) -> SinkhornResult:
        """Every problem's last inner solve as one :class:`~otkit.SinkhornResult` ``(*batch, n, m)``."""
        self.finish()
        n, m = self.store["f"].shape[-1], self.store["g"].shape[-1]
        return SinkhornResult(
            f=self.store["f"].reshape(*self.batch, n),
            g=self.store["g"].reshape(*self.batch, m),
            cost=self.store["cost"].reshape(*self.batch, n, m),
            a=self.a.reshape(*self.batch, n),
            b=self.b.reshape(*self.batch, m),
            options=options,
            n_iter=last.n_iter,
            errors=self.store["error"].reshape(1, *self.batch),
            domain=last.domain,
            backend=last.backend,
        )


# A float64 problem first iterates in float32 with these tolerances at the loosest (see ``mixed_precision``),
# when a bound on its linearised costs lies in FLOAT32_RANGE (well inside float32's, so no entry over- or
# underflows).
FLOAT32_OUTER_TOL = 1e-5
FLOAT32_TOL = 1e-6
FLOAT32_RANGE = (1e-20, 1e20)


def _fits_float32(work: Decomposition, M: Tensor | None, mass: Tensor) -> bool:
    """Whether a bound on every entry of the batch's linearised costs lies in :data:`FLOAT32_RANGE`.

    The bound is ``2 |a|_1 (max|f_1| + max|f_2| + max|h_1| max|h_2|) + max|M|`` (one host read).
    """
    top = [t.abs().amax() for t in (work.f1, work.f2, work.h1, work.h2)]
    bound = 2 * mass.amax() * (top[0] + top[1] + top[2] * top[3])
    if M is not None:
        bound = bound + M.abs().amax()
    return FLOAT32_RANGE[0] < float(bound) < FLOAT32_RANGE[1]


def _outer_loop(
    work: Decomposition,
    a: Tensor,
    b: Tensor,
    start: Tensor,
    has_init: bool,
    options: SinkhornOptions,
    max_outer: int,
    outer_tol: float | None,
    warm: tuple[Tensor, Tensor] | None = None,
    *,
    M: Tensor | None,
    batch: torch.Size,
    alpha: float,
    symmetric: bool,
    solver: str,
) -> tuple[_Flat, OuterRun]:
    """The outer loop from the plan ``start`` (and inner potentials ``warm``) in the dtype of ``work``."""
    M = None if M is None else M.detach().to(work.h1.dtype)
    flat = _Flat(work, M, a, b, start, batch, alpha, symmetric, warm)
    return flat, run_outer(flat.step(solver, options, has_init), flat.change(outer_tol), max_outer, outer_tol)


def _float32_start(loop, work: Decomposition, a, b, start, has_init, options, max_outer, outer_tol):
    """The float32 iterations of a float64 solve, down to ``max(outer_tol, FLOAT32_OUTER_TOL)``.

    Returns the loop's state and record, or ``None`` when float32 overflows (the solve then runs in float64 only).
    """
    single = Decomposition(*(t.float() for t in (work.f1, work.f2, work.h1, work.h2)))
    tol = None if options.tol is None else max(options.tol, FLOAT32_TOL)
    try:
        flat, run = loop(
            single,
            a.float(),
            b.float(),
            start.float(),
            has_init,
            dataclasses.replace(options, tol=tol),
            max_outer,
            max(outer_tol, FLOAT32_OUTER_TOL),
        )
    except FloatingPointError:
        return None
    flat.finish()
    return flat, run


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
    mixed_precision: bool = True,
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
        mixed_precision: For float64 problems, iterate in float32 first (its products of ``n x n`` matrices cost
            half), until every plan moves by at most ``max(outer_tol, 1e-5)`` (inner ``tol`` at least ``1e-6``),
            then go on in float64 from that plan and its potentials. The float64 iterations decide convergence by
            the same rule, so the result is float64's stationary point to the same tolerance; the float32
            iterations count towards ``max_outer`` (at most ``max_outer - 1`` of them) and appear in ``errors``.
            A batch whose costs would leave float32's range (a bound on the linearised costs outside
            ``[1e-20, 1e20]``) runs in float64 only, as does a solve whose float32 phase overflows. ``False``:
            float64 throughout. Ignored for other dtypes and when ``outer_tol`` is ``None``.
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
        work = parts.detach()
        loop = functools.partial(_outer_loop, M=M, batch=batch, alpha=alpha, symmetric=symmetric, solver=solver)
        first, warm = None, None
        if (
            mixed_precision
            and dtype == torch.float64
            and outer_tol is not None
            and max_outer > 1
            and _fits_float32(work, M, a0.sum(-1))
        ):
            first = _float32_start(loop, work, a0, b0, start, init is not None, options, max_outer - 1, outer_tol)
        if first is not None:
            start, warm = first[0].store["plan"].double(), (first[0].store["f"].double(), first[0].store["g"].double())
        budget = max_outer if first is None else max_outer - first[1].n_outer
        flat, run = loop(work, a0, b0, start, first is not None or init is not None, options, budget, outer_tol, warm)
        if first is not None:
            run = OuterRun(run.solution, torch.cat([first[1].errors, run.errors]), first[1].n_inner + run.n_inner)
        solution = flat.solution(options, run.solution)
        plan = flat.store["plan"].reshape(*batch, n, m)  # the last inner solve's plan, formed by the loop
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
