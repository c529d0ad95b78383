"""Free-support barycenters of point clouds: :func:`free_support_barycenter`, on otkit's point-cloud plans."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from otkit._checks import check_positive_float
from otkit._convergence import ConvergenceWarning, warn_unconverged
from otkit.barycenter.inputs import prepare_weights
from otkit.barycenter.result import FreeSupportBarycenterResult
from otkit.options import SinkhornOptions, SinkhornSettings, Unpack, resolve_options
from otkit.points import sinkhorn_points
from otkit.points.solve import DEFAULT_SCALING

__all__ = ["free_support_barycenter"]


def _check_clouds(points: Sequence[Tensor], init: Tensor) -> tuple[torch.Size, int]:
    """The common batch shape and dimension of the clouds and of ``init``; raise on any mismatch."""
    if not isinstance(init, Tensor) or init.dim() < 2 or not init.is_floating_point():
        raise ValueError("init must be a floating tensor (..., m, d): the barycenter's starting points.")
    if isinstance(points, Tensor) or not isinstance(points, Sequence) or len(points) == 0:
        raise ValueError("points must be a non-empty list of tensors (..., n_i, d), one per input cloud.")
    batch, d = init.shape[:-2], init.shape[-1]
    for i, cloud in enumerate(points):
        if not isinstance(cloud, Tensor) or cloud.dim() < 2 or cloud.shape[-2] == 0:
            raise ValueError(f"points[{i}] must be a tensor (..., n_i, d) with n_i >= 1, got {cloud!r:.60}.")
        if cloud.shape[-1] != d or cloud.shape[:-2] != batch:
            raise ValueError(
                f"points[{i}] has shape {tuple(cloud.shape)}, expected {(*batch, 'n_i', d)}: the batch dims and the "
                f"dimension d of init {tuple(init.shape)}."
            )
    return batch, d


def _padded(points: Sequence[Tensor], weights_of_points: Sequence[Tensor | None] | None, like: Tensor):
    """The clouds stacked as ``(..., k, n_max, d)`` with weights ``(..., k, n_max)``, zero on the padding.

    A padding point repeats its cloud's first point: it changes no cost range, and its zero weight no plan.
    """
    if weights_of_points is None:
        weights_of_points = [None] * len(points)
    if len(weights_of_points) != len(points):
        raise ValueError(f"weights_of_points has {len(weights_of_points)} entries for {len(points)} clouds.")
    n_max = max(cloud.shape[-2] for cloud in points)
    clouds, masses = [], []
    for i, (cloud, w) in enumerate(zip(points, weights_of_points, strict=True)):
        cloud = cloud.to(like)
        n = cloud.shape[-2]
        if w is None:
            w = torch.full(cloud.shape[:-1], 1.0 / n, dtype=like.dtype, device=like.device)
        w = torch.as_tensor(w, dtype=like.dtype, device=like.device)
        if w.shape[-1:] != (n,):
            raise ValueError(f"weights_of_points[{i}] must have last dim n_i = {n}, got shape {tuple(w.shape)}.")
        pad = n_max - n
        clouds.append(torch.cat([cloud, cloud[..., :1, :].expand(*cloud.shape[:-2], pad, cloud.shape[-1])], -2))
        masses.append(torch.cat([w.expand(cloud.shape[:-1]), w.new_zeros((*cloud.shape[:-2], pad))], -1))
    return torch.stack(clouds, -3), torch.stack(masses, -2)


def free_support_barycenter(
    points: Sequence[Tensor],
    weights_of_points: Sequence[Tensor | None] | None = None,
    weights: Tensor | None = None,
    eps: float | None = None,
    *,
    init: Tensor,
    barycenter_weights: Tensor | None = None,
    max_outer_iter: int = 100,
    outer_tol: float = 1e-5,
    scaling: float | None = DEFAULT_SCALING,
    options: SinkhornOptions | None = None,
    **settings: Unpack[SinkhornSettings],
) -> FreeSupportBarycenterResult:
    r"""A barycenter of point clouds whose points move: entropic plans alternated with barycentric updates.

    .. math::
        \min_{X} \sum_k w_k\, \mathrm{OT}_\varepsilon\big((X, \beta), (Y_k, a_k)\big),
        \qquad C(x, y) = |x - y|^2,

    with the barycenter's weights ``beta`` fixed. Each outer iteration solves the ``k`` problems at once with
    :func:`otkit.sinkhorn_points` (padded to one size with zero-weight points, each solve annealed from scratch:
    the previous potentials are a poor start once the points have moved, and at small ``eps`` Sinkhorn from a
    poor start converges far slower than the annealing sweep) and moves every point to the weighted mean of its images,
    ``x_i <- sum_k w_k T_k(x_i)``, with ``T_k(x_i) = sum_j P^k_ij y^k_j / sum_j P^k_ij`` the barycentric map
    (Cuturi and Doucet 2014). As ``eps -> 0`` it becomes POT's ``ot.lp.free_support_barycenter`` (exact plans).

    Args:
        points: ``k`` clouds ``(..., n_i, d)`` (sizes may differ; the same batch dims and ``d``).
        weights_of_points: ``k`` weight vectors ``(..., n_i)`` (``None`` entries or ``None``: uniform), each of
            the barycenter's mass (1 by default).
        weights: ``(k,)`` or ``(..., k)`` barycentric weights of the clouds, normalised to sum to 1;
            ``None``: ``1 / k``.
        eps: Entropic regularisation (> 0) in squared units of the points; ``None``: that of ``options``.
        init: ``(..., m, d)`` the barycenter's starting points.
        barycenter_weights: ``(m,)`` or ``(..., m)`` the barycenter's weights; ``None``: ``1 / m``.
        max_outer_iter: Largest number of outer iterations (>= 1).
        outer_tol: Stop once one iteration's mean squared displacement relative to the points' spread,
            ``sum_i beta_i |dx_i|^2 / sum_i beta_i |x_i - mean(x)|^2``, is at most this in every problem. (The
            entropic iterations converge linearly, more slowly as ``eps`` grows: an absolute threshold would
            depend on the clouds' scale.)
        scaling: eps-annealing of the inner solves (see :func:`otkit.sinkhorn_points`).
        options: Settings of the inner solves as one :class:`~otkit.SinkhornOptions`.
        **settings: Any field of :class:`~otkit.SinkhornOptions` for the inner solves (``max_iter``, ``tol``...).

    Returns:
        A :class:`~otkit.FreeSupportBarycenterResult` with ``points (..., m, d)``, ``weights``, ``n_iter``,
        ``displacements`` and ``converged``. The points are detached.

    Raises:
        ValueError: on clouds whose dims do not match ``init`` or each other, weights of the wrong size, or a
            bad ``max_outer_iter`` / ``outer_tol`` (and on everything :func:`otkit.sinkhorn_points` refuses).

    Example:
        >>> import torch, otkit
        >>> clouds = [torch.tensor([[0.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 1.0]])]
        >>> res = otkit.free_support_barycenter(clouds, eps=0.01, init=torch.tensor([[0.2, 0.1], [0.3, 0.9]]), tol=1e-5)
        >>> res.points.round(decimals=2)  # the first point takes 1/3 of (1, 0) and 1/6 of (1, 1)
        tensor([[0.5000, 0.1700],
                [0.5000, 1.0000]])
    """
    options = resolve_options("otkit.free_support_barycenter", options, eps, settings)
    if not isinstance(max_outer_iter, int) or max_outer_iter < 1:
        raise ValueError(f"max_outer_iter must be an int >= 1, got {max_outer_iter!r}.")
    outer_tol = check_positive_float(outer_tol, "outer_tol")
    batch, _ = _check_clouds(points, init)
    x = init.detach()
    clouds, masses = _padded(points, weights_of_points, x)
    k = clouds.shape[-3]
    w = prepare_weights(weights, torch.Size((*batch, k)), x)
    beta = barycenter_weights
    if beta is None:
        beta = torch.full((x.shape[-2],), 1.0 / x.shape[-2], dtype=x.dtype, device=x.device)
    beta = torch.as_tensor(beta, dtype=x.dtype, device=x.device).expand(x.shape[:-1])
    displacements = []
    for _ in range(max_outer_iter):
        with warnings.catch_warnings():  # reported once, for the last solve, below
            warnings.simplefilter("ignore", ConvergenceWarning)
            res = sinkhorn_points(
                x.unsqueeze(-3).expand(*batch, k, *x.shape[-2:]),
                clouds,
                beta.unsqueeze(-2),
                masses,
                scaling=scaling,
                options=options,
            )
        moved = (w.unsqueeze(-1).unsqueeze(-1) * res.barycentric_map()).sum(-3)
        centre = (beta.unsqueeze(-1) * moved).sum(-2, keepdim=True) / beta.sum(-1, keepdim=True).unsqueeze(-1)
        spread = (beta * ((moved - centre) ** 2).sum(-1)).sum(-1).clamp_min(torch.finfo(x.dtype).tiny)
        displacements.append((beta * ((moved - x) ** 2).sum(-1)).sum(-1) / spread)
        x = moved
        if bool((displacements[-1] <= outer_tol).all()):
            break
    warn_unconverged([res.error], options, ", anneal with a scaling closer to 1 (e.g. 0.9)")
    return FreeSupportBarycenterResult(
        points=x,
        weights=beta,
        options=options,
        n_iter=len(displacements),
        displacements=torch.stack(displacements),
        tol=outer_tol,
    )
