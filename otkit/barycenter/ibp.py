r"""Iterative Bregman projections in the log domain: the loop behind the fixed-support and grid barycenters.

With the Gibbs kernel ``K = exp(-C / eps)``, inputs ``a_k`` and weights ``w_k`` (summing to 1), the barycenter
``b`` and the plans ``P_k = diag(u_k) K diag(v_k)`` solve (Benamou et al. 2015)

.. math::
    \min_{b, P_k} \sum_k w_k\, \varepsilon\, \mathrm{KL}(P_k \,|\, K)
    \quad \text{s.t.} \quad P_k 1 = a_k,\ P_k^\top 1 = b,

and one iteration projects on each constraint in turn, in log-scalings (``log u_k``, ``log v_k``)::

    log u_k = log a_k - log(K exp(log v_k))
    log b   = sum_k w_k log(K^T exp(log u_k))        (+ log d, debiased)
    log v_k = log b - log(K^T exp(log u_k))

The debiased variant (Janati et al. 2020) multiplies ``b`` by ``d``, the fixed point of ``d = sqrt(d b / K d)``
(``d`` is ``exp`` of the self-transport potential of ``b`` over ``eps``), :data:`DEBIAS_STEPS` steps of which run
per iteration.

The column target ``b`` changes at every iteration, so this is a loop of its own rather than ``k`` calls of
:func:`otkit.sinkhorn`; it follows otkit's one stopping rule (:mod:`otkit._convergence`): every ``check_every``
iterations, the weighted relative L1 violation of the column constraints,
``sum_k w_k |P_k^T 1 - b|_1 / |b|_1``, computed per problem on the device, one host read per check.
"""

from __future__ import annotations

import torch
from torch import Tensor

from otkit._convergence import check_finite_potentials, is_check, should_stop, warn_unconverged
from otkit._solution import safe_log
from otkit.barycenter.kernels import DenseKernel, GridKernel
from otkit.barycenter.result import BarycenterResult
from otkit.options import SinkhornOptions

__all__ = ["DEBIAS_STEPS", "bregman_barycenter", "solve_barycenter"]

# Steps of the debiasing fixed point per iteration (POT's count: the same iterates, so the same barycenters).
DEBIAS_STEPS = 10
_FINITE_HINT = "Check the scale of the cost against eps and that every input has positive mass."


def _weighted_sum(weights: Tensor, terms: Tensor, axis: int) -> Tensor:
    """``sum_k w_k t_k`` along ``axis`` (kept), with ``0 * t = 0`` for zero weights."""
    return torch.where(weights > 0, weights * terms, 0.0).sum(axis, keepdim=True)


def bregman_barycenter(
    log_hists: Tensor,
    weights: Tensor,
    kernel: DenseKernel | GridKernel,
    bar_shape: tuple[int, ...],
    options: SinkhornOptions,
    debiased: bool,
) -> tuple[Tensor, int, Tensor]:
    """Run the projections. Returns ``(log b, n_iter, errors)``.

    Shapes: ``log_hists (*batch, k, *support)``, ``weights (*batch, k, 1...)`` (one trailing 1 per dim of the
    support, summing to 1 over ``k``), ``bar_shape`` the barycenter's support (``(m,)`` or ``(H, W)``);
    ``log b (*batch, *bar_shape)``, ``errors (n_checks, *batch)``. Autograd records the iterations.
    """
    event = len(bar_shape)
    axis = -1 - event
    event_dims = tuple(range(-event, 0))
    log_v = log_hists.new_zeros((*log_hists.shape[: axis + log_hists.dim() + 1], *bar_shape))
    log_d = log_v.new_zeros((*log_v.shape[:axis], 1, *bar_shape)) if debiased else None
    errors = []
    n_iter = 0
    for it in range(options.max_iter):
        n_iter = it + 1
        log_u = log_hists - kernel.apply(log_v)
        log_ktu = kernel.apply_t(log_u)
        log_bar = _weighted_sum(weights, log_ktu, axis)
        if log_d is not None:
            log_bar = log_bar + log_d
            for _ in range(DEBIAS_STEPS):
                log_d = 0.5 * (log_d + log_bar - kernel.apply_t(log_d))
        if is_check(it, options):
            with torch.no_grad():
                bar = torch.exp(log_bar)
                gaps = (torch.exp(log_v + log_ktu) - bar).abs().sum(event_dims) / bar.sum(event_dims)
                errors.append(_weighted_sum(weights.flatten(-event - 1), gaps, -1).squeeze(-1))
            if should_stop(errors[-1], options):
                break
        log_v = log_bar - log_ktu
    log_bar = log_bar.squeeze(axis)
    check_finite_potentials(log_bar, log_v, options.eps, _FINITE_HINT)
    return log_bar, n_iter, torch.stack(errors)


def solve_barycenter(
    hists: Tensor,
    weights: Tensor,
    kernel: DenseKernel | GridKernel,
    support: tuple[int, ...],
    options: SinkhornOptions,
    debiased: bool,
) -> BarycenterResult:
    """:func:`bregman_barycenter` on ``hists`` (not logs), as a result; warns when it did not converge.

    ``weights`` are broadcast against ``hists`` (trailing singleton dims for the support's dims).
    """
    log_bar, n_iter, errors = bregman_barycenter(safe_log(hists), weights, kernel, support, options, debiased)
    result = BarycenterResult(
        barycenter=log_bar.exp(),
        weights=weights.reshape(weights.shape[: weights.dim() - len(support)]),
        options=options,
        debiased=debiased,
        n_iter=n_iter,
        errors=errors,
        method=kernel.method,
    )
    warn_unconverged([result.error], options)
    return result
