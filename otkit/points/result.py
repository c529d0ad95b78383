"""The result of a point-cloud solve: potentials, the value, and the plan as an operator that is never formed."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from otkit._deprecation import warn_once
from otkit._solution import Solution
from otkit.geometry.costs import Cost, Geometry, check_points
from otkit.geometry.tiles import exp_sums, row_max
from otkit.options import SinkhornOptions
from otkit.points.envelope import PlanApply, plan_terms

__all__ = ["DivergenceResult", "PointCloudResult"]


@dataclass(frozen=True)
class PointCloudResult(Solution):
    """Solution of a batch of entropic OT problems between point clouds (:func:`~otkit.sinkhorn_points`).

    The plan ``P_ij = a_i b_j exp((f_i + g_j - C(x_i, y_j)) / eps)`` is only ever applied, tile by tile: memory
    stays ``O((n + m) d)`` for streamed problems. :attr:`plan` materialises it for small problems.

    Attributes:
        f: ``(*batch, n)`` potential of ``x``, cost units, detached.
        g: ``(*batch, m)`` potential of ``y``.
        value: ``(*batch)`` regularised OT value (the objective of :func:`otkit.sinkhorn`), differentiable in
            ``x``, ``y``, ``a``, ``b`` by the envelope theorem.
        geometry: The :class:`~otkit.geometry.Geometry` solved on (batch flattened), detached.
        x: ``(B, n, d)`` source points (batch flattened, compute dtype, detached).
        y: ``(B, m, d)`` target points.
        a: ``(*batch, n)`` source weights, detached.
        b: ``(*batch, m)`` target weights, detached.
        cost: The cost (name or callable).
        options: The :class:`~otkit.SinkhornOptions` of the solve.
        n_iter: Iterations run, annealing included.
        errors: ``(n_checks, *batch)`` stopping errors at the checks at the target eps.
        storage: ``"dense"`` or ``"streaming"``.

    Example:
        >>> import torch, otkit
        >>> gen = torch.Generator().manual_seed(0)
        >>> x, y = torch.rand(100, 2, generator=gen), torch.rand(80, 2, generator=gen)
        >>> res = otkit.sinkhorn_points(x, y, eps=0.05)
        >>> res.apply(torch.ones(80)).shape, res.barycentric_map().shape  # P 1 and where each x_i is sent
        (torch.Size([100]), torch.Size([100, 2]))
    """

    value: Tensor
    geometry: Geometry = field(repr=False)
    x: Tensor = field(repr=False)
    y: Tensor = field(repr=False)
    cost: Cost = field(repr=False)
    storage: str

    @property
    def batch_shape(self) -> torch.Size:
        """The leading dims of the problems."""
        return self.value.shape

    def _terms(self) -> tuple[Tensor, Tensor]:
        """``(log a + f / eps, log b + g / eps)``, batch flattened: ``(B, n)`` and ``(B, m)``."""
        flat = (t.reshape(-1, t.shape[-1]) for t in (self.a, self.b, self.f, self.g))
        return plan_terms(*flat, self.eps)

    def apply(self, v: Tensor, transpose: bool = False) -> Tensor:
        """The plan applied to vectors or matrices, without forming it: ``P v`` (or ``P^T v``).

        Args:
            v: ``(*batch, m)`` or ``(*batch, m, k)`` (``(*batch, n[, k])`` with ``transpose``); differentiable.
            transpose: Apply ``P^T`` instead of ``P``.

        Returns:
            ``(*batch, n)`` or ``(*batch, n, k)`` (``m`` with ``transpose``).
        """
        row, col = self._terms()
        geom = self.geometry.transpose() if transpose else self.geometry
        if transpose:
            row, col = col, row
        size, out_size = geom.shape[2], geom.shape[1]
        vector = v.dim() == len(self.batch_shape) + 1
        mat = v.unsqueeze(-1) if vector else v
        if mat.shape[-2] != size:
            raise ValueError(f"v must have shape (..., {size}) or (..., {size}, k) here, got {tuple(v.shape)}.")
        flat = mat.to(self.x.dtype).expand(*self.batch_shape, *mat.shape[-2:]).reshape(-1, size, mat.shape[-1])
        out = PlanApply.apply(flat, geom, row, col, self.eps).reshape(*self.batch_shape, out_size, mat.shape[-1])
        return out.squeeze(-1) if vector else out

    def marginals(self) -> tuple[Tensor, Tensor]:
        """Row and column sums of the plan, ``(*batch, n)`` and ``(*batch, m)``."""
        row, col = self._terms()
        rows = exp_sums(self.geometry, row, col, self.eps)
        cols = exp_sums(self.geometry.transpose(), col, row, self.eps)
        return rows.reshape(self.f.shape), cols.reshape(self.g.shape)

    def barycentric_map(self, points: Tensor | None = None) -> Tensor:
        """Where the plan sends each source point: ``T(x_i) = sum_j P_ij y_j / sum_j P_ij``, ``(*batch, n, d)``.

        With ``points`` ``(*batch, k, d)``, the same formula at new points, the entropic map
        ``T(z) = sum_j b_j exp((g_j - C(z, y_j)) / eps) y_j / sum_j b_j exp((g_j - C(z, y_j)) / eps)``, which equals
        the barycentric map at the source points (``a_i`` and ``f_i`` cancel). Streamed like the solve.

        Raises:
            ValueError: for ``points`` with NaN/Inf or the wrong dimension.
        """
        _, col = self._terms()
        if points is None:
            geom = self.geometry
        else:
            z, _ = check_points(points, self.y.reshape(*self.batch_shape, *self.y.shape[-2:]), self.cost)
            if z.shape[:-2] != self.batch_shape:
                raise ValueError(
                    f"points of shape {tuple(points.shape)} must have the batch dims {tuple(self.batch_shape)} of "
                    "the solve (or broadcast to them)."
                )
            z = z.reshape(-1, *z.shape[-2:]).to(self.x.dtype)
            geom = Geometry.from_points(z, self.y, self.cost, self.storage == "dense", self.geometry.backend).detach()
        shift = row_max(geom, col.new_zeros(geom.shape[:2]), col, self.eps)
        values = torch.cat([self.y, self.y.new_ones((*self.y.shape[:-1], 1))], -1)
        sums = exp_sums(geom, -shift, col, self.eps, values)
        out = sums[..., :-1] / sums[..., -1:]
        return out.reshape(*self.batch_shape, geom.shape[1], self.y.shape[-1])

    @property
    def plan(self) -> Tensor:
        """The plan ``(*batch, n, m)``, materialised (``n m`` entries per problem: for small problems and tests)."""
        row, col = self._terms()
        log_plan = row.unsqueeze(-1) + col.unsqueeze(-2) - self.geometry.dense_cost() / self.eps
        return torch.exp(log_plan).reshape(*self.batch_shape, *log_plan.shape[-2:])


def _values(obj: object) -> object:
    """``obj`` with every :class:`DivergenceResult` inside it (lists, tuples, dicts) replaced by its value."""
    if isinstance(obj, DivergenceResult):
        _warn_tensor_use()
        return obj.value
    if isinstance(obj, (list, tuple)):
        return type(obj)(_values(item) for item in obj)
    if isinstance(obj, dict):
        return {key: _values(item) for key, item in obj.items()}
    return obj


def _warn_tensor_use() -> None:
    warn_once(
        "DivergenceResult as a tensor",
        "otkit.sinkhorn_divergence returns a DivergenceResult since otkit 0.2: use its .value, the tensor it "
        "returned before (using the result as that tensor still works, for now).",
    )


@dataclass(frozen=True)
class DivergenceResult:
    r"""The Sinkhorn divergence of a batch of pairs of clouds (:func:`~otkit.sinkhorn_divergence`) and its solves.

    Attributes:
        value: ``(*batch)`` the divergence ``OT(a, b) - (OT(a, a) + OT(b, b)) / 2`` (``OT(a, b)`` without
            debiasing), differentiable in the points and weights.
        ot_xy: The :class:`~otkit.PointCloudResult` of ``OT(a, b)``: potentials, plan operator, errors.
        ot_xx: That of ``OT(a, a)`` (its two potentials are equal), ``None`` without debiasing.
        ot_yy: That of ``OT(b, b)``, ``None`` without debiasing.
        debias: Whether the self terms were subtracted.

    Compatibility: otkit 0.1 returned the value tensor itself. Arithmetic, torch functions and tensor methods on
    a result (``loss.backward()``, ``loss + 1``, ``torch.stack([loss])``) still act on :attr:`value`, with a
    ``FutureWarning`` the first time.

    Example:
        >>> import torch, otkit
        >>> gen = torch.Generator().manual_seed(0)
        >>> x, y = torch.rand(100, 2, generator=gen), torch.rand(80, 2, generator=gen)
        >>> div = otkit.sinkhorn_divergence(x, y, eps=0.05)
        >>> len(div.solves), bool(div.converged), bool(div.value > 0)  # ot_xy, ot_xx, ot_yy
        (3, True, True)
    """

    value: Tensor
    ot_xy: PointCloudResult = field(repr=False)
    ot_xx: PointCloudResult | None = field(repr=False)
    ot_yy: PointCloudResult | None = field(repr=False)
    debias: bool

    @property
    def solves(self) -> tuple[PointCloudResult, ...]:
        """The solves behind the value, ``(ot_xy, ot_xx, ot_yy)``, or ``(ot_xy,)`` without debiasing."""
        return (self.ot_xy,) if self.ot_xx is None else (self.ot_xy, self.ot_xx, self.ot_yy)

    @property
    def options(self) -> SinkhornOptions:
        """The :class:`~otkit.SinkhornOptions` of the solves."""
        return self.ot_xy.options

    @property
    def n_iter(self) -> int:
        """The largest iteration count of the solves (annealing included)."""
        return max(res.n_iter for res in self.solves)

    @property
    def converged(self) -> Tensor:
        """``(*batch)``: whether every solve of each problem reached ``tol``."""
        flags = [res.converged for res in self.solves]
        return torch.stack(flags).all(0)

    def __getattr__(self, name: str) -> object:
        if name.startswith("__") or "value" not in self.__dict__ or not hasattr(self.__dict__["value"], name):
            raise AttributeError(f"'DivergenceResult' object has no attribute {name!r}")
        _warn_tensor_use()
        return getattr(self.__dict__["value"], name)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return func(*_values(args), **_values(kwargs or {}))

    def __float__(self) -> float:
        _warn_tensor_use()
        return float(self.value)

    def __format__(self, spec: str) -> str:
        if not spec:
            return repr(self)
        _warn_tensor_use()
        return format(self.value, spec)


def _tensor_operator(name: str):
    def operator(self: DivergenceResult, *others: object) -> object:
        return getattr(_values(self), name)(*_values(others))

    operator.__name__ = name
    return operator


for _name in ("add", "radd", "sub", "rsub", "mul", "rmul", "truediv", "rtruediv", "pow", "rpow", "neg", "getitem"):
    setattr(DivergenceResult, f"__{_name}__", _tensor_operator(f"__{_name}__"))
