"""The one stopping rule of every Sinkhorn loop in otkit, and its reports.

Every loop (dense log and kernel domains, the streamed point-cloud loops, streamed attention, and the host side
of the fused kernels) reads its schedule and its stop decision here:

- :func:`is_check`: a convergence check runs every ``check_every`` iterations and at the last one (never while
  ``torch.compile`` traces, except the last);
- :func:`marginal_error`: the relative L1 violation of a marginal's optimality condition,
  ``|P^T 1 - b exp(-g / rho_b)|_1 / |b|_1`` (``b`` on a balanced side), computed on the device per problem;
- :func:`should_stop`: stop once every problem of the batch is at most ``tol`` (one host read per check).

The reports: :func:`warn_unconverged` (one :class:`ConvergenceWarning`, one wording) and
:func:`check_finite_potentials` (a ``FloatingPointError``, never a silent NaN).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from otkit._checks import caller_stacklevel, is_tracing
from otkit.options import SinkhornOptions

__all__ = [
    "ConvergenceWarning",
    "check_finite_potentials",
    "is_check",
    "lam",
    "lams",
    "marginal_error",
    "should_stop",
    "warn_unconverged",
]


class ConvergenceWarning(UserWarning):
    """A Sinkhorn solve stopped at ``max_iter`` before every problem reached ``tol``.

    Raised as a warning (once per call) by every solver of otkit; the result's ``converged`` says which problems
    did not converge.

    Example:
        >>> import warnings, torch, otkit
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     res = otkit.sinkhorn(torch.rand(8, 8), eps=1e-3, max_iter=5)
        >>> [w.category.__name__ for w in caught], bool(res.converged)
        (['ConvergenceWarning'], False)
    """


def lam(rho: float | None, eps: float) -> float:
    """The exponent ``rho / (rho + eps)`` of a relaxed side's update; ``1`` on a balanced side (``rho = None``)."""
    return 1.0 if rho is None else rho / (rho + eps)


def lams(options: SinkhornOptions) -> tuple[float, float]:
    """The exponents ``(lam_a, lam_b)`` of the two updates at ``options.eps``."""
    return lam(options.rho_a, options.eps), lam(options.rho_b, options.eps)


def is_check(it: int, options: SinkhornOptions) -> bool:
    """Whether iteration ``it`` (from 0) checks convergence: the last one, and every ``check_every``-th with a
    ``tol`` outside ``torch.compile`` tracing."""
    last = it == options.max_iter - 1
    return last or (options.tol is not None and not is_tracing() and (it + 1) % options.check_every == 0)


def marginal_error(sums: Tensor, weights: Tensor, potential: Tensor, rho: float | None) -> Tensor:
    """Relative L1 distance ``|sums - target|_1 / |weights|_1`` per problem, ``(..., n) -> (...)``.

    ``target`` is ``weights`` on a balanced side (``rho = None``) and ``weights * exp(-potential / rho)`` on a
    relaxed one (computed as ``exp(log w - potential / rho)``: a zero weight gives 0, never ``0 * inf``).
    """
    target = weights if rho is None else torch.exp(torch.log(weights) - potential / rho)
    return (sums - target).abs().sum(-1) / weights.sum(-1)


def should_stop(error: Tensor, options: SinkhornOptions) -> bool:
    """Whether every problem's last ``error`` is within ``options.tol`` (one host read; never while tracing)."""
    return options.tol is not None and not is_tracing() and bool(error.max() <= options.tol)


def warn_unconverged(errors: Sequence[Tensor], options: SinkhornOptions, hint: str = "") -> None:
    """One :class:`ConvergenceWarning` when any problem's last error in ``errors`` (one tensor per solve, each
    ``(*batch)``) is above ``options.tol``; nothing without a ``tol`` or while tracing.

    ``hint`` adds a remedy particular to the caller (e.g. annealing for point clouds).
    """
    if options.tol is None or is_tracing() or not errors:
        return
    failed = sum(int((~(err <= options.tol)).sum()) for err in errors)  # NaN counts as failed
    if not failed:
        return
    total = sum(err.numel() for err in errors)
    largest = max(float(err.max()) for err in errors)
    warnings.warn(
        f"Sinkhorn did not converge for {failed} of {total} problem(s): they did not reach tol={options.tol:g} in "
        f"max_iter={options.max_iter} iterations (largest error {largest:.3g}). Raise max_iter, increase eps"
        f"{hint}, or loosen tol (float32 resolves errors down to about 1e-7 times the number of points; float64 "
        "goes further); see the Convergence section of otkit.sinkhorn.",
        ConvergenceWarning,
        stacklevel=caller_stacklevel(),
    )


def check_finite_potentials(f: Tensor, g: Tensor, eps: float, hint: str) -> None:
    """Raise ``FloatingPointError`` (saying ``hint``: what to do) unless both potentials are finite."""
    if not bool(torch.isfinite(f).all() & torch.isfinite(g).all()):
        raise FloatingPointError(f"Sinkhorn produced non-finite potentials (eps={eps}). {hint}")
