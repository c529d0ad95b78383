"""Soft sorting, ranking and quantiles: the entropic OT plan from the inputs to a sorted target (Cuturi et al. 2019).

Along the chosen dim, the ``n`` inputs are squashed to ``[0, 1]`` (a sigmoid of the whitened values, ott-jax's
default), and transported with :func:`otkit.sinkhorn` onto increasing targets ``y_1 < ... < y_k`` in ``[0, 1]``
with weights ``b`` for the cost ``C_ij = (s(x_i) - y_j)^2``. The plan ``P`` (``n x k``, row sums ``1/n``) then gives

- the soft sort ``P^T x / b`` (targets ``y = linspace(0, 1, n)``, ``b = 1/n``);
- the soft ranks ``n P y'`` with ``y' = 0, ..., n - 1`` (0-based, as ``argsort(argsort(x))``);
- soft quantiles: each level ``q`` owns a window of mass ``1/n`` of the target measure, and its value is the mean
  of ``x`` transported into that window.

As ``eps -> 0`` the plan tends to the monotone (sorting) permutation, so these tend to ``torch.sort``, the hard
ranks and ``torch.quantile`` (linear interpolation). Every output is differentiable in ``x`` (through the plan
and the transported values), with otkit's unrolled or implicit gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor

from otkit.dense import sinkhorn
from otkit.options import SinkhornOptions, SinkhornSettings, Unpack

__all__ = ["soft_quantile", "soft_rank", "soft_sort"]

DEFAULT_EPS = 1e-2  # ott-jax's default for soft sorting, on the squashed [0, 1] scale


def _squash(x: Tensor) -> Tensor:
    """Sigmoid of the values whitened along the last dim, ``(..., n) -> (..., n)`` in ``(0, 1)``."""
    centred = x - x.mean(-1, keepdim=True)
    return torch.sigmoid(centred / (centred.square().mean(-1, keepdim=True).sqrt() + 1e-10))


def _check_input(x: Tensor, dim: int, caller: str) -> int:
    """The positive index of ``dim`` after checking that ``x`` is a floating tensor with that dim."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{caller}: x must be a floating torch.Tensor, got {got}.")
    if x.dim() == 0 or not -x.dim() <= dim < x.dim():
        raise ValueError(f"{caller}: dim={dim} is out of range for x of shape {tuple(x.shape)}.")
    if x.numel() == 0:
        raise ValueError(f"{caller}: x of shape {tuple(x.shape)} is empty; it needs at least one value per slice.")
    return dim % x.dim()


def _staircase_potentials(order: Tensor, weights: Tensor, cost: Tensor, right_first: bool) -> tuple[Tensor, Tensor]:
    """Potentials ``(f, g)`` with ``f_i + g_j = C_ij`` along one monotone staircase (see the caller)."""
    n, k = order.shape[-1], weights.shape[-1]
    down = torch.arange(1, n, dtype=weights.dtype, device=weights.device) / n
    right = weights.cumsum(0)[:-1]
    events = torch.cat([right, down]) if right_first else torch.cat([down, right])
    steps = (events * 1e9).round().argsort(stable=True)  # masses ending within 1e-9 of each other: a tie
    is_right = (steps < k - 1).long() if right_first else (steps >= n - 1).long()
    row = torch.cat([is_right.new_zeros(1), (1 - is_right).cumsum(0)])  # (n + k - 1,) sorted row of each cell
    col = torch.cat([is_right.new_zeros(1), is_right.cumsum(0)])  # target of each cell
    rows = order.gather(-1, row.expand(*order.shape[:-1], -1))
    cells = cost.gather(-2, rows.unsqueeze(-1).expand(*rows.shape, k)).gather(-1, col.expand_as(rows).unsqueeze(-1))
    cells = cells.squeeze(-1)  # (..., n + k - 1) costs along the path
    g_path = torch.cat([cells.new_zeros(*cells.shape[:-1], 1), (cells.diff(dim=-1) * is_right).cumsum(-1)], -1)
    g = cells.new_zeros(*cells.shape[:-1], k).scatter(-1, col.expand_as(g_path), g_path)
    f = cells.new_zeros(*cells.shape[:-1], n).scatter(-1, rows, cells - g_path)
    return f, g


def _hard_sort_potentials(points: Tensor, weights: Tensor, cost: Tensor) -> tuple[Tensor, Tensor]:
    """Dual potentials ``(f, g)`` of the unregularised problem: a warm start near the entropic ones at small eps.

    In one dimension an optimal plan between sorted points is the monotone staircase (the north-west corner
    rule): it walks ``n + k - 1`` cells from ``(1, 1)`` to ``(n, k)``, moving down where the cumulative row mass
    ``i / n`` ends and right where the cumulative target mass ends. With ``f_i + g_j = C_ij`` on every cell,
    ``g`` changes by the cost difference at each step right and ``f`` at each step down: cumulative sums along
    the path; the cost's Monge property makes them feasible (``f_i + g_j <= C_ij``). Where both masses end
    together (always, for sorting) the path may step either way first, which makes a zero-mass cell tight; the
    mean of the two choices is feasible and tight only on the plan's support, as the entropic potentials are.
    """
    order = points.argsort(-1)  # (..., n) the row at each sorted position
    f_right, g_right = _staircase_potentials(order, weights, cost, right_first=True)
    f_down, g_down = _staircase_potentials(order, weights, cost, right_first=False)
    return (f_right + f_down) / 2, (g_right + g_down) / 2


def _transport(
    values: Tensor,
    targets: Tensor,
    weights: Tensor,
    eps: float,
    squash: bool,
    options: SinkhornOptions | None,
    settings: dict,
    caller: str,
) -> Tensor:
    """The plan ``(..., n, k)`` from ``values (..., n)`` (uniform weights) to ``targets (k,)`` with ``weights (k,)``.

    Sinkhorn starts from the hard sort's potentials and differentiates implicitly unless told otherwise.
    """
    points = _squash(values) if squash else values
    cost = (points.unsqueeze(-1) - targets).square()
    if options is None:
        settings = {"max_iter": 5000, "grad": "implicit", **settings}
    with torch.no_grad():
        init = _hard_sort_potentials(points.detach(), weights, cost.detach())
    try:
        return sinkhorn(cost, b=weights, eps=eps, init=init, options=options, **settings).plan
    except ValueError as error:
        raise ValueError(f"{caller}: {error}") from None


def _plan_to_sorted(
    values: Tensor, eps: float, squash: bool, options: SinkhornOptions | None, settings: dict, caller: str
) -> tuple[Tensor, Tensor]:
    """``values (..., n)`` in float32 or float64, and their plan ``(..., n, n)`` to ``n`` sorted, uniform targets."""
    n = values.shape[-1]
    work = values if values.dtype == torch.float64 else values.float()
    targets = torch.linspace(0.0, 1.0, n, dtype=work.dtype, device=values.device)
    weights = torch.full((n,), 1.0 / n, dtype=work.dtype, device=values.device)
    return work, _transport(work, targets, weights, eps, squash, options, settings, caller)


def soft_sort(
    x: Tensor,
    eps: float = DEFAULT_EPS,
    dim: int = -1,
    *,
    squash: bool = True,
    options: SinkhornOptions | None = None,
    **settings: Unpack[SinkhornSettings],
) -> Tensor:
    r"""Differentiable ascending sort of ``x`` along ``dim``: convex combinations of its values, increasing.

    With ``s`` the squashing, targets ``y_j = (j - 1) / (n - 1)`` and the entropic plan

    .. math::
        P = \arg\min_{P 1 = 1/n,\ P^\top 1 = 1/n} \sum_{ij} P_{ij} (s(x_i) - y_j)^2
        + \varepsilon\,\mathrm{KL}(P \,|\, \tfrac{1}{n^2}),

    the output is ``n P^T x``, which tends to ``torch.sort(x, dim).values`` as ``eps -> 0``.

    Args:
        x: ``(..., n, ...)`` values, float; every slice along ``dim`` is sorted independently (one batched solve).
        eps: Entropic regularisation (> 0) on the squashed ``[0, 1]`` scale (1e-2, ott-jax's default): smaller is
            closer to the hard sort and needs more iterations.
        dim: The dim to sort.
        squash: Map the values to ``(0, 1)`` by ``sigmoid((x - mean) / std)`` first (ott-jax's convention), which
            makes ``eps`` independent of the scale of ``x``; ``False`` uses the raw values against targets in
            ``[0, 1]``.
        options: :class:`~otkit.SinkhornOptions` of the solve. Without it, ``max_iter`` defaults to 5000 and
            ``grad`` to ``"implicit"`` here (the solve starts from the hard sort's potentials, see the module).
        **settings: Fields of :class:`~otkit.SinkhornOptions` (``max_iter``, ``tol``, ``grad="implicit"``, ...).

    Returns:
        A tensor of the shape of ``x``, ascending along ``dim``.

    Raises:
        ValueError: for a non-floating or empty ``x``, a ``dim`` out of range, NaN/Inf values or bad settings.

    Example:
        >>> import torch, otkit
        >>> otkit.soft_sort(torch.tensor([3.0, 1.0, 2.0]), eps=1e-3).round(decimals=3)
        tensor([1., 2., 3.])
    """
    axis = _check_input(x, dim, "soft_sort")
    work, coupling = _plan_to_sorted(x.movedim(axis, -1), eps, squash, options, settings, "soft_sort")
    n = work.shape[-1]
    out = n * (coupling * work.unsqueeze(-1)).sum(-2)
    return out.to(x.dtype).movedim(-1, axis)


def soft_rank(
    x: Tensor,
    eps: float = DEFAULT_EPS,
    dim: int = -1,
    *,
    squash: bool = True,
    options: SinkhornOptions | None = None,
    **settings: Unpack[SinkhornSettings],
) -> Tensor:
    r"""Differentiable ranks of ``x`` along ``dim``, 0-based: they tend to ``argsort(argsort(x))`` as ``eps -> 0``.

    With the plan ``P`` of :func:`soft_sort`, the soft rank of ``x_i`` is ``n sum_j P_ij (j - 1)``: the expected
    position its mass is sent to, in ``[0, n - 1]``.

    Args:
        x: ``(..., n, ...)`` values, float.
        eps: Entropic regularisation (> 0) on the squashed scale (1e-2 by default).
        dim: The dim to rank along.
        squash: As in :func:`soft_sort`.
        options: :class:`~otkit.SinkhornOptions` of the solve.
        **settings: Fields of :class:`~otkit.SinkhornOptions`.

    Returns:
        Ranks of the shape of ``x``, in ``[0, n - 1]``.

    Raises:
        ValueError: as :func:`soft_sort`.

    Example:
        >>> import torch, otkit
        >>> otkit.soft_rank(torch.tensor([3.0, 1.0, 2.0]), eps=1e-3).round(decimals=3)
        tensor([2., 0., 1.])
    """
    axis = _check_input(x, dim, "soft_rank")
    work, coupling = _plan_to_sorted(x.movedim(axis, -1), eps, squash, options, settings, "soft_rank")
    n = work.shape[-1]
    positions = torch.arange(n, dtype=work.dtype, device=x.device)
    return (n * (coupling * positions).sum(-1)).to(x.dtype).movedim(-1, axis)


def _quantile_targets(levels: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """Targets, their weights and the ``(K, k)`` window membership of the quantile levels ``(K,)``.

    Level ``q`` owns the mass window ``[q (n - 1) / n, (q (n - 1) + 1) / n]`` of the target measure on ``[0, 1]``:
    the sorted values' step function averaged over it is the linear interpolation at position ``q (n - 1)``,
    ``torch.quantile``'s. The targets are the pieces between all window ends (windows may overlap), at their
    midpoints.
    """
    starts = levels * (n - 1) / n
    ends = starts + 1.0 / n
    zero_one = torch.tensor([0.0, 1.0], dtype=levels.dtype, device=levels.device)
    cuts = torch.unique(torch.cat([zero_one, starts, ends]).clamp(0.0, 1.0))
    lengths = cuts[1:] - cuts[:-1]
    keep = lengths > 1e-12
    left, right, weights = cuts[:-1][keep], cuts[1:][keep], lengths[keep]
    middles = (left + right) / 2
    inside = (middles >= starts.unsqueeze(-1)) & (middles <= ends.unsqueeze(-1))
    return middles, weights / weights.sum(), inside.to(levels.dtype)


def soft_quantile(
    x: Tensor,
    q: float | Tensor,
    eps: float = DEFAULT_EPS,
    dim: int = -1,
    *,
    squash: bool = True,
    options: SinkhornOptions | None = None,
    **settings: Unpack[SinkhornSettings],
) -> Tensor:
    r"""Differentiable quantiles of ``x`` along ``dim``: they tend to ``torch.quantile(x, q, dim)`` as ``eps -> 0``.

    The target measure on ``[0, 1]`` is cut so that each level ``q`` owns a window of mass ``1/n`` starting at
    ``q (n - 1) / n``; with the entropic plan ``P`` of the squashed values onto it (as in :func:`soft_sort`), the
    soft quantile is ``n sum_{j in window(q)} sum_i P_ij x_i``, the mean of the values sent into the window. At
    ``eps = 0`` it is the linear interpolation of the sorted values at position ``q (n - 1)``.

    Args:
        x: ``(..., n, ...)`` values, float.
        q: A level in ``[0, 1]``, or a 1-D tensor of levels ``(K,)``.
        eps: Entropic regularisation (> 0) on the squashed scale (1e-2 by default).
        dim: The dim to take quantiles along.
        squash: As in :func:`soft_sort`.
        options: :class:`~otkit.SinkhornOptions` of the solve.
        **settings: Fields of :class:`~otkit.SinkhornOptions`.

    Returns:
        For a float ``q``, ``x``'s shape without ``dim``; for levels ``(K,)``, ``x``'s shape with ``dim`` of size
        ``K``.

    Raises:
        ValueError: for levels outside ``[0, 1]`` or not 0-/1-D, and as :func:`soft_sort`.

    Example:
        >>> import torch, otkit
        >>> x = torch.tensor([[4.0, 1.0, 3.0, 2.0, 5.0]])
        >>> otkit.soft_quantile(x, torch.tensor([0.5, 0.75]), eps=1e-3).round(decimals=3)
        tensor([[3., 4.]])
    """
    axis = _check_input(x, dim, "soft_quantile")
    values = x.movedim(axis, -1)
    n = values.shape[-1]
    work = values if values.dtype == torch.float64 else values.float()
    levels = torch.as_tensor(q, dtype=torch.float64).to(x.device)
    if levels.dim() > 1 or levels.numel() == 0:
        raise ValueError(
            f"soft_quantile: q must be a float or a 1-D tensor of levels, got shape {tuple(levels.shape)}."
        )
    if not bool(((levels >= 0) & (levels <= 1)).all()):
        raise ValueError(f"soft_quantile: quantile levels must lie in [0, 1], got {levels.tolist()}.")
    targets, weights, inside = (t.to(work.dtype) for t in _quantile_targets(levels.reshape(-1), n))
    coupling = _transport(work, targets, weights, eps, squash, options, settings, "soft_quantile")
    sent = (coupling * work.unsqueeze(-1)).sum(-2)  # (..., k) value mass per target
    out = n * sent @ inside.T  # (..., K)
    out = out.to(x.dtype).movedim(-1, axis)
    return out.squeeze(axis) if levels.dim() == 0 else out
