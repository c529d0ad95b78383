"""Entropic OT between point clouds, with the cost stored or streamed, and the plan as an operator."""

from __future__ import annotations

import torch
from torch import Tensor

from otkit._checks import check_masses, check_spread, prepare_init, prepare_marginal
from otkit._convergence import check_finite_potentials, warn_unconverged
from otkit.geometry.costs import Cost, Geometry, check_points
from otkit.geometry.loops import check_scaling, eps_schedule, solve_pair
from otkit.geometry.storage import Storage, choose_storage
from otkit.geometry.tiles import log_weights
from otkit.options import SinkhornOptions, SinkhornSettings, Unpack, resolve_options
from otkit.points.envelope import envelope_value
from otkit.points.result import PointCloudResult

__all__ = ["ANNEALING_HINT", "DEFAULT_SCALING", "FINITE_HINT", "prepare_problem", "sinkhorn_points"]

# eps-annealing by default, as geomloss: the solve starts at the cost's spread and reaches eps in a few sweeps, then
# iterates at eps until tol. The divergence of 300 points in the unit cube (float32) then reaches tol 1e-6 in 46-56
# iterations at eps 0.05, 97-117 at 0.02, 217-347 at 0.01 (below 0.005 float32 rounding floors the error near 2e-6).
DEFAULT_SCALING = 0.5
ANNEALING_HINT = ", anneal with a scaling closer to 1 (e.g. 0.9)"
FINITE_HINT = "Check the scale of the points against eps, and the weights."


def prepare_problem(
    x: Tensor, y: Tensor, a: Tensor | None, b: Tensor | None, cost: Cost, options: SinkhornOptions
) -> tuple[Tensor, Tensor, Tensor, Tensor, torch.Size]:
    """Checked, flattened inputs: ``x (B, n, d)``, ``y (B, m, d)``, ``a (B, n)``, ``b (B, m)`` and the batch shape.

    Raises:
        ValueError: on bad points or weights, ``max_iter = 0``, ``domain="kernel"``, or unequal masses of a
            balanced problem.
    """
    if options.max_iter < 1:
        raise ValueError(f"max_iter must be >= 1 for a point-cloud solve, got {options.max_iter}.")
    if options.domain == "kernel":
        raise ValueError("point-cloud solvers iterate in the log domain; use domain='auto' or 'log'.")
    x, y = check_points(x, y, cost)
    batch, (n, d), m = x.shape[:-2], x.shape[-2:], y.shape[-2]
    a = prepare_marginal(a, (*batch, n), x, "a", "n")
    b = prepare_marginal(b, (*batch, m), x, "b", "m")
    if options.rho_a is None and options.rho_b is None:
        check_masses(a, b)
    return x.reshape(-1, n, d), y.reshape(-1, m, d), a.reshape(-1, n), b.reshape(-1, m), batch


def sinkhorn_points(
    x: Tensor,
    y: Tensor,
    a: Tensor | None = None,
    b: Tensor | None = None,
    eps: float | None = None,
    *,
    cost: Cost = "sqeuclidean",
    scaling: float | None = DEFAULT_SCALING,
    storage: Storage = "auto",
    init: tuple[Tensor, Tensor] | None = None,
    options: SinkhornOptions | None = None,
    **settings: Unpack[SinkhornSettings],
) -> PointCloudResult:
    r"""Entropic optimal transport between two point clouds, without forming the ``n x m`` matrix if it is large.

    Solves the problem of :func:`otkit.sinkhorn` for the cost ``C_ij = cost(x_i, y_j)``:

    .. math::
        \min_{P \ge 0}\ \langle P, C\rangle + \varepsilon\,\mathrm{KL}(P \,|\, a \otimes b)
        + \rho_a \mathrm{KL}(P 1 \,|\, a) + \rho_b \mathrm{KL}(P^\top 1 \,|\, b)

    with log-domain Sinkhorn updates computed by a tiled soft-min: with ``storage="streaming"`` each iteration
    recomputes the cost tile by tile (a matrix product of augmented features per tile for ``sqeuclidean``,
    ``cosine`` and ``dot``), so memory is ``O((n + m) d)`` plus one tile; with ``"dense"`` the matrix is stored.

    Args:
        x: ``(..., n, d)`` source points; leading dims are a batch of independent problems.
        y: ``(..., m, d)`` target points; batch dims broadcast with those of ``x``.
        a: ``(n,)`` or ``(..., n)`` weights of ``x``; ``None``: ``1/n``.
        b: ``(m,)`` or ``(..., m)`` weights of ``y``; ``None``: ``1/m``.
        cost: ``"sqeuclidean"`` (``|x - y|^2``), ``"euclidean"``, ``"cosine"`` (``1 - cos``), ``"dot"``
            (``-<x, y>``), or a callable ``(x, y) -> (..., n, m)`` (dense storage only).
        eps: Entropic regularisation (> 0), in cost units; ``None``: that of ``options`` (0.05 by default).
            Rescale the clouds (e.g. to unit diameter) to choose it.
        scaling: eps-annealing as geomloss's ``scaling`` (0.5 by default, geomloss's default): eps starts at the
            cost's spread (:meth:`otkit.geometry.Geometry.spread`) and shrinks by ``scaling ** p`` per iteration
            (``p = 2`` for ``sqeuclidean``, else 1) down to ``eps``, with geomloss's averaged updates of both
            potentials during the sweep and its full update at ``eps`` after it; then iterations at ``eps`` until
            ``tol``. ``None``: no annealing (iterations at ``eps`` from ``g = 0``). A warm start (``init``) replaces
            the sweep: the iterations start at ``eps`` from it.
        storage: ``"dense"``, ``"streaming"`` or ``"auto"``: dense while the matrix of the whole batch takes at
            most :data:`otkit.geometry.DENSE_MAX_BYTES` and ``d >= 96`` (:data:`otkit.geometry.DENSE_MIN_DIM`),
            streaming otherwise.
        init: Warm start ``(f, g)`` of shapes ``(..., n)`` and ``(..., m)`` in cost units.
        options: All solver settings as one :class:`~otkit.SinkhornOptions`; ``None``: the defaults.
        **settings: Any other field of :class:`~otkit.SinkhornOptions` (see :func:`otkit.sinkhorn`): ``rho_a``,
            ``rho_b``, ``max_iter`` (iterations at ``eps``, after the annealing sweep), ``tol``, ``check_every``,
            and ``backend``, which picks where streamed tiles are computed (``"auto"``: the fused Triton kernels
            for CUDA points when triton is installed; ``"torch"``: the PyTorch tiles). The iterations are always in
            the log domain (``domain="kernel"`` is refused); ``grad`` is not used: see Returns.

    Returns:
        A :class:`~otkit.PointCloudResult`: potentials ``f``, ``g`` (detached), ``value``
        (differentiable in ``x``, ``y``, ``a``, ``b`` through the envelope theorem: the gradient at the optimum,
        without unrolling), and the plan as an operator (``apply``, ``marginals``, ``barycentric_map``).

    Raises:
        ValueError: on NaN/Inf points, mismatched dims, bad weights, unequal masses of a balanced problem,
            ``max_iter = 0``, a cost range beyond the dtype's resolution, or a bad ``storage``/``scaling``.

    Example:
        >>> import torch, otkit
        >>> x, y = torch.rand(500, 3), torch.rand(400, 3)
        >>> res = otkit.sinkhorn_points(x, y, eps=0.05)
        >>> res.barycentric_map().shape
        torch.Size([500, 3])
    """
    options = resolve_options("otkit.sinkhorn_points", options, eps, settings)
    scaling = check_scaling(scaling)
    x, y, a, b, batch = prepare_problem(x, y, a, b, cost, options)
    (problems, n, _), m = x.shape, y.shape[1]
    dense = choose_storage(storage, cost, problems * n * m, x.dtype, x.shape[-1])
    geom = Geometry.from_points(x, y, cost, dense, options.backend)
    work = geom.detach()
    spread = work.spread()
    check_spread(spread, options.eps, work.dtype)
    f_init, g_init = prepare_init(init, (*batch, n), (*batch, m), x)
    start = None if f_init is None else (f_init.reshape(problems, n), g_init.reshape(problems, m))
    schedule = [] if start is not None else eps_schedule(options.eps, spread, work.exponent_power(), scaling)
    with torch.no_grad():
        it = solve_pair(work, b, log_weights(a), log_weights(b), options, schedule, start)
    check_finite_potentials(it.f, it.g, options.eps, FINITE_HINT)
    value = envelope_value(geom, a, b, it.f, it.g, options)
    result = PointCloudResult(
        f=it.f.reshape(*batch, n),
        g=it.g.reshape(*batch, m),
        value=value.reshape(batch),
        geometry=work,
        x=x.detach(),
        y=y.detach(),
        a=a.detach().reshape(*batch, n),
        b=b.detach().reshape(*batch, m),
        cost=cost,
        options=options,
        n_iter=it.n_iter,
        errors=it.errors.reshape(-1, *batch),
        storage="dense" if dense else "streaming",
    )
    warn_unconverged([result.error], options, ANNEALING_HINT if schedule else ", anneal (scaling=0.5)")
    return result
