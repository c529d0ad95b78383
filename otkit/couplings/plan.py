"""Minibatch OT couplings between two batches of samples: exact (an assignment, or the LP) or entropic."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from otkit._checks import all_finite, check_positive_float
from otkit.couplings.assignment import linear_assignment
from otkit.couplings.result import Coupling
from otkit.dense import sinkhorn
from otkit.geometry import check_points
from otkit.options import SinkhornOptions, SinkhornSettings, Unpack

__all__ = ["LP_MAX_SIZE", "METHODS", "Method", "plan", "squared_distances"]

Method = Literal["exact", "sinkhorn", "unbalanced", "partial"]
#: The coupling methods of :func:`plan`.
METHODS = ("exact", "sinkhorn", "unbalanced", "partial")
#: The largest ``lcm(n, m)`` the exact LP of unequal batches expands to.
LP_MAX_SIZE = 8192


def squared_distances(x0: Tensor, x1: Tensor, group_dims: int = 0) -> Tensor:
    """Squared Euclidean costs ``(*groups, n, m)`` between ``x0 (*groups, n, *dim)`` and ``x1 (*groups, m, *dim)``.

    The trailing sample dims are flattened (images become vectors), as torchcfm does; the costs are one matrix
    product (float32, or float64 for float64 inputs), of the points centred on the mean of ``x0`` where that mean
    lies farther from the origin than the points of ``x0`` spread around it.

    Raises:
        ValueError: for non-tensors, mismatched trailing shapes or group dims, or fewer dims than needed.

    Example:
        >>> import torch
        >>> from otkit.couplings import squared_distances
        >>> squared_distances(torch.tensor([[0.0, 0.0], [1.0, 0.0]]), torch.tensor([[0.0, 2.0]]))
        tensor([[4.],
                [5.]])
    """
    for name, x in (("x0", x0), ("x1", x1)):
        if not isinstance(x, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of shape (*groups, batch, *dim), got {type(x).__name__}.")
        if x.dim() < group_dims + 1:
            raise ValueError(
                f"{name} must have {group_dims} group dim(s), a batch dim and optional sample dims, got shape "
                f"{tuple(x.shape)}."
            )
    if x0.shape[:group_dims] != x1.shape[:group_dims]:
        raise ValueError(
            f"x0 and x1 must have the same group dims, got {tuple(x0.shape[:group_dims])} and "
            f"{tuple(x1.shape[:group_dims])}."
        )
    if x0.shape[group_dims + 1 :] != x1.shape[group_dims + 1 :]:
        raise ValueError(
            f"x0 and x1 samples must have the same shape, got {tuple(x0.shape[group_dims + 1 :])} and "
            f"{tuple(x1.shape[group_dims + 1 :])} (shapes {tuple(x0.shape)} and {tuple(x1.shape)})."
        )
    flat0 = x0.reshape(*x0.shape[: group_dims + 1], -1)
    flat1 = x1.reshape(*x1.shape[: group_dims + 1], -1)
    flat0, flat1 = check_points(flat0, flat1, "sqeuclidean", names=("x0", "x1"))
    rows, cols = flat0.reshape(-1, *flat0.shape[-2:]), flat1.reshape(-1, *flat1.shape[-2:])  # (B, n, d), (B, m, d)
    squares = torch.linalg.vector_norm(rows, dim=-1).square()  # (B, n), one pass, no squared copy
    centre = rows.mean(-2, keepdim=True)
    offset = torch.linalg.vector_norm(centre, dim=-1).square()  # (B, 1)
    # |x|^2 + |y|^2 - 2<x, y> cancels digits when the points lie farther from the origin than they spread: then
    # centre both batches on x0's mean first. Otherwise the centred copies would cost more than they gain (at
    # most a factor 2 in rounding; at 1024 x 3072 the copies took 21 ms against 76 ms for the product).
    if bool((offset > squares.mean(-1, keepdim=True) - offset).any()):
        rows, cols = rows - centre, cols - centre
        squares = torch.linalg.vector_norm(rows, dim=-1).square()
    norms = squares.unsqueeze(-1) + torch.linalg.vector_norm(cols, dim=-1).square().unsqueeze(-2)
    cost = torch.baddbmm(norms, rows, cols.transpose(1, 2), alpha=-2.0).clamp_min_(0)  # one fused product
    return cost.reshape(*flat0.shape[:-1], flat1.shape[-2])


def plan(
    x0: Tensor,
    x1: Tensor,
    method: Method = "exact",
    eps: float | None = None,
    *,
    group_dims: int = 0,
    normalize_cost: bool = False,
    options: SinkhornOptions | None = None,
    **settings: Unpack[SinkhornSettings],
) -> Coupling:
    r"""The OT plan between minibatches ``x0`` and ``x1`` for the squared Euclidean cost, many problems at once.

    With uniform weights ``a = 1/n``, ``b = 1/m`` and ``C_ij = |x0_i - x1_j|^2`` (trailing dims flattened):

    - ``"exact"``: :math:`\min_{P \in U(a, b)} \langle P, C\rangle`. For ``n == m`` an optimal permutation
      (:func:`linear_assignment`, the auction algorithm; ``P = perm / n``). Otherwise the LP itself: with
      ``L = lcm(n, m)``, each row copied ``L / n`` times and each column ``L / m`` times, the optimal
      assignment of the ``L x L`` copies, counted per pair and divided by ``L``, is an optimal vertex of the
      transport polytope (its supplies are integers, so the LP has an integral optimum); ``L`` is limited to
      :data:`LP_MAX_SIZE`.
    - ``"sinkhorn"``: :math:`\min_{P \in U(a, b)} \langle P, C\rangle + \varepsilon\,\mathrm{KL}(P | a \otimes b)`
      with :func:`otkit.sinkhorn`. On the balanced polytope this is POT's ``ot.sinkhorn(a, b, C, reg)``
      (entropy ``sum P log P``): the same plan with ``eps = reg``.
    - ``"unbalanced"``: ``<P, C> + eps KL(P | a x b) + rho_a KL(P 1 | a) + rho_b KL(P^T 1 | b)``, POT's
      ``sinkhorn_knopp_unbalanced(a, b, C, reg, reg_m)`` (``reg_type="kl"``) with ``eps = reg`` and
      ``rho_a = rho_b = reg_m``; ``rho_a`` and ``rho_b`` default to 1.0 (torchcfm's ``reg_m``).
    - ``"partial"``: entropic partial OT transporting the mass ``min(|a|, |b|) = 1``, what torchcfm's
      ``"partial"`` (POT's ``entropic_partial_wasserstein`` with its default mass) solves. Both batches have
      unit mass, so every bound ``P 1 <= a``, ``P^T 1 <= b`` is tight and the plan is the ``"sinkhorn"`` one;
      it is solved as such.

    Args:
        x0: ``(*groups, n, *dim)`` source samples; the first ``group_dims`` dims are independent problems.
        x1: ``(*groups, m, *dim)`` target samples with the same group dims and sample shape.
        method: ``"exact"``, ``"sinkhorn"``, ``"unbalanced"`` or ``"partial"``.
        eps: Entropic regularisation of the entropic methods (torchcfm's and POT's ``reg``); ``None``: that of
            ``options`` (0.05 by default). Not used by ``"exact"``.
        group_dims: How many leading dims are groups of problems (e.g. 1 for one minibatch per class).
        normalize_cost: Divide each problem's cost by its largest entry (torchcfm's option).
        options: :class:`~otkit.SinkhornOptions` of the entropic solve.
        **settings: Fields of :class:`~otkit.SinkhornOptions` (``max_iter``, ``tol``, ``rho_a``, ...).

    Returns:
        A :class:`Coupling` with ``plan (*groups, n, m)``, ``cost``, ``value``, ``assignment`` (exact,
        ``n == m``) and ``solution`` (entropic).

    Raises:
        ValueError: for an unknown method, bad shapes, NaN/Inf samples, relaxed marginals outside
            ``"unbalanced"``, an exact LP beyond :data:`LP_MAX_SIZE`, or bad solver settings.

    Example:
        >>> import torch
        >>> from otkit.couplings import plan
        >>> x0, x1 = torch.tensor([[0.0], [1.0], [2.0]]), torch.tensor([[2.1], [0.1], [1.1]])
        >>> plan(x0, x1).assignment
        tensor([1, 2, 0])
        >>> round(plan(x0, x1, "sinkhorn", eps=0.5).plan.sum().item(), 4)
        1.0
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}.")
    if isinstance(group_dims, bool) or not isinstance(group_dims, int) or group_dims < 0:
        raise ValueError(f"group_dims must be an int >= 0, got {group_dims!r}.")
    cost = squared_distances(x0, x1, group_dims)
    if normalize_cost:
        largest = cost.amax((-2, -1), keepdim=True).clamp_min(torch.finfo(cost.dtype).tiny)
        cost = cost / largest if torch.is_grad_enabled() and cost.requires_grad else cost.div_(largest)
    if method == "exact":
        if eps is not None or options is not None or settings:
            raise ValueError(
                "method='exact' solves the unregularised problem and takes no eps, options or solver settings; "
                "drop them, or use method='sinkhorn'."
            )
        return _exact(cost)
    return _entropic(cost, method, eps, options, settings)


def _exact(cost: Tensor) -> Coupling:
    """The exact coupling of ``(..., n, m)`` costs: a permutation for ``n == m``, else the expanded LP."""
    n, m = cost.shape[-2:]
    if n == m:
        sigma = linear_assignment(cost)
        matrix = torch.zeros_like(cost).scatter_(-1, sigma.unsqueeze(-1), 1.0 / n)
        return Coupling(plan=matrix, cost=cost, method="exact", assignment=sigma)
    size = math.lcm(n, m)
    if size > LP_MAX_SIZE:
        raise ValueError(
            f"the exact plan of batches of {n} and {m} samples expands to an assignment of lcm({n}, {m}) = {size} "
            f"copies, above {LP_MAX_SIZE}. Use equal batch sizes (or sizes with a small common multiple), or "
            "method='sinkhorn'."
        )
    rows, cols = size // n, size // m
    copies = cost.repeat_interleave(rows, -2).repeat_interleave(cols, -1)  # (..., L, L)
    sigma = linear_assignment(copies)
    pair = torch.arange(size, device=cost.device).div(rows, rounding_mode="floor") * m + sigma.div(
        cols, rounding_mode="floor"
    )
    counts = torch.zeros(*cost.shape[:-2], n * m, dtype=cost.dtype, device=cost.device)
    counts.scatter_add_(-1, pair, torch.full_like(pair, 1.0 / size, dtype=cost.dtype))
    return Coupling(plan=counts.reshape(cost.shape), cost=cost, method="exact")


def _entropic(
    cost: Tensor, method: str, eps: float | None, options: SinkhornOptions | None, settings: dict
) -> Coupling:
    """The Sinkhorn coupling of ``(..., n, m)`` costs for ``"sinkhorn"``, ``"partial"`` or ``"unbalanced"``."""
    relaxed = {key: settings[key] for key in ("rho_a", "rho_b") if settings.get(key) is not None}
    if options is not None:
        relaxed.update({k: v for k, v in (("rho_a", options.rho_a), ("rho_b", options.rho_b)) if v is not None})
    if method == "unbalanced":
        if not relaxed:
            settings = {**settings, "rho_a": 1.0, "rho_b": 1.0}
    elif relaxed:
        raise ValueError(
            f"method={method!r} has exact marginals, but {', '.join(sorted(relaxed))} was given. Use "
            "method='unbalanced' for relaxed marginals."
        )
    if eps is not None:
        eps = check_positive_float(eps, "eps")
    solution = sinkhorn(cost, eps=eps, options=options, **settings)
    matrix = solution.plan
    if not all_finite(matrix):
        raise FloatingPointError(
            f"the {method} plan has non-finite entries; raise eps, or pass normalize_cost=True to scale the cost."
        )
    return Coupling(plan=matrix, cost=cost, method=method, solution=solution)
