"""Sinkhorn-Knopp iterations in the log domain, with a reverse pass that keeps no iterate.

One iteration normalises the rows of the log-matrix, then its columns::

    Y_k = X_{k-1} - r_k,   r_k = LSE_j X_{k-1}        (rows sum to 1)
    X_k = Y_k - c_k,       c_k = LSE_i Y_k            (columns sum to 1)

from ``X_0 = log_alpha / tau``. The forward keeps only the last iterate ``X_T`` and the normalisers
``r_k (n,)``, ``c_k (m,)`` of every iteration (``n_iter * (n + m)`` numbers per matrix). The backward walks the
iterations in reverse, rebuilding ``Y_k = X_k + c_k`` and ``X_{k-1} = Y_k + r_k`` from them, and applies the
adjoint of each ``log_softmax`` (``dY = dX - softmax(Y) * sum dX``): the gradient of the unrolled loop exactly,
without the ``2 * n_iter`` matrices that autograd would store.

The first iteration runs two ``log_softmax`` (the input may have any scale) and reads its normalisers off as
``max_j X_ij - max_j Y_ij``, where both values are moderate. From then on the iterate's columns sum to 1, so its
row sums lie in ``[1/n, m]`` and the column sums after the row step in ``[1/m, n]``, and the iterations run on
``K = exp(X)`` with row and column scalings, ``a = 1 / (K b)`` and ``b = 1 / (K^T a)``: a divide and a sum per
half-iteration, no exponential and no logarithm of a matrix. Every :data:`ANCHOR_EVERY` iterations the scalings are
absorbed into the log-iterate and ``K`` is formed again, so the scalings stay within ``(n m)**ANCHOR_EVERY`` of 1:
entries that underflow in ``K`` stay negligible against the sums, and the iterate itself stays in the log domain,
so no entry is ever lost. The reverse pass likewise carries ``exp(X_k)`` and ``exp(Y_k)`` from one to the next by
the saved ratios ``exp(r_k)``, ``exp(c_k)`` and recomputes them from the log-iterate at the same anchors.

Layout: on the CPU, batches of small matrices (``n * m <= CPU_BATCH_LAST_ELEMENTS``) are iterated as
``(n, m, batch)`` tensors, batch last and contiguous: every ``log_softmax``, maximum and adjoint then runs
vectorised along the batch, about ten times faster than along dims of size 4. Larger matrices and other devices
keep the natural ``(batch, n, m)`` layout. On the CPU the batch is cut into cache-sized blocks, and each block runs
all its iterations before the next starts (:func:`block_size`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from otkit._checks import is_tracing
from otkit._exp2 import LOG2_E

__all__ = [
    "ANCHOR_EVERY",
    "CPU_BATCH_LAST_ELEMENTS",
    "CPU_BLOCK_ELEMENTS",
    "Normalisers",
    "SinkhornKnopp",
    "batch_last",
    "block_size",
    "iterate",
]

# Largest n * m iterated batch-last on the CPU (16 x 16); larger matrices vectorise well along their own rows.
CPU_BATCH_LAST_ELEMENTS = 256
# Entries per cache block on the CPU (1 MiB of float32): a block and the two matrices alive with it stay in the
# caches through all the iterations, and each PyTorch operation has enough entries to hide its fixed cost. On
# (4096, 16, 16), forward + backward took 62, 57, 45, 45 and 52 ms with blocks of 2**16 to 2**20 entries.
CPU_BLOCK_ELEMENTS = 2**18
# Iterations between recomputing the exponential of the log-iterate (forward and reverse pass): in between, the
# row and column scalings change the entries by at most (n m)**ANCHOR_EVERY, so no entry that matters underflows.
ANCHOR_EVERY = 5


def batch_last(x: Tensor) -> bool:
    """Whether the batch ``x (B, n, m)`` is iterated in the ``(n, m, B)`` layout (small matrices on the CPU)."""
    return x.device.type == "cpu" and x.shape[-2] * x.shape[-1] <= CPU_BATCH_LAST_ELEMENTS and x.shape[0] > 1


def _dims(layout_batch_last: bool) -> tuple[int, int]:
    """The (row-sum, column-sum) dims: the dim summed to normalise rows (``j``), then columns (``i``)."""
    return (1, 0) if layout_batch_last else (2, 1)


class Normalisers(NamedTuple):
    """The row and column normalisers ``r_k``, ``c_k`` of the iterations that :func:`iterate` ran.

    ``row0``, ``col0``: ``r_1`` and ``c_1``, in natural log units (``r_1`` takes the input's scale, any size).
    ``row_growth``, ``col_growth``: ``exp(r_k)`` and ``exp(c_k)`` of iterations ``k = 2 .. n_iter`` stacked on a
    leading dim, ratios of row (column) sums that lie in ``[1/n, m]`` (``[1/m, n]``).
    """

    row0: Tensor
    col0: Tensor
    row_growth: Tensor
    col_growth: Tensor

    def totals(self) -> tuple[Tensor, Tensor]:
        """``(sum_k r_k, sum_k c_k)``: ``X_T = X_0 - sum_k r_k - sum_k c_k``."""
        return self.row0 + self.row_growth.log().sum(0), self.col0 + self.col_growth.log().sum(0)


def iterate(x0: Tensor, n_iter: int, layout_batch_last: bool) -> tuple[Tensor, Normalisers]:
    """``n_iter`` row-then-column normalisations of the log-matrix ``x0``, without autograd.

    ``x0`` is ``(B, n, m)``, or ``(n, m, B)`` batch-last. Returns the last iterate ``X_T`` (columns summing to 1,
    the layout of ``x0``) and the :class:`Normalisers` of the iterations, of shapes ``x0``'s with ``m -> 1``
    (rows) and ``n -> 1`` (columns), stacked on a leading dim where per iteration.

    After the first iteration the iterate is ``exp(X) * a * b`` with row and column scalings ``a = 1 / (K b)``,
    ``b = 1 / (K^T a)`` of ``K = exp(X)``: a divide and a sum per half-iteration, and every
    :data:`ANCHOR_EVERY` iterations the scalings are absorbed into the log-iterate ``X`` and ``K`` recomputed.
    """
    row, col = _dims(layout_batch_last)
    y = torch.log_softmax(x0, row)
    row0 = x0.amax(row, keepdim=True) - y.amax(row, keepdim=True)
    x = torch.log_softmax(y, col)
    col0 = y.amax(col, keepdim=True) - x.amax(col, keepdim=True)
    steps = n_iter - 1
    # Outside torch.compile every step writes into buffers it owns: a fresh tensor per operation costs a page
    # fault per 4 KiB on CPUs (large blocks come from mmap), more than the operation itself.
    reuse = not is_tracing()
    row_sums = x.new_empty((steps, *row0.shape))  # s_k: row sums of exp(X) b before iteration k's row step
    col_sums = x.new_empty((steps, *col0.shape))  # t_k: column sums of exp(X) a after it
    k = torch.empty_like(x) if reuse else None
    work = torch.empty_like(x) if reuse else None
    starts = range(0, steps, ANCHOR_EVERY)
    for start in starts:
        stop = min(start + ANCHOR_EVERY, steps)
        k = _exp(x, out=k)
        for i in range(start, stop):
            _sum(k if i == start else _div(k, col_sums[i - 1], work), row, row_sums, i, reuse)
            _sum(_div(k, row_sums[i], work), col, col_sums, i, reuse)
        # Absorb the scalings a = 1 / s, b = 1 / t of the chunk's last iteration into the log-iterate.
        log_a, log_b = row_sums[stop - 1].log(), col_sums[stop - 1].log()
        x = x.sub_(log_a).sub_(log_b) if reuse else x - log_a - log_b
    # exp(r_k) = s_k / s_{k-1} inside a chunk (s_k at its start), and so for the columns.
    row_growth, col_growth = row_sums.clone(), col_sums.clone()
    for start in starts:
        stop = min(start + ANCHOR_EVERY, steps)
        row_growth[start + 1 : stop] /= row_sums[start : stop - 1]
        col_growth[start + 1 : stop] /= col_sums[start : stop - 1]
    return x, Normalisers(row0, col0, row_growth, col_growth)


def _exp(x: Tensor, out: Tensor | None, shift: float = 0.0) -> Tensor:
    """``exp(x + shift)`` as ``exp2((x + shift) log2(e))`` (several times faster than ``exp`` on CPUs).

    Into ``out`` where given.
    """
    x2 = torch.mul(x, LOG2_E) if out is None else torch.mul(x, LOG2_E, out=out)
    return (x2.add_(shift * LOG2_E) if shift else x2).exp2_()


def _div(k: Tensor, sums: Tensor, out: Tensor | None) -> Tensor:
    return torch.div(k, sums) if out is None else torch.div(k, sums, out=out)


def _sum(x: Tensor, dim: int, into: Tensor, i: int, reuse: bool) -> None:
    """Write ``x.sum(dim, keepdim=True)`` into ``into[i]``."""
    if reuse:
        torch.sum(x, dim, keepdim=True, out=into[i])
    else:
        into[i] = x.sum(dim, keepdim=True)


def reverse(grad_x: Tensor, x: Tensor, normalisers: Normalisers, layout_batch_last: bool, e: Tensor) -> Tensor:
    """The gradient with respect to ``x0`` of a loss whose gradient with respect to ``X_T = x`` is ``grad_x``.

    ``normalisers`` are :func:`iterate`'s, ``e = exp(X_T)`` (overwritten); shapes as there. The adjoint of
    ``X_k = Y_k - LSE_i Y_k`` is ``dY = dX - exp(X_k) sum_i dX``, and that of ``Y_k = X_{k-1} - LSE_j X_{k-1}`` is
    ``dX_{k-1} = dY - exp(Y_k) sum_j dY``. The exponentials follow from ``exp(X_T)`` by the normalisers,
    ``exp(Y_k) = exp(X_k) exp(c_k)`` and ``exp(X_{k-1}) = exp(Y_k) exp(r_k)``, and are recomputed from the
    log-iterate every :data:`ANCHOR_EVERY` iterations, so that no entry underflows for good.
    """
    row, col = _dims(layout_batch_last)
    reuse = not is_tracing()
    row_growth, col_growth = normalisers.row_growth, normalisers.col_growth
    steps = row_growth.shape[0]
    rows = cols = None  # sum_{j > k+1} r_j and c_j at an anchor
    for k in range(steps, -1, -1):  # the adjoint of iteration k + 1 (0-based k)
        if k < steps and (steps - k) % ANCHOR_EVERY == 0:
            # X_{k+1} = X_T + sum_{j > k+1} (r_j + c_j); products of ANCHOR_EVERY ratios stay well in range
            more_rows = row_growth[k : k + ANCHOR_EVERY].prod(0).log_()
            more_cols = col_growth[k : k + ANCHOR_EVERY].prod(0).log_()
            rows = more_rows if rows is None else rows.add_(more_rows)
            cols = more_cols if cols is None else cols.add_(more_cols)
            e = _exp(torch.add(x, rows, out=e).add_(cols), out=e) if reuse else _exp(x + rows + cols, out=None)
        col_factor = col_growth[k - 1] if k else normalisers.col0.exp()  # exp(c_{k+1})
        if reuse:
            grad_x.addcmul_(e, grad_x.sum(col, keepdim=True), value=-1)
            e.mul_(col_factor)
            grad_x.addcmul_(e, grad_x.sum(row, keepdim=True), value=-1)
            if k:
                e.mul_(row_growth[k - 1])
        else:
            grad_x = grad_x - e * grad_x.sum(col, keepdim=True)
            e = e * col_factor
            grad_x = grad_x - e * grad_x.sum(row, keepdim=True)
            if k:
                e = e * row_growth[k - 1]
    return grad_x


def _blocks(batch: int, step: int) -> list[slice]:
    return [slice(s, min(s + step, batch)) for s in range(0, batch, step)]


def _to_batch_last(src: Tensor, dtype: torch.dtype) -> Tensor:
    """``(b, n, m) -> (n, m, b)`` contiguous in ``dtype``: one 2-D transposing copy (ATen's blocked fast path)."""
    b, n, m = src.shape
    out = torch.empty((n, m, b), dtype=dtype, device=src.device)
    out.view(n * m, b).copy_(src.reshape(b, n * m).t())
    return out


def _from_batch_last(src: Tensor, out: Tensor) -> None:
    """Copy ``src (n, m, b)`` into the contiguous ``out (b, n, m)`` (transposing, casting to its dtype)."""
    b, n, m = out.shape
    out.view(b, n * m).copy_(src.reshape(n * m, b).t())


def block_size(x: Tensor) -> int:
    """Matrices per cache block of the batch ``x (B, n, m)``.

    About :data:`CPU_BLOCK_ELEMENTS` entries on the CPU; the whole batch elsewhere and under ``torch.compile``
    (which fuses the iterations itself).
    """
    b, n, m = x.shape
    if x.device.type != "cpu" or is_tracing():
        return b
    return max(1, min(b, CPU_BLOCK_ELEMENTS // (n * m)))


class SinkhornKnopp(torch.autograd.Function):
    """``log_alpha (B, n, m) -> P (B, n, m)`` by ``n_iter`` Sinkhorn-Knopp iterations, unrolled gradient.

    Rows of ``P`` sum to 1 and columns to ``n / m``; the backward is :func:`reverse`. Computes in
    ``compute_dtype`` (float32 or float64) and returns the dtype of ``log_alpha``. Saves the last log-iterate and
    the normalisers: ``n m + n_iter (n + m)`` numbers per matrix. On the CPU the batch runs in cache blocks
    (:func:`block_size`), each block through all its iterations (and, in the backward, its reverse pass) while it
    stays in the cache.
    """

    @staticmethod
    def forward(ctx, log_alpha: Tensor, n_iter: int, tau: float, compute_dtype: torch.dtype) -> Tensor:
        """Iterate without autograd, block by block, in the layout :func:`batch_last` chooses."""
        batch, n, m = log_alpha.shape
        layout = batch_last(log_alpha)
        log_mass = math.log(n / m)
        blocks = _blocks(batch, block_size(log_alpha))
        out = None if len(blocks) == 1 and not layout else torch.empty_like(log_alpha)
        saved: list[Tensor] = []  # per block: the last iterate and its Normalisers
        for block in blocks:
            if layout:
                x0 = _to_batch_last(log_alpha[block], compute_dtype).div_(tau)
            else:
                x0 = log_alpha[block].to(compute_dtype) / tau
            x, normalisers = iterate(x0, n_iter, layout)
            saved += [x, *normalisers]
            p = _exp(x, out=None, shift=log_mass)
            if out is None:
                out = p.to(log_alpha.dtype)
            elif layout:
                _from_batch_last(p, out[block])
            else:
                out[block] = p
        ctx.save_for_backward(*saved)
        ctx.blocks, ctx.layout, ctx.tau, ctx.log_mass = blocks, layout, tau, log_mass
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        """One reverse pass over the iterations (:func:`reverse`), block by block."""
        blocks, layout, log_mass = ctx.blocks, ctx.layout, ctx.log_mass
        saved = ctx.saved_tensors
        grad_in = None if len(blocks) == 1 and not layout else torch.empty_like(grad_out)
        per_block = 1 + len(Normalisers._fields)
        for i, block in enumerate(blocks):
            x, *normalisers = saved[per_block * i : per_block * (i + 1)]
            grad = _to_batch_last(grad_out[block], x.dtype) if layout else grad_out[block]
            # d P / d X_T = P = exp(X_T) n / m
            e = _exp(x, out=None)
            grad_x = torch.mul(e, grad) if log_mass == 0 else torch.mul(e, grad).mul_(math.exp(log_mass))
            grad_x0 = reverse(grad_x, x, Normalisers(*normalisers), layout, e).div_(ctx.tau)
            if grad_in is None:
                grad_in = grad_x0.to(grad_out.dtype)
            elif layout:
                _from_batch_last(grad_x0, grad_in[block])
            else:
                grad_in[block] = grad_x0
        return grad_in, None, None, None
