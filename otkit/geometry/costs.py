"""Point clouds and their pairwise costs, stored as a matrix or recomputed tile by tile.

Costs between points ``x (..., n, d)`` and ``y (..., m, d)``:

- ``"sqeuclidean"``: ``|x - y|^2`` (POT's ``ot.dist`` default; geomloss's ``p=2`` cost is half of it);
- ``"euclidean"``: ``|x - y|``;
- ``"cosine"``: ``1 - cos(x, y)``;
- ``"dot"``: ``-<x, y>``;
- a callable ``cost(x, y) -> (..., n, m)``, which can only be stored densely.

Every quantity the point solvers need is a sum over tiles of ``exp(E_ij)`` with ``E_ij = r_i + c_j - C_ij / eps``
for row terms ``r`` and column terms ``c``. The three inner-product costs read
``C_ij = alpha_i + beta_j - gamma <phi_i, psi_j>`` (``sqeuclidean``: centred points, ``alpha = |x|^2``,
``beta = |y|^2``, ``gamma = 2``; ``cosine``: unit vectors, ``alpha = 1``; ``dot``: ``gamma = 1``), so a tile of
``E`` is a single matrix product of augmented features::

    E_ij = [phi_i, r_i - alpha_i / eps, 1] . [gamma psi_j / eps, 1, c_j - beta_j / eps]

``euclidean`` takes the square root of the ``sqeuclidean`` tile first, and a stored matrix adds the terms to
``-C / eps`` in one fused pass. Squared distances are computed from points centred on their common mean, which
keeps the expansion ``|x|^2 + |y|^2 - 2 <x, y>`` accurate for clouds far from the origin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from otkit._checks import all_finite, compute_dtype, is_tracing
from otkit.geometry.backend import stream_backend

__all__ = ["COSTS", "Cost", "CostName", "Geometry", "check_points", "pairwise_cost", "unit_vectors"]

CostName = Literal["sqeuclidean", "euclidean", "cosine", "dot"]
Cost = CostName | Callable[[Tensor, Tensor], Tensor]
COSTS = ("sqeuclidean", "euclidean", "cosine", "dot")


def unit_vectors(x: Tensor, dim: int = -1) -> Tensor:
    """L2-normalise ``x`` along ``dim`` in float32 (half precision cannot hold the norm's floor), back in its dtype.

    A zero vector stays zero instead of becoming NaN. This is the normalisation of the ``"cosine"`` cost.

    Example:
        >>> import torch, otkit
        >>> otkit.unit_vectors(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
        tensor([[0.6000, 0.8000],
                [0.0000, 0.0000]])
    """
    work = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    return F.normalize(work, dim=dim).to(x.dtype)


def _check_cloud(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (..., points, dim), got {type(x).__name__}.")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got {x.dtype}; convert it with {name}.float().")
    if x.dim() < 2 or x.shape[-1] == 0 or x.shape[-2] == 0 or x.numel() == 0:
        raise ValueError(
            f"{name} must have shape (..., points, dim) with at least one point, one dim and non-empty batch dims, "
            f"got {tuple(x.shape)}."
        )
    if not is_tracing() and not all_finite(x):
        raise ValueError(f"{name} contains NaN or Inf coordinates; clean or drop those points.")


def check_points(x: Tensor, y: Tensor, cost: Cost, names: tuple[str, str] = ("x", "y")) -> tuple[Tensor, Tensor]:
    """Validate two clouds and broadcast their batch dims: ``x (..., n, d)``, ``y (..., m, d)``.

    Returns both in the compute dtype (float64 stays, anything else becomes float32), batch dims broadcast.

    Raises:
        ValueError: naming the clouds (``names``) or ``cost`` for a non-tensor, empty, NaN/Inf or dimension
            mismatch.
    """
    if not (callable(cost) or cost in COSTS):
        raise ValueError(f"cost must be one of {', '.join(map(repr, COSTS))} or a callable (x, y) -> C, got {cost!r}.")
    nx, ny = names
    _check_cloud(x, nx)
    _check_cloud(y, ny)
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"{nx} and {ny} must have the same point dimension: {nx} has d = {x.shape[-1]}, {ny} has d = "
            f"{y.shape[-1]}. Give {ny} shape (..., m, d) with the d of {nx}."
        )
    try:
        batch = torch.broadcast_shapes(x.shape[:-2], y.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"the batch dims of {nx} {tuple(x.shape[:-2])} and {ny} {tuple(y.shape[:-2])} do not broadcast."
        ) from None
    dtype = compute_dtype(torch.promote_types(x.dtype, y.dtype))
    x = x.to(dtype).expand(*batch, *x.shape[-2:])
    y = y.to(y.device if y.device == x.device else x.device, dtype).expand(*batch, *y.shape[-2:])
    return x, y


def _centred(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    centre = torch.cat([x, y], dim=-2).mean(-2, keepdim=True).detach()
    return x - centre, y - centre


def _safe_sqrt(sq: Tensor) -> Tensor:
    """``sqrt(max(sq, 0))`` with a zero gradient (not ``inf``) where the distance is 0."""
    positive = sq > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, sq, 1.0)), 0.0)


def pairwise_cost(x: Tensor, y: Tensor, cost: Cost = "sqeuclidean") -> Tensor:
    """The dense cost matrix between two clouds, differentiable in both.

    Args:
        x: ``(..., n, d)`` points.
        y: ``(..., m, d)`` points; batch dims broadcast with those of ``x``.
        cost: ``"sqeuclidean"``, ``"euclidean"``, ``"cosine"``, ``"dot"`` or a callable ``(x, y) -> (..., n, m)``.

    Returns:
        ``(..., n, m)`` costs in the compute dtype (float32, or float64 for float64 inputs).

    Raises:
        ValueError: for NaN/Inf points, mismatched dims or an unknown cost.

    Example:
        >>> import torch, otkit
        >>> x, y = torch.tensor([[0.0, 0.0], [1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
        >>> otkit.pairwise_cost(x, y).round(decimals=4)  # |x - y|^2
        tensor([[1.],
                [2.]])
        >>> otkit.pairwise_cost(x, y, "euclidean").squeeze(-1)
        tensor([1.0000, 1.4142])
    """
    x, y = check_points(x, y, cost)
    return _dense(x, y, cost)


def _dense(x: Tensor, y: Tensor, cost: Cost) -> Tensor:
    """:func:`pairwise_cost` on checked clouds."""
    if not callable(cost):
        return Geometry.from_points(x, y, cost, dense=False, backend="torch").dense_cost()
    matrix = cost(x, y)
    expected = x.shape[:-1] + y.shape[-2:-1]
    if not isinstance(matrix, Tensor) or matrix.shape != expected:
        raise ValueError(
            f"the cost callable must return a tensor of shape {tuple(expected)} (..., n, m), got "
            f"{tuple(matrix.shape) if isinstance(matrix, Tensor) else type(matrix).__name__}."
        )
    if not is_tracing() and not all_finite(matrix):
        raise ValueError("the cost callable returned NaN or Inf entries; it must give finite costs.")
    return matrix.to(x.dtype)


@dataclass(frozen=True)
class Geometry:
    """The costs between ``x (B, n, d)`` and ``y (B, m, d)`` in the form the tile engine reads.

    Attributes:
        kind: ``"sqeuclidean"``, ``"euclidean"``, ``"cosine"``, ``"dot"`` or ``"callable"``.
        x: ``(B, n, d)`` row features: centred points (the Euclidean kinds), unit vectors (cosine), points (dot);
            ``None`` for a callable cost.
        y: ``(B, m, d)`` column features, likewise.
        matrix: ``(B, n, m)`` stored cost (dense storage), or ``None``: tiles are computed from the features.
        backend: Where streamed tiles are computed, ``"torch"`` or ``"triton"``: chosen once, when the geometry is
            built by :meth:`from_points` (the rule is :func:`otkit.geometry.backend.stream_backend`).
    """

    kind: str
    x: Tensor | None = None
    y: Tensor | None = None
    matrix: Tensor | None = None
    backend: str = "torch"

    @staticmethod
    def from_points(x: Tensor, y: Tensor, cost: Cost, dense: bool, backend: str = "auto") -> Geometry:
        """Features (differentiable in ``x`` and ``y``) and, with ``dense`` or a callable, the cost matrix.

        Shapes: ``x (B, n, d)``, ``y (B, m, d)``, already checked by :func:`check_points`. ``backend`` is the
        ``backend`` setting (``"auto"``, ``"torch"`` or ``"triton"``), resolved here once for the problem.
        """
        if callable(cost):
            geom = Geometry("callable", matrix=_dense(x, y, cost))
        elif cost == "cosine":
            geom = Geometry(cost, F.normalize(x, dim=-1), F.normalize(y, dim=-1))
        elif cost == "dot":
            geom = Geometry(cost, x, y)
        else:
            geom = Geometry(cost, *_centred(x, y))
        if dense and geom.matrix is None:
            geom = replace(geom, matrix=geom.dense_cost())
        return geom.with_backend(backend)

    def with_backend(self, backend: str) -> Geometry:
        """The same geometry with its tiles computed where the ``backend`` setting says (chosen once, here)."""
        return replace(self, backend=stream_backend(backend, self))

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(B, n, m)``."""
        if self.x is None:
            return tuple(self.matrix.shape)
        return self.x.shape[0], self.x.shape[1], self.y.shape[1]

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the costs."""
        return (self.x if self.matrix is None else self.matrix).dtype

    @property
    def device(self) -> torch.device:
        """Where the costs live."""
        return (self.x if self.matrix is None else self.matrix).device

    def detach(self) -> Geometry:
        """The same geometry cut from autograd (the solvers iterate on it)."""
        x, y, matrix = (None if t is None else t.detach() for t in (self.x, self.y, self.matrix))
        return replace(self, x=x, y=y, matrix=matrix)

    def transpose(self) -> Geometry:
        """The geometry of the transposed problem, ``C^T`` (every named cost is symmetric in its arguments)."""
        matrix = None if self.matrix is None else self.matrix.transpose(-1, -2)
        return replace(self, x=self.y, y=self.x, matrix=matrix)

    def augmented(self, row: Tensor, col: Tensor, eps: float) -> tuple[Tensor, Tensor]:
        """Augmented features ``X~ (B, n, k)``, ``Y~ (B, m, k)`` whose product is the exponent of a tile.

        ``X~ Y~^T = r_i + c_j - C_ij / eps`` for the inner-product kinds (``r (B, n)``, ``c (B, m)``).
        """
        x, y = self.x, self.y
        ones_x, ones_y = x.new_ones(x.shape[:-1]), y.new_ones(y.shape[:-1])
        if self.kind == "sqeuclidean":
            gamma, alpha, beta = 2.0, x.square().sum(-1), y.square().sum(-1)
        else:
            gamma, alpha, beta = 1.0, (1.0 if self.kind == "cosine" else 0.0), 0.0
        left = torch.cat([x, torch.stack([row - alpha / eps, ones_x], -1)], -1)
        right = torch.cat([y * (gamma / eps), torch.stack([ones_y, col - beta / eps], -1)], -1)
        return left, right

    def euclidean_features(self) -> tuple[Tensor, Tensor]:
        """``([x, 1, |x|^2] (B, n, d+2), [-2 y, |y|^2, 1] (B, m, d+2))``: their product is ``|x_i - y_j|^2``."""
        x, y = self.x, self.y
        left = torch.cat([x, x.new_ones((*x.shape[:-1], 1)), x.square().sum(-1, keepdim=True)], -1)
        right = torch.cat([-2 * y, y.square().sum(-1, keepdim=True), y.new_ones((*y.shape[:-1], 1))], -1)
        return left, right

    def spread(self) -> float:
        """An upper bound on ``max C - min C`` over the batch: the start of the eps schedule (one host read).

        ``sqeuclidean``/``euclidean``: ``p D^p`` with ``D`` the diagonal of the bounding box of both clouds and
        ``p`` 2 or 1 (geomloss's starting ``eps = D^p`` in its units, where the ``p = 2`` cost is halved);
        ``cosine``: 2; ``dot``: ``2 max|x| max|y|``; a callable cost: the range of its matrix.
        """
        if self.kind == "callable":
            return float(self.matrix.amax() - self.matrix.amin())
        if self.kind == "cosine":
            return 2.0
        if self.kind == "dot":
            return 2.0 * float(self.x.norm(dim=-1).amax() * self.y.norm(dim=-1).amax())
        points = torch.cat([self.x.reshape(-1, self.x.shape[-1]), self.y.reshape(-1, self.y.shape[-1])])
        diameter = float((points.amax(0) - points.amin(0)).norm())
        return 2.0 * diameter**2 if self.kind == "sqeuclidean" else diameter

    def exponent_power(self) -> int:
        """The ``p`` of geomloss's schedule: eps shrinks by ``scaling ** p`` per step (2 for ``sqeuclidean``)."""
        return 2 if self.kind == "sqeuclidean" else 1

    def dense_cost(self) -> Tensor:
        """The ``(B, n, m)`` cost matrix: the stored one, or computed from the features."""
        if self.matrix is not None:
            return self.matrix
        if self.kind in ("sqeuclidean", "euclidean"):
            left, right = self.euclidean_features()
            sq = (left @ right.transpose(-1, -2)).clamp_min(0)
            return sq if self.kind == "sqeuclidean" else _safe_sqrt(sq)
        prod = self.x @ self.y.transpose(-1, -2)
        return 1 - prod if self.kind == "cosine" else -prod
