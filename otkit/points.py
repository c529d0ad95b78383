"""Entropic OT between point clouds, with the cost stored or streamed, and the plan as an operator."""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import Tensor

from otkit._point_loops import eps_schedule, solve_pair
from otkit._point_value import envelope_value
from otkit._tiles import log_weights
from otkit._validation import PRECISION_LIMIT, caller_stacklevel, check_masses, prepare_init, prepare_marginal
from otkit.geometry import Cost, Geometry, check_points
from otkit.options import SinkhornOptions
from otkit.point_result import PointCloudResult
from otkit.sinkhorn import ConvergenceWarning

__all__ = [
    "DENSE_MAX_BYTES",
    "DENSE_MIN_DIM",
    "Storage",
    "check_finite",
    "check_scaling",
    "check_spread",
    "choose_storage",
    "prepare_problem",
    "sinkhorn_points",
    "warn_unconverged",
]

Storage = Literal["auto", "dense", "streaming"]

# storage="auto" keeps a cost matrix while it takes at most this many bytes (per matrix, whole batch): above it,
# tiles are recomputed at every iteration and memory stays O((n + m) d).
DENSE_MAX_BYTES = 2**28
# ... and only for points of at least this dimension: below it, recomputing a tile (a matrix product with d + 2
# terms per entry) costs less than reading it from memory. Measured on a 2-core AVX-512 CPU (sinkhorn_points value
# and sinkhorn_divergence, forward+backward, 1 and 2 threads): at n = m = 5000 streaming is 2.2x faster at d = 16,
# 1.2-1.3x at d = 64, about equal at d = 96 and 1.2x slower at d = 128; at n = m = 1000 the stored matrix (4 MB,
# in cache) wins from d = 64 (up to 1.3x) and by 1.3-1.6x at d = 96.
DENSE_MIN_DIM = 96


def choose_storage(storage: Storage, cost: Cost, entries: int, dtype: torch.dtype, dim: int | None = None) -> bool:
    """Whether to store the cost densely (``True``) or stream it.

    ``entries`` is ``B n m`` and ``dim`` is ``d`` (``None``: the size alone decides).

    Raises:
        ValueError: for an unknown ``storage`` or a callable cost with ``storage="streaming"``.
    """
    if storage not in ("auto", "dense", "streaming"):
        raise ValueError(f"storage must be 'auto', 'dense' or 'streaming', got {storage!r}.")
    if callable(cost):
        if storage == "streaming":
            raise ValueError(
                "a callable cost can only be stored densely (storage='dense' or 'auto'); for streaming, use one of "
                "'sqeuclidean', 'euclidean', 'cosine' or 'dot'."
            )
        return True
    if storage == "auto":
        fits = entries * torch.finfo(dtype).bits // 8 <= DENSE_MAX_BYTES
        return fits and (dim is None or dim >= DENSE_MIN_DIM)
    return storage == "dense"


def check_scaling(scaling: float | None) -> float | None:
    """``None`` (no annealing) or a float in ``(0, 1)``."""
    if scaling is None:
        return None
    if not (isinstance(scaling, (int, float)) and 0 < scaling < 1):
        raise ValueError(f"scaling must be None (no annealing) or a number in (0, 1) such as 0.9, got {scaling!r}.")
    return float(scaling)


def check_spread(spread: float, eps: float, dtype: torch.dtype) -> None:
    """Refuse problems whose cost range over ``eps`` is beyond the dtype's resolution (as :func:`otkit.sinkhorn`)."""
    limit = PRECISION_LIMIT[dtype]
    if spread / eps > limit:
        raise ValueError(
            f"the cost spans about {spread:.3g}, and {spread:.3g} / eps = {spread / eps:.3g} exceeds {limit:.0e}, "
            f"beyond what {dtype} resolves. Rescale the points (e.g. to unit diameter), raise eps, or use float64."
        )


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
    *,
    cost: Cost = "sqeuclidean",
    options: SinkhornOptions = SinkhornOptions(),
    scaling: float | None = None,
    init: tuple[Tensor, Tensor] | None = None,
    storage: Storage = "auto",
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
        options: Solver settings: ``eps``, ``rho_a``, ``rho_b``, ``max_iter`` (iterations at ``eps``, after the
            annealing schedule), ``tol``, ``check_every`` as in :func:`otkit.sinkhorn`. The iterations are always in
            the log domain (``domain="kernel"`` is refused). ``backend`` picks where streamed tiles are computed:
            ``"auto"`` runs the fused Triton kernel for CUDA points when triton is installed, ``"torch"`` the
            PyTorch tiles. ``grad`` is not used: see Returns.
        scaling: eps-annealing as geomloss's ``scaling``: eps starts at the cost's spread
            (:meth:`~otkit.geometry.Geometry.spread`) and shrinks by ``scaling ** p`` per iteration (``p = 2`` for
            ``sqeuclidean``, else 1) down to ``eps``, with geomloss's averaged updates of both potentials
            during the sweep and its full update at ``eps`` after it (:mod:`otkit._point_loops`); ``None``: no
            annealing.
        init: Warm start ``(f, g)`` of shapes ``(..., n)`` and ``(..., m)`` in cost units.
        storage: ``"dense"``, ``"streaming"`` or ``"auto"``: dense while the matrix of the whole batch takes at
            most :data:`DENSE_MAX_BYTES` and ``d >= DENSE_MIN_DIM`` (96), streaming otherwise.

    Returns:
        A :class:`~otkit.point_result.PointCloudResult`: potentials ``f``, ``g`` (detached), ``value``
        (differentiable in ``x``, ``y``, ``a``, ``b`` through the envelope theorem: the gradient at the optimum,
        without unrolling), and the plan as an operator (``apply``, ``marginals``, ``barycentric_map``).

    Raises:
        ValueError: on NaN/Inf points, mismatched dims, bad weights, unequal masses of a balanced problem,
            ``max_iter = 0``, a cost range beyond the dtype's resolution, or a bad ``storage``/``scaling``.

    Example:
        >>> import torch, otkit
        >>> x, y = torch.rand(500, 3), torch.rand(400, 3)
        >>> res = otkit.sinkhorn_points(x, y, options=otkit.SinkhornOptions(eps=0.05))
        >>> res.barycentric_map().shape
        torch.Size([500, 3])
    """
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
    schedule = eps_schedule(options.eps, spread, work.exponent_power(), scaling)
    with torch.no_grad():
        it = solve_pair(work, b, log_weights(a), log_weights(b), options, schedule, start)
    check_finite(it.f, it.g, options.eps)
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
    warn_unconverged([result.converged], options)
    return result


def check_finite(f: Tensor, g: Tensor, eps: float) -> None:
    """Raise ``FloatingPointError`` for non-finite potentials (never return NaN silently)."""
    if not bool(torch.isfinite(f).all() & torch.isfinite(g).all()):
        raise FloatingPointError(
            f"Sinkhorn produced non-finite potentials (eps={eps}); check the scale of the points against eps and "
            "the weights."
        )


def warn_unconverged(flags: list[Tensor], options: SinkhornOptions) -> None:
    """One :class:`~otkit.sinkhorn.ConvergenceWarning` if any problem of any of the solves missed ``tol``."""
    failed = sum(int((~flag).sum()) for flag in flags)
    if failed:
        warnings.warn(
            f"Sinkhorn did not reach tol={options.tol:g} in {options.max_iter} iterations for {failed} problem(s). "
            "Raise max_iter, increase eps, anneal with scaling=0.9, or loosen tol.",
            ConvergenceWarning,
            stacklevel=caller_stacklevel(),
        )
