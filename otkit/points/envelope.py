r"""The OT value of a point-cloud solve and its gradient at the optimum, and the plan applied to matrices.

At the optimum ``(f, g)`` the regularised OT value equals the dual objective

.. math::
    D = \Phi_a(f) + \Phi_b(g) - \varepsilon \big(\langle a \otimes b, e^{(f \oplus g - C)/\varepsilon}\rangle
        - m_a m_b\big),
    \qquad \Phi_a(f) = \langle a, f\rangle \ \text{(balanced)}, \quad
    \rho_a \langle a, 1 - e^{-f/\rho_a}\rangle \ \text{(relaxed)}

(``m_a``, ``m_b`` the masses), and by the envelope theorem (Danskin) its gradient is that of ``D`` with ``f``,
``g`` held fixed: ``dD/dC = P``, so ``dD/dx_i = sum_j P_ij grad_x C(x_i, y_j)``, and
``dD/da_i = phi_a(f_i) - eps (psi_a(f_i) - m_b)`` with ``phi_a(f) = f`` and ``psi_a = 1`` on a balanced side,
``phi_a(f) = rho (1 - e^{-f/rho})`` and ``psi_a(f) = e^{-f/rho}`` on a relaxed one. On a balanced problem the
potentials are defined up to ``(f + t, g - t)``, which moves ``dD/da`` and ``dD/db`` by ``+t`` and ``-t``: the
derivative along any change of the weights that keeps the masses equal (the only feasible ones) is unaffected.

The gradients in the points need the plan applied to the features, which
:func:`otkit.geometry.tiles.exp_sums` streams; a stored cost gets ``dD/dC = P`` directly.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from otkit.geometry.costs import Geometry
from otkit.geometry.tiles import exp_sums, log_weights
from otkit.options import SinkhornOptions

__all__ = ["PlanApply", "dual_value", "envelope_value", "plan_terms"]


def _phi(f: Tensor, rho: float | None) -> Tensor:
    return f if rho is None else rho * -torch.expm1(-f / rho)


def _psi(f: Tensor, rho: float | None) -> Tensor:
    return torch.ones_like(f) if rho is None else torch.exp(-f / rho)


def _dot(w: Tensor, v: Tensor) -> Tensor:
    """``sum_i w_i v_i`` over the last dim, with ``0 * anything = 0`` for zero weights."""
    return torch.where(w > 0, w * v, 0.0).sum(-1)


def dual_value(f: Tensor, g: Tensor, a: Tensor, b: Tensor, options: SinkhornOptions) -> Tensor:
    """``D(f, g)`` per problem, ``(B,)``, with the plan's mass ``<b, psi_b(g)>`` (exact right after a ``g`` update).

    Shapes: ``f``, ``a`` ``(B, n)``; ``g``, ``b`` ``(B, m)``.
    """
    eps, rho_a, rho_b = options.eps, options.rho_a, options.rho_b
    mass = _dot(b, _psi(g, rho_b))
    return _dot(a, _phi(f, rho_a)) + _dot(b, _phi(g, rho_b)) - eps * (mass - a.sum(-1) * b.sum(-1))


def plan_terms(a: Tensor, b: Tensor, f: Tensor, g: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Row and column terms ``(log a + f / eps, log b + g / eps)``: ``P_ij = exp(r_i + c_j - C_ij / eps)``."""
    return log_weights(a) + f / eps, log_weights(b) + g / eps


def _feature_grad(geom: Geometry, row: Tensor, col: Tensor, eps: float) -> Tensor:
    """``sum_j P_ij grad_x C(x_i, y_j)`` for the features ``x`` of ``geom``, ``(B, n, d)``."""
    x, y = geom.x, geom.y
    values = torch.cat([y, y.new_ones((*y.shape[:-1], 1))], -1)
    sums = exp_sums(geom, row, col, eps, values, inverse_distance=geom.kind == "euclidean")
    applied, mass = sums[..., :-1], sums[..., -1:]  # (P y)_i and (P 1)_i (P / |x - y| for euclidean)
    if geom.kind == "sqeuclidean":
        return 2 * (mass * x - applied)
    if geom.kind == "euclidean":
        return mass * x - applied
    return -applied  # dot: C = -<x, y>; cosine: C = 1 - <x, y> on unit vectors (normalised outside)


class _EnvelopeValue(torch.autograd.Function):
    """``(first, second, a, b) -> D`` with the envelope gradient.

    ``first, second`` are the features ``x (B, n, d)`` and ``y (B, m, d)`` of a named cost, or the cost matrix
    ``(B, n, m)`` and ``None``.
    """

    @staticmethod
    def forward(ctx, first, second, a, b, f, g, kind, backend, options):
        ctx.save_for_backward(first, second, a, b, f, g)
        ctx.kind, ctx.backend, ctx.options = kind, backend, options
        return dual_value(f, g, a, b, options)

    @staticmethod
    @once_differentiable
    def backward(ctx, w):
        first, second, a, b, f, g = ctx.saved_tensors
        options, eps = ctx.options, ctx.options.eps
        row, col = plan_terms(a, b, f, g, eps)
        needs = ctx.needs_input_grad
        grads: list[Tensor | None] = [None] * 9
        if ctx.kind == "matrix":
            if needs[0]:
                plan = torch.exp(row.unsqueeze(-1) + col.unsqueeze(-2) - first / eps)
                grads[0] = plan * w.view(-1, 1, 1)
        else:
            geom = Geometry(ctx.kind, first, second, backend=ctx.backend)
            if needs[0]:
                grads[0] = _feature_grad(geom, row, col, eps) * w.view(-1, 1, 1)
            if needs[1]:
                grads[1] = _feature_grad(geom.transpose(), col, row, eps) * w.view(-1, 1, 1)
        if needs[2]:
            rho = options.rho_a
            grads[2] = (_phi(f, rho) - eps * (_psi(f, rho) - b.sum(-1, keepdim=True))) * w.unsqueeze(-1)
        if needs[3]:
            rho = options.rho_b
            grads[3] = (_phi(g, rho) - eps * (_psi(g, rho) - a.sum(-1, keepdim=True))) * w.unsqueeze(-1)
        return tuple(grads)


def envelope_value(geom: Geometry, a: Tensor, b: Tensor, f: Tensor, g: Tensor, options: SinkhornOptions) -> Tensor:
    """The OT value ``(B,)`` at the optimum ``(f, g)`` of ``geom``, differentiable by the envelope theorem.

    Differentiable in the features (or matrix) of ``geom``, ``a (B, n)`` and ``b (B, m)``; ``f``, ``g`` are detached
    potentials.
    """
    if geom.matrix is not None:
        return _EnvelopeValue.apply(geom.matrix, None, a, b, f, g, "matrix", geom.backend, options)
    return _EnvelopeValue.apply(geom.x, geom.y, a, b, f, g, geom.kind, geom.backend, options)


class PlanApply(torch.autograd.Function):
    """``v (B, m, k) -> sum_j exp(r_i + c_j - C_ij / eps) v_j`` ``(B, n, k)``, streamed.

    Linear, so the backward is the transposed product. ``geom``, ``row``, ``col`` are constants.
    """

    @staticmethod
    def forward(ctx, v, geom, row, col, eps):
        """The product, tile by tile."""
        ctx.geom, ctx.row, ctx.col, ctx.eps = geom, row, col, eps
        return exp_sums(geom, row, col, eps, v)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        """The transposed product."""
        return exp_sums(ctx.geom.transpose(), ctx.col, ctx.row, ctx.eps, grad), None, None, None, None
