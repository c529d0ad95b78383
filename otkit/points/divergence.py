"""The Sinkhorn divergence between point clouds: a differentiable, debiased OT loss."""

from __future__ import annotations

import torch
from torch import Tensor

from otkit._checks import check_rho, check_spread
from otkit._convergence import check_finite_potentials, warn_unconverged
from otkit.geometry.costs import Cost, Geometry
from otkit.geometry.loops import check_scaling, eps_schedule, solve_pair, solve_symmetric
from otkit.geometry.storage import Storage, choose_storage
from otkit.geometry.tiles import log_weights
from otkit.options import SinkhornOptions, SinkhornSettings, Unpack, resolve_options
from otkit.points.envelope import envelope_value
from otkit.points.result import DivergenceResult, PointCloudResult
from otkit.points.solve import ANNEALING_HINT, DEFAULT_SCALING, FINITE_HINT, prepare_problem

__all__ = ["sinkhorn_divergence"]


def sinkhorn_divergence(
    x: Tensor,
    y: Tensor,
    a: Tensor | None = None,
    b: Tensor | None = None,
    eps: float | None = None,
    *,
    cost: Cost = "sqeuclidean",
    debias: bool = True,
    rho: float | None = None,
    scaling: float | None = DEFAULT_SCALING,
    storage: Storage = "auto",
    options: SinkhornOptions | None = None,
    **settings: Unpack[SinkhornSettings],
) -> DivergenceResult:
    r"""Sinkhorn divergence between weighted point clouds, per problem of the batch.

    .. math::
        S_\varepsilon(a, b) = \mathrm{OT}_\varepsilon(a, b) - \tfrac12 \mathrm{OT}_\varepsilon(a, a)
        - \tfrac12 \mathrm{OT}_\varepsilon(b, b)

    where ``OT`` is the regularised value of :func:`otkit.sinkhorn` (``<P, C> + eps KL(P | a x b)``, plus
    ``rho KL`` terms on both marginals when ``rho`` is given). ``S >= 0``, ``S = 0`` for identical weighted
    clouds, and it interpolates between OT (small eps) and an MMD (large eps). With ``debias=False`` it is
    ``OT(a, b)`` alone.

    Gradients in ``x``, ``y``, ``a``, ``b`` are taken at the optimum (envelope theorem): no iteration is unrolled
    and the backward streams like the forward. On balanced problems only changes of ``a`` and ``b`` that keep their
    masses equal are meaningful; along those the gradient is exact (it is defined up to a constant per cloud).

    geomloss: ``SamplesLoss("sinkhorn", p=2, blur=s, scaling=sc, reach=r)`` uses the cost ``|x - y|^2 / 2`` and
    ``eps = s^2``, so ``sinkhorn_divergence(..., eps=e, rho=q, scaling=sc)`` with ``"sqeuclidean"`` equals twice
    geomloss's loss with ``blur = sqrt(e / 2)``, ``reach = sqrt(q / 2)`` (the same annealing schedule), up to
    ``e (m_a - m_b)^2 / 2``, a mass term that geomloss adds to unbalanced divergences. With ``"euclidean"``
    (geomloss's ``p=1``, ``blur = e``, ``reach = q``) they agree up to geomloss's floor of ``1e-4`` on distances. POT's
    ``ot.bregman.empirical_sinkhorn_divergence`` is another quantity: it leaves the entropic terms out and returns
    ``<P_ab, C> - (<P_aa, C> + <P_bb, C>) / 2`` at the three entropic plans.

    Args:
        x: ``(..., n, d)`` points of the first cloud.
        y: ``(..., m, d)`` points of the second; batch dims broadcast with those of ``x``.
        a: ``(n,)`` or ``(..., n)`` weights of ``x``; ``None``: ``1/n``.
        b: ``(m,)`` or ``(..., m)`` weights of ``y``; ``None``: ``1/m``.
        eps: Entropic regularisation (> 0), in cost units; ``None``: that of ``options`` (0.05 by default).
            Rescale the clouds (e.g. to unit diameter) to choose it.
        cost: ``"sqeuclidean"``, ``"euclidean"``, ``"cosine"``, ``"dot"``, or a callable (dense storage only).
        debias: Subtract the self terms (the divergence); ``False``: the entropic OT value ``OT(a, b)``.
        rho: KL weight relaxing both marginals (unbalanced divergence): shorthand for ``rho_a = rho_b = rho``;
            ``None``: balanced.
        scaling: eps-annealing, 0.5 by default as in geomloss (see :func:`otkit.sinkhorn_points`): each of the
            three solves sweeps eps down from the cost's spread, then iterates at ``eps`` until ``tol``, so the
            value is the converged one at the ``eps`` asked for; ``None``: no annealing.
        storage: ``"dense"``, ``"streaming"`` or ``"auto"`` (see :func:`otkit.sinkhorn_points`).
        options: All solver settings as one :class:`~otkit.SinkhornOptions`; ``None``: the defaults.
        **settings: Any other field of :class:`~otkit.SinkhornOptions` (see :func:`otkit.sinkhorn`):
            ``max_iter`` (iterations at ``eps`` per solve, after the annealing sweep), ``tol`` (each of the three
            solves stops once its relative L1 marginal violation is at most ``tol``), ``check_every``,
            ``backend`` (``"auto"``, ``"torch"`` or ``"triton"`` for streamed tiles). ``rho_a`` and ``rho_b``
            must be equal (both self terms relax their marginals by the same weight): prefer ``rho``.

    Returns:
        A :class:`~otkit.DivergenceResult`: ``value`` ``(...)``, the divergence of each problem (differentiable),
        and the three solves behind it (``ot_xy``, ``ot_xx``, ``ot_yy``), with ``n_iter`` and ``converged``.

    Raises:
        ValueError: on NaN/Inf points, mismatched dims, bad weights, unequal masses of a balanced problem,
            ``eps <= 0``, or a bad option (the message names it).

    Example:
        >>> import torch, otkit
        >>> x = torch.rand(200, 2, requires_grad=True)
        >>> res = otkit.sinkhorn_divergence(x, torch.rand(300, 2) + 1.0, eps=0.05)
        >>> res.value.backward()  # x.grad: the gradient flow that moves x onto y
        >>> bool(res.converged)
        True
    """
    options = _divergence_options(options, eps, rho, settings)
    eps = options.eps
    if not isinstance(debias, bool):
        raise ValueError(f"debias must be True or False, got {debias!r}.")
    scaling = check_scaling(scaling)
    x, y, a, b, batch = prepare_problem(x, y, a, b, cost, options)
    problems, n, m = x.shape[0], x.shape[1], y.shape[1]
    dense = choose_storage(storage, cost, problems * max(n, m) ** 2, x.dtype, x.shape[-1])
    backend = options.backend
    problems_of = [(Geometry.from_points(x, y, cost, dense, backend), x, y, a, b)]
    if debias:
        problems_of += [(Geometry.from_points(p, p, cost, dense, backend), p, p, w, w) for p, w in ((x, a), (y, b))]
    spread = max(geom.detach().spread() for geom, *_ in problems_of)
    check_spread(spread, eps, x.dtype)
    schedule = eps_schedule(eps, spread, problems_of[0][0].exponent_power(), scaling)
    solves = []
    for k, (geom, px, py, wa, wb) in enumerate(problems_of):
        work = geom.detach()
        with torch.no_grad():
            if k == 0:
                it = solve_pair(work, wb, log_weights(wa), log_weights(wb), options, schedule, None)
            else:
                it = solve_symmetric(work, wa, log_weights(wa), options, schedule)
        check_finite_potentials(it.f, it.g, eps, FINITE_HINT)
        value = envelope_value(geom, wa, wb, it.f, it.g, options)
        solves.append(
            PointCloudResult(
                f=it.f.reshape(*batch, it.f.shape[-1]),
                g=it.g.reshape(*batch, it.g.shape[-1]),
                value=value.reshape(batch),
                geometry=work,
                x=px.detach(),
                y=py.detach(),
                a=wa.detach().reshape(*batch, wa.shape[-1]),
                b=wb.detach().reshape(*batch, wb.shape[-1]),
                cost=cost,
                options=options,
                n_iter=it.n_iter,
                errors=it.errors.reshape(-1, *batch),
                storage="dense" if dense else "streaming",
            )
        )
    warn_unconverged([res.error for res in solves], options, ANNEALING_HINT if schedule else ", anneal (scaling=0.5)")
    value = solves[0].value
    if debias:
        value = value - 0.5 * (solves[1].value + solves[2].value)
    return DivergenceResult(
        value=value,
        ot_xy=solves[0],
        ot_xx=solves[1] if debias else None,
        ot_yy=solves[2] if debias else None,
        debias=debias,
    )


def _divergence_options(
    options: SinkhornOptions | None, eps: float | None, rho: float | None, settings: dict
) -> SinkhornOptions:
    """The options of a divergence: ``rho`` sets both relaxations, which must be equal."""
    rho = check_rho(rho, "rho")
    if rho is not None:
        if "rho_a" in settings or "rho_b" in settings:
            raise ValueError("pass either rho or rho_a/rho_b to sinkhorn_divergence, not both.")
        settings = {**settings, "rho_a": rho, "rho_b": rho}
    options = resolve_options("otkit.sinkhorn_divergence", options, eps, settings)
    if options.rho_a != options.rho_b:
        raise ValueError(
            f"sinkhorn_divergence relaxes both marginals by the same weight, got rho_a={options.rho_a} and "
            f"rho_b={options.rho_b}: pass rho= (or equal rho_a and rho_b)."
        )
    return options
