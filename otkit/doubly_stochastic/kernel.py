"""Fused Triton forward and backward of :func:`otkit.sinkhorn_knopp` for batches of small matrices on CUDA.

One program takes a group of ``BLOCK_B`` matrices ``(n, m)``, ``n, m <= 16``, as one register tile
``(BLOCK_B, N, M)`` (sides padded to powers of two) and runs every iteration on chip: the input is read once,
the output written once, and no kernel is launched per iteration. In base 2 (``x = log2(e) log_alpha / tau``)::

    r_k = LSE2_j x,  x -= r_k;   c_k = LSE2_i x,  x -= c_k        (k = 1 .. n_iter)
    out = 2^(x + log2(n / m))

with max-stabilised log-sum-exps. The forward also writes what the backward needs: the last iterate ``x`` and the
normalisers ``r_k``, ``c_k`` (``n m + n_iter (n + m)`` float32 numbers per matrix, as the PyTorch path keeps).
The backward kernel walks the iterations in reverse on chip, rebuilding ``y = x + c_k`` and ``x = y + r_k`` and
applying the adjoints of the two normalisations (``dy = dx - 2^x * sum_i dx``, ``dx = dy - 2^y * sum_j dy``):
the adjoints that :func:`otkit.doubly_stochastic.unrolled.reverse` applies, with the exponentials recomputed on chip.

Padding entries hold ``-inf`` and padded rows and columns get zero normalisers, so they never meet a real entry.
Inputs may be float32, float16 or bfloat16 (computed in float32). This module imports triton: the dispatch in
:mod:`otkit.doubly_stochastic.backend` imports it only when a problem runs the kernel. With ``TRITON_INTERPRET=1``
set before triton is first imported, the kernels run in triton's CPU interpreter on CPU tensors (for tests).
"""

from __future__ import annotations

import contextlib
import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from otkit._exp2 import LOG2_E

__all__ = ["TILE_ELEMENTS", "TritonSinkhornKnopp"]

TILE_ELEMENTS = 2048  # padded entries per program: BLOCK_B = TILE_ELEMENTS / (N M) matrices


@triton.jit
def _offsets(pid, count, n, m, BLOCK_B: tl.constexpr, N: tl.constexpr, M: tl.constexpr):
    """Indices ``(b, i, j)`` of the program's tile, broadcastable to ``(BLOCK_B, N, M)``, and their masks."""
    b = pid * BLOCK_B + tl.arange(0, BLOCK_B)[:, None, None]
    i = tl.arange(0, N)[None, :, None]
    j = tl.arange(0, M)[None, None, :]
    return b, i, j, b < count, i < n, j < m


@triton.jit
def _lse2(x, axis: tl.constexpr):
    """``log2 sum 2^x`` along ``axis`` (kept as a dim of size 1); ``0`` where the whole line is ``-inf``."""
    top = tl.max(x, axis=axis, keep_dims=True)
    top = tl.where(top == -float("inf"), 0.0, top)
    total = tl.sum(tl.exp2(x - top), axis=axis, keep_dims=True)
    return tl.where(total > 0, top + tl.log2(total), 0.0)


@triton.jit
def _forward_kernel(
    in_ptr,
    out_ptr,
    x_ptr,
    r_ptr,
    c_ptr,
    count,
    n,
    m,
    n_iter,
    scale,
    log2_mass,
    BLOCK_B: tl.constexpr,
    N: tl.constexpr,
    M: tl.constexpr,
):
    b, i, j, b_ok, i_ok, j_ok = _offsets(tl.program_id(0), count, n, m, BLOCK_B, N, M)
    ok = b_ok & i_ok & j_ok
    entry = b * n * m + i * m + j
    x = tl.load(in_ptr + entry, mask=ok, other=0.0).to(tl.float32) * scale
    x = tl.where(ok, x, -float("inf"))
    for k in range(n_iter):
        r = _lse2(x, 2)  # (BLOCK_B, N, 1)
        x = x - r
        tl.store(r_ptr + (k * count + b) * n + i, r, mask=b_ok & i_ok)
        c = _lse2(x, 1)  # (BLOCK_B, 1, M)
        x = x - c
        tl.store(c_ptr + (k * count + b) * m + j, c, mask=b_ok & j_ok)
    tl.store(x_ptr + entry, x, mask=ok)
    tl.store(out_ptr + entry, tl.exp2(x + log2_mass).to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _backward_kernel(
    grad_ptr,
    x_ptr,
    r_ptr,
    c_ptr,
    grad_in_ptr,
    count,
    n,
    m,
    n_iter,
    scale,
    log2_mass,
    BLOCK_B: tl.constexpr,
    N: tl.constexpr,
    M: tl.constexpr,
):
    b, i, j, b_ok, i_ok, j_ok = _offsets(tl.program_id(0), count, n, m, BLOCK_B, N, M)
    ok = b_ok & i_ok & j_ok
    entry = b * n * m + i * m + j
    x = tl.load(x_ptr + entry, mask=ok, other=-float("inf"))
    grad = tl.load(grad_ptr + entry, mask=ok, other=0.0).to(tl.float32)
    # dx, dy: gradients with respect to the iterates in natural-log units (their softmaxes are 2^x in either)
    dx = grad * tl.exp2(x + log2_mass)
    for step in range(n_iter):
        k = n_iter - 1 - step
        c = tl.load(c_ptr + (k * count + b) * m + j, mask=b_ok & j_ok, other=0.0)
        y = x + c
        dy = dx - tl.exp2(x) * tl.sum(dx, axis=1, keep_dims=True)
        dx = dy - tl.exp2(y) * tl.sum(dy, axis=2, keep_dims=True)
        r = tl.load(r_ptr + (k * count + b) * n + i, mask=b_ok & i_ok, other=0.0)
        x = y + r
    grad_in = dx * (scale * 0.6931471805599453)  # d x0 / d log_alpha = 1 / tau
    tl.store(grad_in_ptr + entry, grad_in.to(grad_in_ptr.dtype.element_ty), mask=ok)


def _launch(kernel, count: int, n: int, m: int, device: torch.device, *args) -> None:
    n_pad, m_pad = triton.next_power_of_2(n), triton.next_power_of_2(m)
    block_b = max(1, TILE_ELEMENTS // (n_pad * m_pad))
    grid = (triton.cdiv(count, block_b),)
    on_device = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with on_device:  # triton launches on the current CUDA device
        kernel[grid](*args, BLOCK_B=block_b, N=n_pad, M=m_pad, num_warps=4)


class TritonSinkhornKnopp(torch.autograd.Function):
    """:class:`otkit.doubly_stochastic.unrolled.SinkhornKnopp` with both passes in the fused kernels.

    ``log_alpha (B, n, m)`` with ``n, m <= 16``, float32/float16/bfloat16; returns its dtype.
    """

    @staticmethod
    def forward(ctx, log_alpha: Tensor, n_iter: int, tau: float) -> Tensor:
        """One launch: all iterations of every matrix."""
        count, n, m = log_alpha.shape
        log_alpha = log_alpha.contiguous()
        out = torch.empty_like(log_alpha)
        x = torch.empty(log_alpha.shape, dtype=torch.float32, device=log_alpha.device)
        r = torch.empty((n_iter, count, n), dtype=torch.float32, device=log_alpha.device)
        c = torch.empty((n_iter, count, m), dtype=torch.float32, device=log_alpha.device)
        scale, log2_mass = LOG2_E / tau, math.log2(n / m)
        args = (log_alpha, out, x, r, c, count, n, m, n_iter, scale, log2_mass)
        _launch(_forward_kernel, count, n, m, log_alpha.device, *args)
        ctx.save_for_backward(x, r, c)
        ctx.n_iter, ctx.scale, ctx.log2_mass = n_iter, scale, log2_mass
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        """One launch: the reverse pass of every matrix."""
        x, r, c = ctx.saved_tensors
        count, n, m = x.shape
        grad_out = grad_out.contiguous()
        grad_in = torch.empty_like(grad_out)
        args = (grad_out, x, r, c, grad_in, count, n, m, ctx.n_iter, ctx.scale, ctx.log2_mass)
        _launch(_backward_kernel, count, n, m, x.device, *args)
        return grad_in, None, None
