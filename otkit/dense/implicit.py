"""Implicit differentiation of the Sinkhorn fixed point.

The converged potentials satisfy, with ``E_ij = exp((f_i + g_j - C_ij) / eps)``::

    F_i(f, g) = exp(-f_i / rho_a) - sum_j b_j E_ij = 0        (exp(-f / rho) = 1 on a balanced side)
    G_j(f, g) = exp(-g_j / rho_b) - sum_i a_i E_ij = 0

The implicit function theorem gives the vector-Jacobian product of ``(f, g)`` with respect to ``(C, a, b)``
from one linear solve with the Jacobian of ``(F, G)``, independent of how many iterations produced ``(f, g)``:
the backward keeps one cost-sized matrix, not one per iteration. Writing ``r_i = sum_j b_j E_ij``,
``c_j = sum_i a_i E_ij`` and ``k = 1 + eps / rho`` (``1`` when balanced), the adjoint ``mu`` solves::

    [ diag(k_a r)    diag(a) E   ] [mu_f]   [grad_f]
    [ diag(b) E^T    diag(k_b c) ] [mu_g] = [grad_g]

and then ``grad_C = E * (b_j mu_f_i + a_i mu_g_j)``, ``grad_a = -eps E mu_g``, ``grad_b = -eps E^T mu_f``.
The smaller block is kept after eliminating the larger one (a Schur complement of size ``min(n, m)``), solved
densely up to :data:`DENSE_SOLVE_LIMIT` and by preconditioned conjugate gradients beyond. When both sides are
balanced the system is singular along the gauge ``(f + t, g - t)``; gradients of gauge-invariant outputs (the
plan, the value) are unaffected, and the solve is regularised along that direction.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from otkit._solution import Iterate
from otkit.options import SinkhornOptions

__all__ = ["DENSE_SOLVE_LIMIT", "ImplicitSinkhorn", "implicit_vjp"]

DENSE_SOLVE_LIMIT = 256


def _kappa(rho: float | None, eps: float) -> float:
    return 1.0 if rho is None else 1.0 + eps / rho


def _schur_solve(
    e: Tensor, a: Tensor, b: Tensor, dr: Tensor, dc: Tensor, gf: Tensor, gg: Tensor, singular: bool
) -> tuple[Tensor, Tensor]:
    """Solve the adjoint system by eliminating the ``f`` block. ``e (*batch, n, m)``; returns ``(mu_f, mu_g)``."""
    # Right-hand side of the reduced system on the g block: gg - b * E^T (gf / dr).
    w = a / dr  # (*batch, n)
    rhs = gg - b * ((gf / dr).unsqueeze(-2) @ e).squeeze(-2)
    m = e.shape[-1]
    if m <= DENSE_SOLVE_LIMIT:
        # S = diag(dc) - diag(b) E^T diag(a / dr) E, (*batch, m, m); null vectors b (right) and 1 (left).
        schur = -b.unsqueeze(-1) * ((e * w.unsqueeze(-1)).transpose(-1, -2) @ e)
        schur = schur + torch.diag_embed(dc)
        if singular:
            schur = schur + b.unsqueeze(-2) / b.mean(-1, keepdim=True).unsqueeze(-1)
        mu_g = torch.linalg.solve(schur, rhs)
    else:
        mu_g = b * _cg_symmetric(e, w, b, dc, rhs, singular)
    mu_f = (gf - a * (e @ mu_g.unsqueeze(-1)).squeeze(-1)) / dr
    return mu_f, mu_g


def _cg_symmetric(e: Tensor, w: Tensor, b: Tensor, dc: Tensor, rhs: Tensor, singular: bool) -> Tensor:
    """Conjugate gradients on ``(S diag(b)) y = rhs``, the symmetric positive semi-definite form of the system.

    Zero-mass columns (``b_j = 0``) get a unit diagonal, so their ``y_j`` (and ``mu_g_j = b_j y_j``) vanish: the
    plan does not depend on their potentials. The balanced null vector ``1`` is closed by adding ``1 1^T``.
    """
    support = b > 0

    def matvec(y: Tensor) -> Tensor:
        by = b * y
        out = dc * by - b * (((e @ by.unsqueeze(-1)).squeeze(-1) * w).unsqueeze(-2) @ e).squeeze(-2)
        out = torch.where(support, out, y)
        if singular:
            out = out + (y * support).sum(-1, keepdim=True) * support
        return out

    diag = dc * b - b.square() * (w.unsqueeze(-1) * e.square()).sum(-2)
    diag = torch.where(support, diag.clamp_min(torch.finfo(e.dtype).tiny), torch.ones_like(diag))
    if singular:
        diag = diag + support
    rhs = torch.where(support, rhs, torch.zeros_like(rhs))
    tol = 1e-12 if e.dtype == torch.float64 else 1e-6
    y = torch.zeros_like(rhs)
    r = rhs.clone()
    z = r / diag
    p = z.clone()
    rz = (r * z).sum(-1, keepdim=True)
    scale = rhs.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(e.dtype).tiny)
    for it in range(4 * rhs.shape[-1]):
        ap = matvec(p)
        alpha = rz / (p * ap).sum(-1, keepdim=True).clamp_min(torch.finfo(e.dtype).tiny)
        y = y + alpha * p
        r = r - alpha * ap
        if it % 10 == 9 and bool((r.norm(dim=-1, keepdim=True) <= tol * scale).all()):
            return y
        z = r / diag
        rz_new = (r * z).sum(-1, keepdim=True)
        p = z + (rz_new / rz.clamp_min(torch.finfo(e.dtype).tiny)) * p
        rz = rz_new
    worst = float((r.norm(dim=-1, keepdim=True) / scale).max())
    if worst > tol:
        warnings.warn(
            f"the implicit backward's conjugate-gradient solve stopped at relative residual {worst:.2g} "
            f"(> {tol:g}); gradients are approximate. Converge the forward further (smaller tol) or use "
            "grad='unroll'.",
            RuntimeWarning,
            stacklevel=2,
        )
    return y


def implicit_vjp(
    cost: Tensor,
    a: Tensor,
    b: Tensor,
    f: Tensor,
    g: Tensor,
    grad_f: Tensor,
    grad_g: Tensor,
    options: SinkhornOptions,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients ``(grad_C, grad_a, grad_b)`` of a loss whose gradients at the optimum ``(f, g)`` are given.

    Shapes: cost ``(*batch, n, m)``, a and f ``(*batch, n)``, b and g ``(*batch, m)``. Reads ``eps``, ``rho_a``
    and ``rho_b`` of ``options``.
    """
    eps, rho_a, rho_b = options.eps, options.rho_a, options.rho_b
    # (*batch, n, m), built in place. The exponent is capped below the dtype's overflow: only entries of zero
    # (or vanishing) weight exceed it, and their terms are multiplied by those weights.
    cap = 0.9 * math.log(torch.finfo(cost.dtype).max)
    e = (f.unsqueeze(-1) + g.unsqueeze(-2)).sub_(cost).div_(eps).clamp_(max=cap).exp_()
    dr = _kappa(rho_a, eps) * (e @ b.unsqueeze(-1)).squeeze(-1)
    dc = _kappa(rho_b, eps) * (a.unsqueeze(-2) @ e).squeeze(-2)
    singular = rho_a is None and rho_b is None
    n, m = cost.shape[-2:]
    if m <= n:
        mu_f, mu_g = _schur_solve(e, a, b, dr, dc, grad_f, grad_g, singular)
    else:
        mu_g, mu_f = _schur_solve(e.transpose(-1, -2), b, a, dc, dr, grad_g, grad_f, singular)
    grad_cost = mu_f.unsqueeze(-1) * b.unsqueeze(-2)
    grad_cost.addcmul_(a.unsqueeze(-1), mu_g.unsqueeze(-2)).mul_(e)
    grad_a = -eps * (e @ mu_g.unsqueeze(-1)).squeeze(-1)
    grad_b = -eps * (mu_f.unsqueeze(-2) @ e).squeeze(-2)
    return grad_cost, grad_a, grad_b


class ImplicitSinkhorn(torch.autograd.Function):
    """``(cost, a, b) -> (f, g)`` through a Sinkhorn loop run without autograd, differentiated implicitly.

    ``run(cost, a, b)`` performs the iterations and returns an :class:`~otkit._solution.Iterate`; it is
    appended to ``out`` so the caller can read the iteration count and errors. The backward reads ``eps`` and
    ``rho_a``/``rho_b`` of ``options``.
    """

    @staticmethod
    def forward(ctx, cost, a, b, run, out, options):
        """Run the loop without autograd; keep the inputs and the potentials."""
        iterate: Iterate = run(cost, a, b)
        out.append(iterate)
        ctx.save_for_backward(cost, a, b, iterate.f, iterate.g)
        ctx.options = options
        return iterate.f, iterate.g

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_f, grad_g):
        """One adjoint solve (:func:`implicit_vjp`)."""
        cost, a, b, f, g = ctx.saved_tensors
        grad_f = torch.zeros_like(f) if grad_f is None else grad_f
        grad_g = torch.zeros_like(g) if grad_g is None else grad_g
        with torch.no_grad():
            grad_cost, grad_a, grad_b = implicit_vjp(cost, a, b, f, g, grad_f, grad_g, ctx.options)
        needs = ctx.needs_input_grad
        return (
            grad_cost if needs[0] else None,
            grad_a if needs[1] else None,
            grad_b if needs[2] else None,
            None,
            None,
            None,
        )
