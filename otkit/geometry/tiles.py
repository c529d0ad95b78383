"""The streaming engine: sums of ``exp(r_i + c_j - C_ij / eps)`` over tiles of a :class:`~otkit.geometry.Geometry`.

No function here holds more than one tile of ``TILE_ENTRIES`` entries of the ``n x m`` problem at once; their
memory is ``O((n + m) (d + k))`` plus the tile. Each tile is computed, exponentiated in place and reduced:

- :func:`exp_sums`: ``sum_j exp(E_ij)`` or ``sum_j exp(E_ij) V_j`` (the plan applied to vectors or matrices);
- :func:`lse`: ``LSE_j(c_j - C_ij / eps)``, the soft-min of the Sinkhorn updates. Given a ``shift`` close to the
  answer (the previous iterate's), it is one pass that sums ``exp(E_ij - shift_i)`` without a running maximum;
  rows whose sum leaves ``exp(+-SAFE_LOG)`` (a poor shift) are recomputed exactly with a first pass for the row
  maxima;
- :func:`row_max`: ``max_j E_ij``.

On a geometry whose ``backend`` is ``"triton"``, :func:`exp_sums` and :func:`lse` run the fused kernels of
:mod:`otkit.geometry.kernels` (imported then, and only then).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from otkit.geometry.costs import Geometry

__all__ = [
    "COL_BLOCK",
    "EXP_FLOOR",
    "LOG_FLOOR",
    "SAFE_LOG",
    "TILE_ENTRIES",
    "exp_sums",
    "exp_tiles",
    "log_weights",
    "lse",
    "row_max",
]

# Entries per tile (8 MiB in float32) and the widest tile. Each tile costs a handful of parallel ops (product,
# clamp, exp, reduction), each with a thread fork/join. Measured on a 2-core CPU (divergence, forward+backward):
# at n = m = 5000 on 2 threads, 2**20-2**22 entries run 1.5x faster than 2**18 (L2-sized) tiles; on 1 thread all
# are within 10%; while another process loads the cores every join waits for a descheduled thread, and at
# n = m = 2000 2**22-entry tiles took 2.1 s against 34 s with 2**18.
TILE_ENTRIES = 2**21
COL_BLOCK = 8192
# A shifted row sum is trusted within exp(+-SAFE_LOG): far from overflow, and its largest term far above underflow.
SAFE_LOG = {torch.float32: 60.0, torch.float64: 600.0}
# log of a zero weight: finite (no inf - inf in the tile products).
LOG_FLOOR = -1e30
# Exponents are clamped here before exp: PyTorch's CPU exp is about 100 times slower on arguments whose result is
# subnormal or zero. exp of the floor is the smallest normal number, negligible next to a row's largest term
# (at least exp(-SAFE_LOG) after the shift).
EXP_FLOOR = {torch.float32: -87.0, torch.float64: -708.0}


def log_weights(w: Tensor) -> Tensor:
    """``log w`` with :data:`LOG_FLOOR` for zero weights, ``(..., n)``."""
    return torch.log(w).clamp_min(LOG_FLOOR)


def _stored_transposed(geom: Geometry) -> bool:
    """Whether ``geom`` holds a transposed view of a stored matrix (its rows are contiguous columns)."""
    return geom.matrix is not None and geom.matrix.stride(-1) != 1 and geom.matrix.stride(-2) == 1


def _block_dims(geom: Geometry) -> tuple[int, int, int]:
    """``(problems, rows, columns)`` of a tile: wide along the contiguous axis of a stored matrix."""
    batch, n, m = geom.shape
    if _stored_transposed(geom):
        rows = min(n, COL_BLOCK)
        cols = min(m, max(1, TILE_ENTRIES // rows))
    else:
        cols = min(m, COL_BLOCK)
        rows = min(n, max(1, TILE_ENTRIES // cols))
    return min(batch, max(1, TILE_ENTRIES // (rows * cols))), rows, cols


def _blocks(geom: Geometry) -> Iterator[tuple[slice, slice, slice]]:
    """Tiles ``(batch slice, row slice, column slice)``; the column blocks of a row block come one after another."""
    batch, n, m = geom.shape
    probs, rows, cols = _block_dims(geom)
    for b0 in range(0, batch, probs):
        for r0 in range(0, n, rows):
            for c0 in range(0, m, cols):
                yield slice(b0, b0 + probs), slice(r0, r0 + rows), slice(c0, c0 + cols)


class _Tiles:
    """Tiles of ``E_ij = r_i + c_j - C_ij / eps`` (and of the distances, for ``euclidean``) of one geometry."""

    def __init__(self, geom: Geometry, row: Tensor, col: Tensor, eps: float) -> None:
        self.geom, self.eps = geom, eps
        probs, rows, cols = _block_dims(geom)
        size = probs * rows * cols
        self.transposed = _stored_transposed(geom)
        self.buffer = torch.empty(size, dtype=geom.dtype, device=geom.device)
        self.rows, self.cols = row.unsqueeze(-1), col.unsqueeze(-2)
        if geom.matrix is not None:
            return
        if geom.kind == "euclidean":
            self.left, self.right = geom.euclidean_features()
            self.distances = torch.empty_like(self.buffer)
        else:
            self.left, self.right = geom.augmented(row, col, eps)

    def _view(self, buffer: Tensor, bs: slice, rs: slice, cs: slice, transposed: bool = False) -> Tensor:
        b, n, m = self.geom.shape
        shape = (len(range(b)[bs]), len(range(n)[rs]), len(range(m)[cs]))
        if transposed:  # laid out (problems, columns, rows), returned as a (problems, rows, columns) view
            return buffer[: shape[0] * shape[1] * shape[2]].view(shape[0], shape[2], shape[1]).transpose(1, 2)
        return buffer[: shape[0] * shape[1] * shape[2]].view(shape)

    def exponent(self, bs: slice, rs: slice, cs: slice) -> Tensor:
        """The tile ``E[bs, rs, cs]``, in a reused buffer (valid until the next call).

        The tile of a transposed stored matrix is a transposed view, written along the matrix's memory.
        """
        out = self._view(self.buffer, bs, rs, cs, self.transposed)
        if self.geom.matrix is not None:
            cost = self.geom.matrix[bs, rs, cs]
            if self.transposed:
                out = out.transpose(1, 2)
                torch.add(self.rows[bs, rs].transpose(1, 2), cost.transpose(1, 2), alpha=-1 / self.eps, out=out)
                return out.add_(self.cols[bs, :, cs].transpose(1, 2)).transpose(1, 2)
        elif self.geom.kind == "euclidean":
            cost = self._view(self.distances, bs, rs, cs)
            torch.bmm(self.left[bs, rs], self.right[bs, cs].transpose(1, 2), out=cost)
            cost.clamp_min_(0).sqrt_()
        else:
            return torch.bmm(self.left[bs, rs], self.right[bs, cs].transpose(1, 2), out=out)
        # two passes (torch.baddbmm with beta != 1 is several times slower on CPUs)
        return torch.add(self.cols[bs, :, cs], cost, alpha=-1 / self.eps, out=out).add_(self.rows[bs, rs])

    def distance(self, bs: slice, rs: slice, cs: slice) -> Tensor:
        """The distances of the last ``euclidean`` tile."""
        return self._view(self.distances, bs, rs, cs)


def exp_tiles(
    geom: Geometry, row: Tensor, col: Tensor, eps: float, inverse_distance: bool = False
) -> Iterator[tuple[slice, slice, slice, Tensor]]:
    """Every tile ``exp(r_i + c_j - C_ij / eps)`` as ``(batch slice, row slice, column slice, tile)``.

    Entries below ``exp(EXP_FLOOR)`` (the smallest normal number) are raised to it. ``inverse_distance``
    (``euclidean`` only) divides every entry by ``|x_i - y_j|`` (0 where the distance is 0): the weights of the
    gradient of a Euclidean cost. A tile lives in a buffer that the next one overwrites:
    reduce it before asking for the next.
    """
    tiles = _Tiles(geom, row, col, eps)
    floor = EXP_FLOOR[geom.dtype]
    for bs, rs, cs in _blocks(geom):
        tile = tiles.exponent(bs, rs, cs).clamp_(min=floor).exp_()
        if inverse_distance:
            distance = tiles.distance(bs, rs, cs)
            tile.div_(distance.masked_fill_(distance == 0, math.inf))
        yield bs, rs, cs, tile


def exp_sums(
    geom: Geometry,
    row: Tensor,
    col: Tensor,
    eps: float,
    values: Tensor | None = None,
    inverse_distance: bool = False,
) -> Tensor:
    """``sum_j exp(r_i + c_j - C_ij / eps)`` ``(B, n)``, or with ``values (B, m, k)`` the products ``(B, n, k)``.

    ``inverse_distance``: see :func:`exp_tiles`.
    """
    if geom.backend == "triton" and not inverse_distance:
        from otkit.geometry.kernels import stream_exp_sums  # imports triton

        return stream_exp_sums(geom, row, col, eps, values)
    batch, n, _ = geom.shape
    out = row.new_zeros((batch, n) if values is None else (batch, n, values.shape[-1]))
    for bs, rs, cs, tile in exp_tiles(geom, row, col, eps, inverse_distance):
        if values is None:
            out[bs, rs] += tile.sum(-1)
        else:
            out[bs, rs].baddbmm_(tile, values[bs, cs])
    return out


def row_max(geom: Geometry, row: Tensor, col: Tensor, eps: float) -> Tensor:
    """``max_j (r_i + c_j - C_ij / eps)``, ``(B, n)``."""
    tiles = _Tiles(geom, row, col, eps)
    out = row.new_full(geom.shape[:2], -math.inf)
    for bs, rs, cs in _blocks(geom):
        torch.maximum(out[bs, rs], tiles.exponent(bs, rs, cs).amax(-1), out=out[bs, rs])
    return out


def lse(geom: Geometry, col: Tensor, eps: float, shift: Tensor | None = None) -> Tensor:
    """``LSE_j(c_j - C_ij / eps)`` for every row, ``(B, n)``; ``col (B, m)``.

    ``shift (B, n)``, a guess of the result (e.g. the previous iteration's), makes it a single pass; without
    one, or where the guess is off by more than :data:`SAFE_LOG`, the row maxima are computed first.
    """
    if geom.backend == "triton":
        from otkit.geometry.kernels import stream_lse  # imports triton

        return stream_lse(geom, col, eps)
    if shift is not None:
        sums = exp_sums(geom, -shift, col, eps)
        limit = SAFE_LOG[sums.dtype]
        if bool(((sums > math.exp(-limit)) & (sums < math.exp(limit))).all()):
            return shift + torch.log(sums)
    shift = row_max(geom, col.new_zeros(geom.shape[:2]), col, eps)
    return shift + torch.log(exp_sums(geom, -shift, col, eps))
