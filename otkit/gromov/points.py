r"""Gromov-Wasserstein between point clouds with squared Euclidean intra-costs, without any ``n x n`` matrix.

The squared distances of a cloud ``x (n, d)`` have rank ``d + 2``: ``C^x = A_x B_x^T`` with
``A_x = [x, 1, |x|^2]`` and ``B_x = [-2 x, |x|^2, 1]`` (Scetbon, Peyre, Cuturi 2022 use the same factorisation).
For the square loss, every quantity of mirror descent then comes from the points and the plan applied to these
factors (``K = B_x^T P B_y``, a ``(d + 2) x (d' + 2)`` matrix):

- the linearised cost ``G = 2 (r \oplus c) - 4 A_x K A_y^T`` with ``r = (C^x \circ C^x) a``,
  ``r_i = A_{x,i}^T (B_x^T \mathrm{diag}(a) B_x) A_{x,i}``: a ``"dot"`` cost between ``A_x`` and ``4 A_y K^T`` plus
  row and column terms, which do not change a balanced plan, so each inner solve is :func:`otkit.sinkhorn_points`
  on that dot cost (streamed tile by tile);
- the value ``F(P) = <A_x^T D_p A_x, B_x^T D_p B_x> + <A_y^T D_q A_y, B_y^T D_q B_y> - 2 <A_x^T P A_y, K>``
  (``D_p = diag(P 1)``), differentiable in the points through the plan operator.

With feature clouds ``u (n, k)``, ``v (m, k)`` the feature cost ``|u_i - v_j|^2`` is a dot cost too (fused GW).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from otkit._checks import all_finite, check_masses, compute_dtype, is_tracing, prepare_marginal
from otkit.geometry.costs import Geometry
from otkit.geometry.storage import Storage
from otkit.geometry.tiles import exp_tiles
from otkit.gromov.outer import check_alpha, check_outer, run_outer, warn_outer, weights_envelope
from otkit.gromov.result import GromovResult
from otkit.options import SinkhornOptions, SinkhornSettings, Unpack, resolve_options
from otkit.points.envelope import plan_terms
from otkit.points.result import PointCloudResult
from otkit.points.solve import sinkhorn_points

__all__ = ["gromov_wasserstein_points"]


def _check_cloud(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a floating tensor of shape (..., points, dim), got {got}.")
    if x.dim() < 2 or x.numel() == 0:
        raise ValueError(f"{name} must have shape (..., points, dim), non-empty, got {tuple(x.shape)}.")
    if not is_tracing() and not all_finite(x):
        raise ValueError(f"{name} contains NaN or Inf coordinates; clean or drop those points.")


def _factors(x: Tensor) -> tuple[Tensor, Tensor]:
    """``A = [x, 1, |x|^2]`` and ``B = [-2 x, |x|^2, 1]`` ``(B, n, d + 2)`` of the centred cloud: ``A B^T = C``."""
    x = x - x.mean(-2, keepdim=True)
    ones, sq = x.new_ones((*x.shape[:-1], 1)), x.square().sum(-1, keepdim=True)
    return torch.cat([x, ones, sq], -1), torch.cat([-2 * x, sq, ones], -1)


def _gram(left: Tensor, right: Tensor, w: Tensor) -> Tensor:
    """``left^T diag(w) right`` ``(B, k, l)``."""
    return left.mT @ (w.unsqueeze(-1) * right)


def _self_term(A: Tensor, Bf: Tensor, w: Tensor) -> Tensor:
    """``(C o C) w`` (entrywise square) ``(B, n)`` for ``C = A B^T``, from ``(d + 2)^2`` numbers per point."""
    return ((A @ _gram(Bf, Bf, w)) * A).sum(-1)


def _plan_change(previous: PointCloudResult | None, current: PointCloudResult, a: Tensor, b: Tensor) -> Tensor:
    """``|P_current - P_previous|_1 / |a|_1`` per problem ``(B,)``, both plans streamed tile by tile together."""
    eps = current.eps
    flat = [t.reshape(-1, t.shape[-1]) for t in (current.f, current.g)]
    terms = [(current.geometry, *plan_terms(a, b, *flat, eps))]
    if previous is None:  # the product plan a b^T: a zero cost
        zero = Geometry("dot", a.new_zeros((*a.shape, 1)), b.new_zeros((*b.shape, 1)))
        terms.append((zero, *plan_terms(a, b, torch.zeros_like(a), torch.zeros_like(b), eps)))
    else:
        flat = [t.reshape(-1, t.shape[-1]) for t in (previous.f, previous.g)]
        terms.append((previous.geometry, *plan_terms(a, b, *flat, eps)))
    out = a.new_zeros(a.shape[0])
    tiles = zip(*(exp_tiles(geom, row, col, eps) for geom, row, col in terms), strict=True)
    for (bs, _, _, first), (_, _, _, second) in tiles:
        out[bs] += (first - second).abs().sum((-2, -1))
    return out / a.sum(-1)


def gromov_wasserstein_points(
    x: Tensor,
    y: Tensor,
    a: Tensor | None = None,
    b: Tensor | None = None,
    eps: float | None = None,
    *,
    features: tuple[Tensor, Tensor] | None = None,
    alpha: float | None = None,
    storage: Storage = "streaming",
    max_outer: int = 1000,
    outer_tol: float | None = 1e-5,
    options: SinkhornOptions | None = None,
    **settings: Unpack[SinkhornSettings],
) -> GromovResult:
    r"""Entropic (fused) Gromov-Wasserstein between point clouds, memory linear in the points.

    The problem of :func:`otkit.gromov_wasserstein` with the square loss and the squared Euclidean intra-costs
    ``Cx_ik = |x_i - x_k|^2``, ``Cy_jl = |y_j - y_l|^2`` (and with ``features = (u, v)`` the feature cost
    ``M_ij = |u_i - v_j|^2``), solved by the same mirror descent and stopping rule, but without forming any
    ``n x n``, ``m x m`` or ``n x m`` matrix: the intra-costs have rank ``d + 2``, so each linearised cost is a dot
    cost between ``d + 2`` (``+ k``) features per point, solved by :func:`otkit.sinkhorn_points` tile by tile
    (its first solve anneals eps, the later ones are warm-started), and the value comes from the plan applied to
    the factors. Memory is ``O((n + m)(d + k))`` plus the solver's tiles.

    Args:
        x: ``(..., n, d)`` source points.
        y: ``(..., m, d')`` target points, any dimension ``d'``; batch dims broadcast with those of ``x``.
        a: ``(n,)`` or ``(..., n)`` weights of ``x``; ``None``: ``1/n``.
        b: ``(m,)`` or ``(..., m)`` weights of ``y``; ``None``: ``1/m``. Same mass as ``a``.
        eps: Entropic regularisation (> 0) in the units of the objective (squared distances squared: rescale
            the clouds, e.g. to unit diameter, to choose it); ``None``: that of ``options``.
        features: ``(u (..., n, k), v (..., m, k))`` point features for fused GW, cost ``|u_i - v_j|^2``.
        alpha: Weight of the structure term in ``[0, 1]``, only with ``features`` (0.5 by default then).
        storage: ``"streaming"`` (default) or ``"dense"``/``"auto"`` for the inner solves' ``n x m`` cost.
        max_outer: Maximum number of outer iterations (>= 1; 1000, POT's default).
        outer_tol: Tolerance on the plan's relative L1 change; ``None`` runs exactly ``max_outer``.
        options: Settings of the inner solves, a :class:`~otkit.SinkhornOptions`.
        **settings: Any other field of :class:`~otkit.SinkhornOptions` for the inner solves.

    Returns:
        A :class:`~otkit.GromovResult` whose ``solution`` is the last inner :class:`~otkit.PointCloudResult`
        (the plan as an operator: ``solution.apply``; its potentials leave out the row and column terms of the
        linearised cost); ``value`` is differentiable in ``x``, ``y``, the features, ``a`` and ``b``.

    Raises:
        ValueError: for clouds that are not ``(..., points, dim)`` tensors, NaN/Inf coordinates, batch dims that do
            not broadcast, features whose shapes do not match, bad weights or outer settings, ``alpha`` outside
            ``[0, 1]`` or without features, or a cost range beyond the dtype's resolution.

    Example:
        >>> import torch, otkit
        >>> gen = torch.Generator().manual_seed(0)
        >>> x, y = torch.rand(100, 2, generator=gen), torch.rand(80, 3, generator=gen)  # a square, a cube
        >>> res = otkit.gromov_wasserstein_points(x, y, eps=0.2)
        >>> res.solution.apply(torch.ones(80)).shape, bool(res.converged)
        (torch.Size([100]), True)
    """
    options = resolve_options("otkit.gromov_wasserstein_points", options, eps, settings)
    outer_tol = check_outer(max_outer, outer_tol, options)
    alpha = check_alpha(alpha, features is not None)
    _check_cloud(x, "x")
    _check_cloud(y, "y")
    clouds = [x, y] if features is None else [x, y, *_check_features(features, x, y)]
    try:
        batch = torch.broadcast_shapes(*(c.shape[:-2] for c in clouds))
    except RuntimeError:
        shapes = ", ".join(str(tuple(c.shape)) for c in clouds)
        raise ValueError(f"the batch dims of the clouds {shapes} do not broadcast.") from None
    dtype = compute_dtype(functools.reduce(torch.promote_types, (c.dtype for c in clouds)))
    flat = [c.to(dtype).expand(*batch, *c.shape[-2:]).reshape(-1, *c.shape[-2:]) for c in clouds]
    n, m = x.shape[-2], y.shape[-2]
    a = prepare_marginal(a, (*batch, n), flat[0], "a", "n").reshape(-1, n)
    b = prepare_marginal(b, (*batch, m), flat[0], "b", "m").reshape(-1, m)
    check_masses(a, b)
    (Ax, Bx), (Ay, By) = _factors(flat[0]), _factors(flat[1])
    a0, b0 = a.detach(), b.detach()
    with torch.no_grad():
        ax, bx, ay, by = Ax.detach(), Bx.detach(), Ay.detach(), By.detach()
        u, v = (None, None) if features is None else (flat[2].detach(), flat[3].detach())

        def step(previous: PointCloudResult | None) -> PointCloudResult:
            if previous is None:
                K = (bx.mT @ a0.unsqueeze(-1)) @ (b0.unsqueeze(-2) @ by)
            else:
                K = bx.mT @ _apply(previous, by, batch)
            left, right = ax, 4 * alpha * (ay @ K.mT)
            if u is not None:
                left, right = torch.cat([left, u], -1), torch.cat([right, 2 * (1 - alpha) * v], -1)
            warm = None if previous is None else (previous.f, previous.g)
            left, right = left.reshape(*batch, n, -1), right.reshape(*batch, m, -1)
            wa, wb = a0.reshape(*batch, n), b0.reshape(*batch, m)
            return sinkhorn_points(left, right, wa, wb, cost="dot", storage=storage, init=warm, options=options)

        run = run_outer(step, lambda prev, cur: _plan_change(prev, cur, a0, b0), max_outer, outer_tol)
        solution = run.solution
        geom = solution.geometry
        applied = _apply(solution, geom.y, batch)
        entropic = solution.value.reshape(-1) + (geom.x * applied).sum((-2, -1))  # eps KL(P | a x b)
        p, q = (marginal.reshape(-1, marginal.shape[-1]) for marginal in solution.marginals())
    quadratic = (_gram(Ax, Ax, p) * _gram(Bx, Bx, p)).sum((-2, -1))
    quadratic = quadratic + (_gram(Ay, Ay, q) * _gram(By, By, q)).sum((-2, -1))
    cross = (Ax.mT @ _apply(solution, Ay, batch)) * (Bx.mT @ _apply(solution, By, batch))
    distance = alpha * (quadratic - 2 * cross.sum((-2, -1)))
    f, g = solution.f.reshape(-1, n), solution.g.reshape(-1, m)
    with torch.no_grad():  # the potentials of the full linearised cost: the dot cost's plus its row/column terms
        f = f + 2 * alpha * _self_term(ax, bx, a0)
        g = g + 2 * alpha * _self_term(ay, by, b0)
    if features is not None:
        uf, vf = flat[2], flat[3]
        feature = (p * uf.square().sum(-1)).sum(-1) + (q * vf.square().sum(-1)).sum(-1)
        feature = feature - 2 * (uf * _apply(solution, vf, batch)).sum((-2, -1))
        distance = distance + (1 - alpha) * feature
        with torch.no_grad():
            f, g = f + (1 - alpha) * u.square().sum(-1), g + (1 - alpha) * v.square().sum(-1)
    envelope = weights_envelope(a, b, p, q, f, g, options.eps)
    warn_outer(run, outer_tol, max_outer)
    return GromovResult(
        value=(distance + entropic + envelope).reshape(batch),
        distance=distance.reshape(batch),
        solution=solution,
        errors=run.errors.reshape(-1, *batch),
        n_outer=run.n_outer,
        n_inner=run.n_inner,
        outer_tol=outer_tol,
        alpha=alpha,
        loss="square",
    )


def _apply(solution: PointCloudResult, values: Tensor, batch: torch.Size) -> Tensor:
    """``P values`` ``(B, n, k)`` for ``values (B, m, k)``, batch flattened; differentiable in ``values``."""
    out = solution.apply(values.reshape(*batch, *values.shape[-2:]))
    return out.reshape(-1, *out.shape[-2:])


def _check_features(features: tuple[Tensor, Tensor], x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    if not (isinstance(features, (tuple, list)) and len(features) == 2):
        raise ValueError("features must be a pair (u (..., n, k), v (..., m, k)) of point features.")
    u, v = features
    _check_cloud(u, "features[0]")
    _check_cloud(v, "features[1]")
    if u.shape[-2] != x.shape[-2] or v.shape[-2] != y.shape[-2] or u.shape[-1] != v.shape[-1]:
        raise ValueError(
            f"features must have shapes (..., n, k) and (..., m, k) with n = {x.shape[-2]}, m = {y.shape[-2]} and "
            f"one k, got {tuple(u.shape)} and {tuple(v.shape)}."
        )
    return u, v
