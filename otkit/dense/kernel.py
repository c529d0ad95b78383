"""Fused Triton kernel for batches of small dense Sinkhorn problems.

One program solves one problem ``(n, m)`` with ``m <= 64`` (:data:`otkit.dense.backend.MAX_COLUMNS`): every
log-domain iteration runs on chip, with no kernel launch and no host synchronisation per iteration. The updates are
those of :func:`otkit.dense.loops.solve_log`, in the same order (``f`` from ``g``, then ``g`` from ``f``, from
``g = 0`` or a warm start), written in base 2 so that every exponential is one ``exp2``: with ``s = log2(e) / eps``,
``z_ij = -s C_ij`` and potentials ``F = s f``, ``G = s g``::

    F_i = -lam_a LSE2_j(z_ij + log2 b_j + G_j),      G_j = -lam_b LSE2_i(z_ij + log2 a_i + F_i)

where ``LSE2(x) = log2 sum 2^x``. Each iteration is a single pass over the rows: a block of rows gets its ``F``
(the full ``m`` columns are in the tile) and immediately feeds an online log-sum-exp per column for ``G``, so
the cost is read once per iteration. When the padded tile has at most :data:`RESIDENT_ELEMENTS` entries
(1024 x 8 for the multi-prompt shapes) it is loaded once and stays in registers for all iterations; larger
problems stream blocks of :data:`STREAM_ELEMENTS` entries from memory (L2) every iteration. Costs may be
float32, float16 or bfloat16; everything is computed in float32. No atomics: each program owns its outputs.

Stopping is per problem and on device: at every ``check_every``-th iteration (and the last) the program computes
the stopping error of :func:`otkit.dense.loops.solve_log` (the rule of :mod:`otkit._convergence`), the relative L1
column violation ``|P^T 1 - b exp(-g / rho_b)|_1 / |b|_1`` before the ``g`` update, and leaves the loop once it
is ``<= tol``. A problem therefore stops at the first check where it is converged, whereas the PyTorch loops run
every problem of a batch until the slowest one converges: both results satisfy ``tol``, they differ below it.

The final ``f`` is recomputed after the loop from the ``g`` it was computed from (one more row pass), rather than
written to memory on every iteration.

This module imports triton: :mod:`otkit.dense.backend` imports it only when a problem runs the kernel. With
``TRITON_INTERPRET=1`` set before triton is first imported, the kernel runs in triton's CPU interpreter and
accepts CPU tensors (slow; for tests).
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.language.extra import libdevice

from otkit._convergence import lams
from otkit._exp2 import LOG2_E
from otkit._triton import interpreting
from otkit.options import SinkhornOptions

__all__ = ["RESIDENT_ELEMENTS", "STREAM_ELEMENTS", "launch_config", "triton_sinkhorn"]

# Padded tiles (next power of two of n times that of m) up to this many float32 entries stay in registers.
RESIDENT_ELEMENTS = 8192
# Entries per streamed block of rows when the problem does not stay resident.
STREAM_ELEMENTS = 4096

_INTERPRET = interpreting()  # read when the kernels below are decorated


@triton.jit
def _log2_of_sum(s, FAST_LOG2: tl.constexpr):
    """``log2 s`` for sums ``s >= 1`` (their largest term is 1).

    ``lg2.approx`` on GPUs, whose absolute error (2^-22) is below float32 rounding here, instead of libdevice's
    exact log2f (about 25 instructions). The interpreter has no ``lg2.approx``.
    """
    if FAST_LOG2:
        return libdevice.fast_log2f(s)
    return tl.log2(s)


@triton.jit
def _logits(cost_base, rows, cols, n, m, stride_n, stride_m, scale):
    """``z^T = -C^T log2(e) / eps`` for a block of rows, as a ``(BLOCK_M, BLOCK_N)`` tile; padding reads 0.

    Transposed, so that triton's default layout puts the rows along the threads and all ``BLOCK_M`` columns of
    a row in one thread: the row log-sum-exp stays in registers (see :data:`_DO_NOT_SPECIALIZE`).
    """
    mask = (cols < m)[:, None] & (rows < n)[None, :]
    c = tl.load(cost_base + cols[:, None] * stride_m + rows[None, :] * stride_n, mask=mask, other=0.0)
    return c.to(tl.float32) * -scale


@triton.jit
def _row_update(zt, col_term, lam_a, FAST_LOG2: tl.constexpr):
    """``F_i = -lam_a LSE2_j(z_ij + col_term_j)`` for a block of rows, ``(BLOCK_N,)``; ``zt`` is ``z^T``.

    ``col_term = log2 b + G`` is ``-inf`` on padded and zero-weight columns; at least one column is finite.
    """
    x = zt + col_term[:, None]
    top = tl.max(x, axis=0)
    return -lam_a * (top + _log2_of_sum(tl.sum(tl.exp2(x - top[None, :]), axis=0), FAST_LOG2))


@triton.jit
def _column_lse(zt, row_term, FAST_LOG2: tl.constexpr):
    """``LSE2_i(z_ij + row_term_i)`` of every column over all rows at once, ``(BLOCK_M,)``; ``zt`` is ``z^T``.

    Every column has a finite term: a has positive mass, and padded columns read finite zeros.
    """
    y = zt + row_term[None, :]
    top = tl.max(y, axis=1)
    return top + _log2_of_sum(tl.sum(tl.exp2(y - top[:, None]), axis=1), FAST_LOG2)


@triton.jit
def _column_accumulate(zt, row_term, run_max, run_sum):
    """Fold a block of rows into the online ``LSE2_i(z_ij + row_term_i)`` of every column; ``zt`` is ``z^T``.

    ``run_sum`` is relative to ``run_max``; a column whose terms are all ``-inf`` so far keeps ``(-inf, 0)``.
    """
    y = zt + row_term[None, :]
    new_max = tl.maximum(run_max, tl.max(y, axis=1))
    shift = tl.where(new_max == -float("inf"), 0.0, new_max)
    run_sum = run_sum * tl.exp2(run_max - shift) + tl.sum(tl.exp2(y - shift[:, None]), axis=1)
    return new_max, run_sum


# A column stride specialised to 1 (row-major costs) makes triton lay the tile out along the columns, splitting
# every row over several threads: 2.5 to 6 times more instructions per iteration on 1024 x 8 (ptxas, sm_90).
# Unspecialised, the default layout of z^T stays (rows along the threads). A row stride of 1 (OTSeg's layout)
# may stay specialised: coalescing then agrees with that layout.
_DO_NOT_SPECIALIZE = ("stride_cm",)


@triton.jit(do_not_specialize=_DO_NOT_SPECIALIZE)
def _sinkhorn_kernel(
    cost_ptr,
    a_ptr,
    b_ptr,
    g_init_ptr,
    f_ptr,
    g_ptr,
    n_iter_ptr,
    err_ptr,
    n,
    m,
    stride_cp,
    stride_cn,
    stride_cm,
    stride_ap,
    stride_an,
    stride_bp,
    stride_bm,
    stride_gp,
    stride_gm,
    scale,
    lam_a,
    lam_b,
    eps_over_rho_b,
    tol,
    max_iter,
    check_every,
    BLOCK_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
    RESIDENT: tl.constexpr,
    HAS_INIT: tl.constexpr,
    FAST_LOG2: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    rows = tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_M)
    col_ok = cols < m
    cost_base = cost_ptr + pid * stride_cp
    a_base = a_ptr + pid * stride_ap
    b = tl.load(b_ptr + pid * stride_bp + cols * stride_bm, mask=col_ok, other=0.0).to(tl.float32)
    log2_b = tl.log2(b)  # -inf on zero-weight and padded columns
    b_mass = tl.sum(b, axis=0)
    if HAS_INIT:
        ge = tl.load(g_init_ptr + pid * stride_gp + cols * stride_gm, mask=col_ok, other=0.0).to(tl.float32)
        ge = ge * scale
    else:
        ge = tl.zeros([BLOCK_M], dtype=tl.float32)
    if RESIDENT:  # the whole problem stays in registers for every iteration
        zt_all = _logits(cost_base, rows, cols, n, m, stride_cn, stride_cm, scale)
        a_all = tl.load(a_base + rows * stride_an, mask=rows < n, other=0.0).to(tl.float32)
        log2_a_all = tl.log2(a_all)
    ge_prev = ge
    err = tl.zeros([], dtype=tl.float32)
    stop = tl.zeros([], dtype=tl.int32)
    it = tl.zeros([], dtype=tl.int32)
    while (it < max_iter) & (stop == 0):
        col_term = log2_b + ge
        if RESIDENT:
            fe = _row_update(zt_all, col_term, lam_a, FAST_LOG2)
            lse = _column_lse(zt_all, log2_a_all + fe, FAST_LOG2)
        else:
            run_max = tl.full([BLOCK_M], -float("inf"), dtype=tl.float32)
            run_sum = tl.zeros([BLOCK_M], dtype=tl.float32)
            for start in range(0, n, BLOCK_N):
                r = start + rows
                zt = _logits(cost_base, r, cols, n, m, stride_cn, stride_cm, scale)
                a = tl.load(a_base + r * stride_an, mask=r < n, other=0.0).to(tl.float32)
                fe = _row_update(zt, col_term, lam_a, FAST_LOG2)
                run_max, run_sum = _column_accumulate(zt, tl.log2(a) + fe, run_max, run_sum)
            # run_sum >= 1: every column gets a finite term (a has positive mass), the largest contributes 1
            lse = run_max + _log2_of_sum(run_sum, FAST_LOG2)
        if ((it + 1) % check_every == 0) | (it == max_iter - 1):
            col = tl.exp2(log2_b + ge + lse)  # column sums of the plan after this f update
            target = b * tl.exp2(-ge * eps_over_rho_b)  # b exp(-g / rho_b); b when balanced
            err = tl.sum(tl.where(col_ok, tl.abs(col - target), 0.0), axis=0) / b_mass
            stop = (err <= tol).to(tl.int32)
        ge_prev = ge
        ge = -lam_b * lse
        it += 1
    # The last f was computed from ge_prev: recompute it (identical arithmetic) instead of storing it per iteration.
    col_term = log2_b + ge_prev
    if RESIDENT:
        fe = _row_update(zt_all, col_term, lam_a, FAST_LOG2)
        tl.store(f_ptr + pid * n + rows, fe / scale, mask=rows < n)
    else:
        for start in range(0, n, BLOCK_N):
            r = start + rows
            fe = _row_update(_logits(cost_base, r, cols, n, m, stride_cn, stride_cm, scale), col_term, lam_a, FAST_LOG2)
            tl.store(f_ptr + pid * n + r, fe / scale, mask=r < n)
    tl.store(g_ptr + pid * m + cols, ge / scale, mask=col_ok)
    tl.store(n_iter_ptr + pid, it)
    tl.store(err_ptr + pid, err)


def launch_config(n: int, m: int) -> tuple[int, int, bool, int]:
    """``(BLOCK_N, BLOCK_M, resident, num_warps)`` for a problem ``(n, m)``."""
    block_m = triton.next_power_of_2(m)
    padded_n = triton.next_power_of_2(n)
    if padded_n * block_m <= RESIDENT_ELEMENTS:
        block_n, resident = padded_n, True
    else:
        block_n, resident = STREAM_ELEMENTS // block_m, False
    # m <= 16: each thread holds whole rows, so the row log-sum-exp needs no communication. Up to 4 warps, one per
    # SM sub-partition, feed all four exp2 (MUFU) units of an SM; more would only add cross-warp reductions. A
    # 1024 x 8 tile is then 64 entries per thread (about 200 registers on sm_90, no spills; 2 programs per SM).
    # Wider tiles: every thread also holds the column vectors of the state (m entries each), so more warps, which
    # triton then also spreads over the columns, keep them in registers (ptxas: no spills up to m = 64).
    entries = block_n * block_m
    num_warps = min(4, max(1, entries // 1024)) if block_m <= 16 else min(16, max(1, entries // 512))
    return block_n, block_m, resident, num_warps


def triton_sinkhorn(
    cost: Tensor,
    a: Tensor,
    b: Tensor,
    options: SinkhornOptions,
    g_init: Tensor | None,
    num_warps: int | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Run the fused kernel on a flat batch; one program per problem.

    Args:
        cost: ``(P, n, m)`` float32/float16/bfloat16, any strides; ``m <= 64``.
        a: ``(P, n)`` non-negative row weights (broadcast views with stride 0 are fine).
        b: ``(P, m)`` non-negative column weights.
        options: ``eps``, ``rho_a``, ``rho_b``, ``max_iter``, ``tol`` (per problem, on the column error; ``None``
            runs exactly ``max_iter`` iterations) and ``check_every`` (the last iteration is always checked) are
            used; ``domain``, ``grad`` and ``backend`` are the caller's business
            (:func:`otkit.dense.backend.select_backend`).
        g_init: ``(P, m)`` warm-start column potential in cost units, or ``None`` for ``g = 0``.
        num_warps: Warps per program; ``None`` picks from the tile size.

    Returns:
        ``f (P, n)`` and ``g (P, m)`` float32 in cost units, the iterations run per problem ``(P,)`` int32 and
        the stopping error at each problem's last check ``(P,)`` float32.
    """
    problems, n, m = cost.shape
    block_n, block_m, resident, auto_warps = launch_config(n, m)
    device = cost.device
    f = torch.empty(problems, n, dtype=torch.float32, device=device)
    g = torch.empty(problems, m, dtype=torch.float32, device=device)
    n_iter = torch.empty(problems, dtype=torch.int32, device=device)
    err = torch.empty(problems, dtype=torch.float32, device=device)
    init = g if g_init is None else g_init  # the kernel ignores the pointer without HAS_INIT
    eps, rho_b, max_iter, tol = options.eps, options.rho_b, options.max_iter, options.tol
    lam_a, lam_b = lams(options)
    on_device = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with on_device:  # triton launches on the current CUDA device
        _sinkhorn_kernel[(problems,)](
            cost,
            a,
            b,
            init,
            f,
            g,
            n_iter,
            err,
            n,
            m,
            *cost.stride(),
            *a.stride(),
            *b.stride(),
            *init.stride(),
            LOG2_E / eps,
            lam_a,
            lam_b,
            0.0 if rho_b is None else eps / rho_b,
            -1.0 if tol is None else tol,  # errors are >= 0: -1 never stops early
            max_iter,
            max_iter if tol is None else options.check_every,  # without tol only the last iteration is checked
            BLOCK_N=block_n,
            BLOCK_M=block_m,
            RESIDENT=resident,
            HAS_INIT=g_init is not None,
            FAST_LOG2=not _INTERPRET,
            num_warps=num_warps or auto_warps,
        )
    return f, g, n_iter, err
