"""Fused Triton kernels for the streamed geometries: the soft-min and plan products without any tile in memory.

FlashAttention-style: one program owns a block of ``BLOCK_N`` rows of one problem, keeps its augmented features
(:meth:`otkit.geometry.Geometry.augmented`) on chip, and walks over blocks of ``BLOCK_M`` columns. Each block's
exponent ``E = X~ Y~^T`` is one ``tl.dot`` (for ``euclidean``, ``r_i + c_j - sqrt(max(X~ Y~^T, 0)) / eps`` on
the squared distances); then

- :func:`stream_lse` folds it into an online log-sum-exp per row (running maximum and rescaled sum);
- :func:`stream_exp_sums` accumulates ``exp(E) V`` with a second ``tl.dot``, for shifted exponents.

The ``n x m`` exponent never reaches memory: traffic is ``O((n + m) (d + k))`` per pass. Products run with
``input_precision="ieee"``: the exponents are differences of terms of size ``|x|^2 / eps``, which TF32 would
round by about 1e-3 of that. float32 only (float64 stays on the PyTorch tiles).

:func:`otkit.geometry.backend.stream_backend` is the selection rule; this module imports triton and is imported
only by a geometry that runs it. Under ``TRITON_INTERPRET=1`` (set before triton is imported) the kernels run on
CPU tensors in triton's interpreter.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["BLOCK_M", "BLOCK_N", "stream_exp_sums", "stream_lse"]

BLOCK_N, BLOCK_M = 64, 64  # rows per program, columns per step


@triton.jit
def _exponent(
    x,
    y_base,
    row,
    col_base,
    cols,
    m,
    k,
    stride_ym,
    stride_yk,
    stride_cm,
    inv_eps,
    K: tl.constexpr,
    EUCLIDEAN: tl.constexpr,
):
    """The ``(BLOCK_N, BLOCK_M)`` exponent of one column block; masked columns get ``-inf``."""
    ks = tl.arange(0, K)
    y = tl.load(
        y_base + cols[None, :] * stride_ym + ks[:, None] * stride_yk,
        mask=(cols[None, :] < m) & (ks[:, None] < k),
        other=0.0,
    )
    e = tl.dot(x, y, input_precision="ieee")
    if EUCLIDEAN:
        c = tl.load(col_base + cols * stride_cm, mask=cols < m, other=0.0)
        e = row[:, None] + c[None, :] - tl.sqrt(tl.maximum(e, 0.0)) * inv_eps
    return tl.where(cols[None, :] < m, e, -float("inf"))


@triton.jit
def _load_rows(
    x_ptr, row_ptr, pid_b, rows, n, k, stride_xb, stride_xn, stride_xk, stride_rb, stride_rn, K: tl.constexpr
):
    ks = tl.arange(0, K)
    x = tl.load(
        x_ptr + pid_b * stride_xb + rows[:, None] * stride_xn + ks[None, :] * stride_xk,
        mask=(rows[:, None] < n) & (ks[None, :] < k),
        other=0.0,
    )
    row = tl.load(row_ptr + pid_b * stride_rb + rows * stride_rn, mask=rows < n, other=0.0)
    return x, row


@triton.jit
def _lse_kernel(
    x_ptr,
    y_ptr,
    row_ptr,
    col_ptr,
    out_ptr,
    n,
    m,
    k,
    stride_xb,
    stride_xn,
    stride_xk,
    stride_yb,
    stride_ym,
    stride_yk,
    stride_rb,
    stride_rn,
    stride_cb,
    stride_cm,
    inv_eps,
    K: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
    EUCLIDEAN: tl.constexpr,
):
    pid_b, pid_n = tl.program_id(0).to(tl.int64), tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    x, row = _load_rows(x_ptr, row_ptr, pid_b, rows, n, k, stride_xb, stride_xn, stride_xk, stride_rb, stride_rn, K)
    run_max = tl.full([BLOCK_N], -float("inf"), dtype=tl.float32)
    run_sum = tl.zeros([BLOCK_N], dtype=tl.float32)
    for start in range(0, m, BLOCK_M):
        cols = start + tl.arange(0, BLOCK_M)
        e = _exponent(
            x,
            y_ptr + pid_b * stride_yb,
            row,
            col_ptr + pid_b * stride_cb,
            cols,
            m,
            k,
            stride_ym,
            stride_yk,
            stride_cm,
            inv_eps,
            K,
            EUCLIDEAN,
        )
        new_max = tl.maximum(run_max, tl.max(e, axis=1))
        run_sum = run_sum * tl.exp(run_max - new_max) + tl.sum(tl.exp(e - new_max[:, None]), axis=1)
        run_max = new_max
    tl.store(out_ptr + pid_b * n + rows, run_max + tl.log(run_sum), mask=rows < n)


@triton.jit
def _sums_kernel(
    x_ptr,
    y_ptr,
    row_ptr,
    col_ptr,
    v_ptr,
    out_ptr,
    n,
    m,
    k,
    kv,
    stride_xb,
    stride_xn,
    stride_xk,
    stride_yb,
    stride_ym,
    stride_yk,
    stride_rb,
    stride_rn,
    stride_cb,
    stride_cm,
    stride_vb,
    stride_vm,
    stride_vk,
    inv_eps,
    K: tl.constexpr,
    KV: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
    EUCLIDEAN: tl.constexpr,
):
    pid_b, pid_n = tl.program_id(0).to(tl.int64), tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    x, row = _load_rows(x_ptr, row_ptr, pid_b, rows, n, k, stride_xb, stride_xn, stride_xk, stride_rb, stride_rn, K)
    ks = tl.arange(0, KV)
    acc = tl.zeros([BLOCK_N, KV], dtype=tl.float32)
    for start in range(0, m, BLOCK_M):
        cols = start + tl.arange(0, BLOCK_M)
        e = _exponent(
            x,
            y_ptr + pid_b * stride_yb,
            row,
            col_ptr + pid_b * stride_cb,
            cols,
            m,
            k,
            stride_ym,
            stride_yk,
            stride_cm,
            inv_eps,
            K,
            EUCLIDEAN,
        )
        v = tl.load(
            v_ptr + pid_b * stride_vb + cols[:, None] * stride_vm + ks[None, :] * stride_vk,
            mask=(cols[:, None] < m) & (ks[None, :] < kv),
            other=0.0,
        )
        acc += tl.dot(tl.exp(e), v, input_precision="ieee")
    out = out_ptr + pid_b * n * kv + rows[:, None] * kv + ks[None, :]
    tl.store(out, acc, mask=(rows[:, None] < n) & (ks[None, :] < kv))


def _features(geom, row: Tensor, col: Tensor, eps: float) -> tuple[Tensor, Tensor, bool]:
    if geom.kind == "euclidean":
        left, right = geom.euclidean_features()
        return left.contiguous(), right.contiguous(), True
    left, right = geom.augmented(row, col, eps)
    return left.contiguous(), right.contiguous(), False


def _launch(kernel, geom, grid_rows: int, *args, **meta) -> None:
    on_device = torch.cuda.device(geom.device) if geom.device.type == "cuda" else contextlib.nullcontext()
    with on_device:
        kernel[(geom.shape[0], grid_rows)](*args, **meta)


def stream_lse(geom, col: Tensor, eps: float) -> Tensor:
    """``LSE_j(c_j - C_ij / eps)`` ``(B, n)`` by :func:`_lse_kernel`; ``col (B, m)``."""
    batch, n, m = geom.shape
    row = col.new_zeros(batch, n)
    left, right, euclidean = _features(geom, row, col, eps)
    out = torch.empty(batch, n, dtype=torch.float32, device=col.device)
    k = left.shape[-1]
    _launch(
        _lse_kernel,
        geom,
        triton.cdiv(n, BLOCK_N),
        left,
        right,
        row,
        col,
        out,
        n,
        m,
        k,
        *left.stride(),
        *right.stride(),
        *row.stride(),
        *col.stride(),
        1.0 / eps,
        K=max(16, triton.next_power_of_2(k)),
        BLOCK_N=BLOCK_N,
        BLOCK_M=BLOCK_M,
        EUCLIDEAN=euclidean,
    )
    return out


def stream_exp_sums(geom, row: Tensor, col: Tensor, eps: float, values: Tensor | None) -> Tensor:
    """``sum_j exp(r_i + c_j - C_ij / eps) [V_j]``, ``(B, n)`` or ``(B, n, k)``, by :func:`_sums_kernel`."""
    batch, n, m = geom.shape
    left, right, euclidean = _features(geom, row, col, eps)
    vals = col.new_ones(batch, m, 1) if values is None else values.to(torch.float32)
    kv, k = vals.shape[-1], left.shape[-1]
    out = torch.empty(batch, n, kv, dtype=torch.float32, device=col.device)
    _launch(
        _sums_kernel,
        geom,
        triton.cdiv(n, BLOCK_N),
        left,
        right,
        row,
        col,
        vals,
        out,
        n,
        m,
        k,
        kv,
        *left.stride(),
        *right.stride(),
        *row.stride(),
        *col.stride(),
        *vals.stride(),
        1.0 / eps,
        K=max(16, triton.next_power_of_2(k)),
        KV=max(16, triton.next_power_of_2(kv)),
        BLOCK_N=BLOCK_N,
        BLOCK_M=BLOCK_M,
        EUCLIDEAN=euclidean,
    )
    return out.squeeze(-1) if values is None else out
