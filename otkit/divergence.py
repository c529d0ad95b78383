"""The Sinkhorn divergence between point clouds: a differentiable, debiased OT loss."""

from __future__ import annotations

import torch
from torch import Tensor

from otkit._point_loops import eps_schedule, solve_pair, solve_symmetric
from otkit._point_value import envelope_value
from otkit._tiles import log_weights
from otkit._validation import check_rho
from otkit.geometry import Cost, Geometry
from otkit.options import Backend, SinkhornOptions
from otkit.points import (
    Storage,
    check_finite,
    check_scaling,
    check_spread,
    choose_storage,
    prepare_problem,
    warn_unconverged,
)

__all__ = ["sinkhorn_divergence"]


def sinkhorn_divergence(
    x: Tensor,
    y: Tensor,
    a: Tensor | None = None,
    b: Tensor | None = None,
    *,
    eps: float = 0.05,
    cost: Cost = "sqeuclidean",
    debias: bool = True,
    rho: float | None = None,
    scaling: float | None = None,
    max_iter: int = 100,
    tol: float | None = 1e-5,
    check_every: int = 10,
    storage: Storage = "auto",
    backend: Backend = "auto",
) -> Tensor:
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
        eps: Entropic regularisation (> 0), in cost units; rescale the clouds (e.g. to unit diameter) to choose it.
        cost: ``"sqeuclidean"``, ``"euclidean"``, ``"cosine"``, ``"dot"``, or a callable (dense storage only).
        debias: Subtract the self terms (the divergence); ``False``: the entropic OT value ``OT(a, b)``.
        rho: KL weight relaxing both marginals (unbalanced divergence); ``None``: balanced.
        scaling: geomloss's eps-annealing (see :func:`otkit.sinkhorn_points`); ``None``: none.
        max_iter: Iterations at ``eps`` per problem, after the annealing schedule.
        tol: Stop each of the three solves once its relative L1 marginal violation is at most ``tol``; ``None``
            runs ``max_iter`` iterations.
        check_every: Iterations between checks.
        storage: ``"dense"``, ``"streaming"`` or ``"auto"`` (see :func:`otkit.sinkhorn_points`).
        backend: ``"auto"``, ``"torch"`` or ``"triton"`` for streamed tiles (see :class:`otkit.SinkhornOptions`).

    Returns:
        ``(...)``: the divergence of each problem, differentiable.

    Raises:
        ValueError: on NaN/Inf points, mismatched dims, bad weights, unequal masses of a balanced problem,
            ``eps <= 0``, or a bad option (the message names it).

    Example:
        >>> import torch, otkit
        >>> x = torch.rand(200, 2, requires_grad=True)
        >>> loss = otkit.sinkhorn_divergence(x, torch.rand(300, 2) + 1.0, eps=0.01, scaling=0.9)
        >>> loss.backward()  # x.grad: the gradient flow that moves x onto y
    """
    rho = check_rho(rho, "rho")
    options = SinkhornOptions(
        eps=eps, rho_a=rho, rho_b=rho, max_iter=max_iter, tol=tol, check_every=check_every, backend=backend
    )
    if not isinstance(debias, bool):
        raise ValueError(f"debias must be True or False, got {debias!r}.")
    scaling = check_scaling(scaling)
    x, y, a, b, batch = prepare_problem(x, y, a, b, cost, options)
    problems, n, m = x.shape[0], x.shape[1], y.shape[1]
    dense = choose_storage(storage, cost, problems * max(n, m) ** 2, x.dtype, x.shape[-1])
    geom_xy = Geometry.from_points(x, y, cost, dense, backend)
    pairs = [(geom_xy, a, b)]
    if debias:
        pairs += [(Geometry.from_points(p, p, cost, dense, backend), w, w) for p, w in ((x, a), (y, b))]
    spread = max(geom.detach().spread() for geom, _, _ in pairs)
    check_spread(spread, eps, x.dtype)
    schedule = eps_schedule(eps, spread, geom_xy.exponent_power(), scaling)
    values, flags = [], []
    for k, (geom, wa, wb) in enumerate(pairs):
        with torch.no_grad():
            if k == 0:
                it = solve_pair(geom.detach(), wb, log_weights(wa), log_weights(wb), options, schedule, None)
            else:
                it = solve_symmetric(geom.detach(), wa, log_weights(wa), options, schedule)
        check_finite(it.f, it.g, eps)
        values.append(envelope_value(geom, wa, wb, it.f, it.g, options))
        if tol is not None:
            flags.append(it.errors[-1] <= tol)
    warn_unconverged(flags, options)
    value = values[0] if not debias else values[0] - 0.5 * (values[1] + values[2])
    return value.reshape(batch)
