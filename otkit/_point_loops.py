"""Log-domain Sinkhorn loops on a :class:`~otkit.geometry.Geometry`, with geomloss's eps-annealing.

The updates are those of :func:`otkit._iterations.solve_log`, written with the soft-min of :mod:`otkit._tiles`
(``lam = rho / (rho + eps)``, ``1`` on a balanced side)::

    f_i = -lam_a eps LSE_j(log b_j + g_j / eps - C_ij / eps),   g_j = -lam_b eps LSE_i(log a_i + f_i / eps - C_ij / eps)

- :func:`solve_pair` alternates them (``f`` from ``g``, then ``g`` from ``f``), from ``g = 0`` or a warm start;
- :func:`solve_symmetric` solves ``OT(a, a)`` on a symmetric cost, whose optimum has ``f = g``, with the averaged
  update ``f <- (f + T(f)) / 2`` (one soft-min per iteration instead of two).

Annealing (``scaling``): the first iterations run at the decreasing values of :func:`eps_schedule`, one iteration
each, warm-starting each from the last; then up to ``max_iter`` iterations run at the target ``eps``, checked every
``check_every`` against ``tol`` with the relative L1 marginal violation of :mod:`otkit._iterations`.
Each soft-min is shifted by the previous iterate's value, which is the exact answer at the fixed point.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from otkit._iterations import Iterate
from otkit._tiles import lse
from otkit.geometry import Geometry
from otkit.options import SinkhornOptions

__all__ = ["eps_schedule", "solve_pair", "solve_symmetric"]


def eps_schedule(eps: float, spread: float, power: int, scaling: float | None) -> list[float]:
    """geomloss's annealing schedule in cost units, the target ``eps`` excluded: ``[]`` without ``scaling``.

    ``spread`` is the starting eps (:meth:`Geometry.spread`: ``p D^p`` for the Euclidean costs). geomloss runs
    ``[D^p] + [exp(e) for e in arange(p log D, p log blur, p log scaling)] + [blur^p]`` in its units; in ours,
    that is ``[s, s, s scaling^p, s scaling^2p, ...]`` while above ``eps``, then ``eps``.
    """
    if scaling is None or spread <= eps:
        return []
    step = power * math.log(scaling)
    count = math.ceil((math.log(eps) - math.log(spread)) / step)
    return [spread] + [math.exp(math.log(spread) + k * step) for k in range(count)]


def _lam(rho: float | None, eps: float) -> float:
    return 1.0 if rho is None else rho / (rho + eps)


def _error(log_mass: Tensor, weights: Tensor, potential: Tensor, rho: float | None) -> Tensor:
    """Relative L1 gap between marginals ``exp(log_mass)`` and their optimality target, ``(B,)``."""
    target = weights if rho is None else weights * torch.exp(-potential / rho)
    return (torch.exp(log_mass) - target).abs().sum(-1) / weights.sum(-1)


def _is_check(it: int, options: SinkhornOptions) -> bool:
    return it == options.max_iter - 1 or (options.tol is not None and (it + 1) % options.check_every == 0)


def _stopped(errors: list[Tensor], options: SinkhornOptions) -> bool:
    return options.tol is not None and bool(errors[-1].max() <= options.tol)


def solve_pair(
    geom: Geometry,
    b: Tensor,
    log_a: Tensor,
    log_b: Tensor,
    options: SinkhornOptions,
    schedule: list[float],
    init: tuple[Tensor, Tensor] | None,
    trace: list[tuple[Tensor, Tensor]] | None = None,
) -> Iterate:
    """Alternating Sinkhorn on ``geom`` ``(B, n, m)``; ``log_a`` ``(B, n)``, ``b``, ``log_b`` ``(B, m)``.

    Runs ``len(schedule)`` annealing iterations, then at most ``options.max_iter`` at ``options.eps``. Returns the
    potentials in cost units, the iterations run (schedule included) and the errors ``(n_checks, B)``. With a
    ``trace`` list, every iteration appends its ``(f, g)`` to it.
    """
    transposed = geom.transpose()
    f, g = (None, torch.zeros_like(b)) if init is None else init
    g_known = init is not None
    stages = schedule + [options.eps] * options.max_iter
    errors: list[Tensor] = []
    n_iter = len(stages)
    for it, eps in enumerate(stages):
        lam_a, lam_b = _lam(options.rho_a, eps), _lam(options.rho_b, eps)
        f = -lam_a * eps * lse(geom, log_b + g / eps, eps, None if f is None else -f / (lam_a * eps))
        lse_g = lse(transposed, log_a + f / eps, eps, -g / (lam_b * eps) if g_known else None)
        check = it >= len(schedule) and _is_check(it - len(schedule), options)
        if check:
            errors.append(_error(log_b + g / eps + lse_g, b, g, options.rho_b))
        g, g_known = -lam_b * eps * lse_g, True
        if trace is not None:
            trace.append((f, g))
        if check and _stopped(errors, options):
            n_iter = it + 1
            break
    return Iterate(f=f, g=g, n_iter=n_iter, errors=torch.stack(errors))


def solve_symmetric(
    geom: Geometry, a: Tensor, log_a: Tensor, options: SinkhornOptions, schedule: list[float]
) -> Iterate:
    """``OT(a, a)`` on a symmetric ``geom`` ``(B, n, n)`` with ``rho = options.rho_a``: ``f = g`` at the optimum.

    Starts from ``f = T(0)`` at the first eps, as geomloss; the stopping error is that of the row marginals of
    the symmetric plan ``a_i a_j exp((f_i + f_j - C_ij) / eps)``.
    """
    stages = schedule + [options.eps] * options.max_iter
    rho = options.rho_a
    first = stages[0]
    f = -_lam(rho, first) * first * lse(geom, log_a, first)
    errors: list[Tensor] = []
    n_iter = len(stages)
    for it, eps in enumerate(stages):
        lam = _lam(rho, eps)
        lse_f = lse(geom, log_a + f / eps, eps, -f / (lam * eps))
        check = it >= len(schedule) and _is_check(it - len(schedule), options)
        if check:
            errors.append(_error(log_a + f / eps + lse_f, a, f, rho))
        f = 0.5 * (f - lam * eps * lse_f)
        if check and _stopped(errors, options):
            n_iter = it + 1
            break
    return Iterate(f=f, g=f, n_iter=n_iter, errors=torch.stack(errors))
