r"""The outer loop of entropic Gromov-Wasserstein (mirror descent), its stopping rule and its envelope terms.

Mirror descent with step ``1 / eps`` (Peyre, Cuturi, Solomon 2016): each outer iteration linearises the objective
at the current plan and solves the entropic OT problem on that cost, ``P_{k+1} = argmin <P, G(P_k)> + eps KL(P|a x b)``
over ``P 1 = a``, ``P^T 1 = b``, warm-started from the previous potentials. The outer loop stops once every
problem's plan moved by at most ``outer_tol`` in relative L1 norm, ``|P_{k+1} - P_k|_1 / |a|_1``, checked at every
outer iteration (one host read each, next to the inner solve's own), or after ``max_outer`` iterations.

A fixed point satisfies ``G(P) + eps log(P / (a b)) = f + g``: it is a stationary point of
``E(P) = <P, (1 - alpha) M> + alpha F(P) + eps KL(P | a x b)`` on the transport polytope, with Lagrange
multipliers the inner potentials ``(f, g)``. So (envelope theorem) the derivative of the value in the matrices is
that of ``E`` with the plan held fixed, and in the weights it is ``dE/da_i = f_i + eps (|b|_1 - p_i / a_i)``
(``p = P 1``), which :func:`weights_envelope` adds to a value without changing it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

from otkit._checks import caller_stacklevel
from otkit._convergence import ConvergenceWarning
from otkit.options import SinkhornOptions

__all__ = ["OuterRun", "check_alpha", "check_outer", "run_outer", "warn_outer", "weights_envelope"]

Solve = TypeVar("Solve")


def check_outer(max_outer: int, outer_tol: float | None, options: SinkhornOptions) -> float | None:
    """Validate the outer-loop settings (and refuse relaxed marginals); returns ``outer_tol`` as a float."""
    if not isinstance(max_outer, int) or isinstance(max_outer, bool) or max_outer < 1:
        raise ValueError(f"max_outer must be an int >= 1 (outer mirror-descent iterations), got {max_outer!r}.")
    if outer_tol is not None and not (isinstance(outer_tol, (int, float)) and outer_tol >= 0):
        raise ValueError(f"outer_tol must be None (run max_outer iterations) or a number >= 0, got {outer_tol!r}.")
    if options.rho_a is not None or options.rho_b is not None:
        raise ValueError(
            "Gromov-Wasserstein here is balanced: rho_a and rho_b must be None (got "
            f"rho_a={options.rho_a}, rho_b={options.rho_b}). Normalise a and b to the same mass instead."
        )
    return None if outer_tol is None else float(outer_tol)


def check_alpha(alpha: float | None, fused: bool) -> float:
    """``alpha`` of a solve: 1 without a feature cost, 0.5 by default with one; a number in ``[0, 1]``."""
    if alpha is None:
        return 0.5 if fused else 1.0
    if not fused:
        raise ValueError(
            f"alpha={alpha!r} weights the structure term against a feature cost, but none was given: pass M= "
            "(fused Gromov-Wasserstein) or drop alpha."
        )
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be a number in [0, 1] (the weight of the structure term), got {alpha!r}.")
    return float(alpha)


class OuterRun:
    """The record of an outer loop: the last solve, the errors ``(n_outer, B)`` and the inner iterations."""

    def __init__(self, solution: object, errors: Tensor, n_inner: int) -> None:
        self.solution, self.errors, self.n_inner = solution, errors, n_inner

    @property
    def n_outer(self) -> int:
        """Outer iterations run."""
        return self.errors.shape[0]


def run_outer(
    step: Callable[[Solve | None], Solve],
    change: Callable[[Solve | None, Solve], Tensor],
    max_outer: int,
    outer_tol: float | None,
) -> OuterRun:
    """Run ``step`` until the plans' change is at most ``outer_tol`` everywhere, or ``max_outer`` times.

    ``step`` maps the previous solve (``None`` at first) to the next; ``change`` gives the relative L1 distance
    of their plans per problem.

    The inner solves' own convergence warnings are held back: :func:`warn_outer` reports once, at the end.
    """
    previous, errors, n_inner = None, [], 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(max_outer):
            current = step(previous)
            n_inner += current.n_iter
            errors.append(change(previous, current))
            previous = current
            if outer_tol is not None and bool(errors[-1].max() <= outer_tol):
                break
    return OuterRun(previous, torch.stack(errors), n_inner)


def warn_outer(run: OuterRun, outer_tol: float | None, max_outer: int) -> None:
    """One :class:`~otkit.ConvergenceWarning` when the outer loop or the last inner solve did not converge."""
    messages = []
    if outer_tol is not None:
        failed = int((~(run.errors[-1] <= outer_tol)).sum())
        if failed:
            messages.append(
                f"the plan of {failed} of {run.errors[-1].numel()} problem(s) still moved by more than "
                f"outer_tol={outer_tol:g} after max_outer={max_outer} outer iterations (largest change "
                f"{float(run.errors[-1].max()):.3g}): raise max_outer, increase eps, or loosen outer_tol"
            )
    inner = run.solution.converged
    if not bool(inner.all()):
        messages.append(
            f"the last inner Sinkhorn solve did not reach tol={run.solution.tol:g} for {int((~inner).sum())} "
            "problem(s): raise max_iter or increase eps"
        )
    if messages:
        warnings.warn(
            "Gromov-Wasserstein did not converge: " + "; ".join(messages) + ".",
            ConvergenceWarning,
            stacklevel=caller_stacklevel(),
        )


def _log_ratio(w: Tensor, fixed: Tensor) -> Tensor:
    """``log w - log fixed`` (0 at zero weights), differentiable in ``w``; zero in value when ``w == fixed``."""
    positive = fixed > 0
    ratio = torch.where(positive, w, 1.0) / torch.where(positive, fixed, 1.0)
    return torch.where(positive, torch.log(ratio), 0.0)


def weights_envelope(a: Tensor, b: Tensor, p: Tensor, q: Tensor, f: Tensor, g: Tensor, eps: float) -> Tensor:
    """A term that is 0 in value and carries the envelope derivative of ``E`` in the weights, ``(B,)``.

    ``a (B, n)``, ``b (B, m)`` are the (differentiable) weights, ``p``, ``q`` the detached plan's marginals and
    ``f``, ``g`` the detached inner potentials: its gradient in ``a`` is ``f + eps (|b|_1 - p / a)``.
    """
    a0, b0 = a.detach(), b.detach()
    linear = (f * (a - a0)).sum(-1) + (g * (b - b0)).sum(-1)
    mass = a.sum(-1) * b.sum(-1) - a0.sum(-1) * b0.sum(-1)
    logs = (p * _log_ratio(a, a0)).sum(-1) + (q * _log_ratio(b, b0)).sum(-1)
    return linear + eps * (mass - logs)
