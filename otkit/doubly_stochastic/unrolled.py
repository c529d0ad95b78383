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
row sums lie in ``[1/n, m]`` and the column sums after the row step in ``[1/m, n]``: the log-sum-exps need no
maximum, and one exponential ``E = exp(X)`` gives both, ``s = E 1`` and ``t = (E / s)^T 1`` (computed in base 2,
``exp2`` being several times faster than ``exp`` in PyTorch's CPU kernels). Entries that
underflow in ``E`` are negligible against these sums; the iterate itself stays in the log domain, so no entry is
ever lost.

Layout: on the CPU, batches of small matrices (``n * m <= CPU_BATCH_LAST_ELEMENTS``) are iterated as
``(n, m, batch)`` tensors, batch last and contiguous: every ``log_softmax``, maximum and adjoint then runs
vectorised along the batch, about ten times faster than along dims of size 4. Larger matrices and other devices
keep the natural ``(batch, n, m)`` layout. On the CPU the batch is cut into cache-sized blocks, and each block runs
all its iterations before the next starts (:func:`block_size`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from otkit._checks import is_tracing

__all__ = ["CPU_BATCH_LAST_ELEMENTS", "CPU_BLOCK_ELEMENTS", "SinkhornKnopp", "batch_last", "block_size", "iterate"]

# Largest n * m iterated batch-last on the CPU (16 x 16); larger matrices vectorise well along their own rows.
CPU_BATCH_LAST_ELEMENTS = 256
LOG2_E, LN_2 = 1 / math.log(2), math.log(2)
# Entries per cache block on the CPU (256 KiB of float32): a block and the few iterates alive at a time fit a
# core's L2 cache. On (4096, 16, 16), log_softmax steps over blocks of 2**16 entries ran about 5x faster than over
# the whole 4 MiB batch, which streams from memory at every step; 2**15 to 2**18 measured alike.
CPU_BLOCK_ELEMENTS = 2**16


def batch_last(x: Tensor) -> bool:
    """Whether the batch ``x (B, n, m)`` is iterated in the ``(n, m, B)`` layout (small matrices on the CPU)."""
    return x.device.type == "cpu" and x.shape[-2] * x.shape[-1] <= CPU_BATCH_LAST_ELEMENTS and x.shape[0] > 1


def _dims(layout_batch_last: bool) -> tuple[int, int]:
    """The (row-sum, column-sum) dims: the dim summed to normalise rows (``j``), then columns (``i``)."""
    return (1, 0) if layout_batch_last else (2, 1)


def iterate(x0: Tensor, n_iter: int, layout_batch_last: bool) -> tuple[Tensor, Tensor, Tensor]:
    """``n_iter`` row-then-column normalisations of the log-matrix ``x0``, without autograd.

    ``x0`` is ``(B, n, m)``, or ``(n, m, B)`` batch-last. Returns the last iterate ``X_T`` (columns summing to 1,
    the layout of ``x0``) and the stacked normalisers ``r (n_iter, *x0 shape with m -> 1)`` and
    ``c (n_iter, *x0 shape with n -> 1)``: ``X_T = x0 - sum_k r_k - sum_k c_k``.
    """
    row, col = _dims(layout_batch_last)
    y = torch.log_softmax(x0, row)
    r = [x0.amax(row, keepdim=True) - y.amax(row, keepdim=True)]
    x = torch.log_softmax(y, col)
    c = [y.amax(col, keepdim=True) - x.amax(col, keepdim=True)]
    if n_iter == 1:
        return x, r[0].unsqueeze(0), c[0].unsqueeze(0)
    x2 = x.mul_(LOG2_E)  # in log2 units from here: exp2 is several times faster than exp on CPUs
    # Outside torch.compile every step writes into buffers it owns: a fresh tensor per operation costs a page
    # fault per 4 KiB on CPUs (large blocks come from mmap), more than the operation itself.
    reuse = not is_tracing()
    e = torch.empty_like(x2) if reuse else None
    for _ in range(1, n_iter):
        # X has unit column sums, so its row sums s lie in [1/n, m] and the column sums t of X / s in
        # [1/m, n]: the log-sum-exps need no maximum, and one exponential serves both halves of the iteration.
        e = torch.exp2(x2, out=e) if reuse else torch.exp2(x2)
        s = e.sum(row, keepdim=True)
        t = e.div_(s).sum(col, keepdim=True)
        r.append(s.log2_())
        c.append(t.log2_())
        x2.sub_(r[-1]).sub_(c[-1])
    r[0], c[0] = r[0] * LOG2_E, c[0] * LOG2_E
    return x2.mul_(LN_2), torch.stack(r).mul_(LN_2), torch.stack(c).mul_(LN_2)


def reverse(grad_x: Tensor, x: Tensor, r: Tensor, c: Tensor, layout_batch_last: bool) -> Tensor:
    """The gradient with respect to ``x0`` of a loss whose gradient with respect to ``X_T = x`` is ``grad_x``.

    ``r`` and ``c`` are the normalisers returned by :func:`iterate`; shapes as there.
    """
    row, col = _dims(layout_batch_last)
    dtype, reuse = x.dtype, not is_tracing()
    x = x.clone()  # rebuilt in place, iteration by iteration
    grad_y = torch.empty_like(grad_x) if reuse else None
    for k in range(r.shape[0] - 1, -1, -1):
        if reuse:  # grad_x is owned here (the caller's product), so both buffers are reused
            torch._log_softmax_backward_data(grad_x, x, col, dtype, out=grad_y)
            x.add_(c[k])  # Y_k
            torch._log_softmax_backward_data(grad_y, x, row, dtype, out=grad_x)
        else:
            grad_y = torch._log_softmax_backward_data(grad_x, x, col, dtype)
            x.add_(c[k])
            grad_x = torch._log_softmax_backward_data(grad_y, x, row, dtype)
        if k:
            x.add_(r[k])  # X_{k-1}
    return grad_x


def _scaled_exp(x: Tensor, log_mass: float) -> Tensor:
    """``exp(x + log_mass)``, computed as ``exp2`` (several times faster than ``exp`` in PyTorch's CPU kernels)."""
    return torch.mul(x, LOG2_E).add_(log_mass * LOG2_E).exp2_()


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
        saved: list[list[Tensor]] = [[], [], []]  # per block: the last iterate, row and column normalisers
        for block in blocks:
            if layout:
                x0 = _to_batch_last(log_alpha[block], compute_dtype).div_(tau)
            else:
                x0 = log_alpha[block].to(compute_dtype) / tau
            for kept, tensor in zip(saved, iterate(x0, n_iter, layout), strict=True):
                kept.append(tensor)
            x = saved[0][-1]
            p = _scaled_exp(x, log_mass)
            if out is None:
                out = p.to(log_alpha.dtype)
            elif layout:
                _from_batch_last(p, out[block])
            else:
                out[block] = p
        ctx.save_for_backward(*saved[0], *saved[1], *saved[2])
        ctx.blocks, ctx.layout, ctx.tau, ctx.log_mass = blocks, layout, tau, log_mass
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        """One reverse pass over the iterations (:func:`reverse`), block by block."""
        blocks, layout, log_mass = ctx.blocks, ctx.layout, ctx.log_mass
        saved = ctx.saved_tensors
        count = len(blocks)
        grad_in = None if count == 1 and not layout else torch.empty_like(grad_out)
        for i, block in enumerate(blocks):
            x, r, c = saved[i], saved[count + i], saved[2 * count + i]
            grad = _to_batch_last(grad_out[block], x.dtype) if layout else grad_out[block]
            # d P / d X_T = P = exp(X_T + log(n / m))
            grad_x = _scaled_exp(x, log_mass).mul_(grad)
            grad_x0 = reverse(grad_x, x, r, c, layout).div_(ctx.tau)
            if grad_in is None:
                grad_in = grad_x0.to(grad_out.dtype)
            elif layout:
                _from_batch_last(grad_x0, grad_in[block])
            else:
                grad_in[block] = grad_x0
        return grad_in, None, None, None
