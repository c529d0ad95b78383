"""Gibbs kernels ``K = exp(-C / eps)`` applied in the log domain: ``log(K exp(v))`` without leaving it.

Both kernels apply ``v -> log(K exp(v))`` (``apply``) and ``u -> log(K^T exp(u))`` (``apply_t``) to log-scalings,
the two soft-min passes of a Bregman projection. Each application is a log-sum-exp computed one of two ways:

- ``"shifted"``: ``m + log(K' exp(v - m))``, a matrix product, with ``m = max_j v_j`` per vector and
  ``K' = exp(-(C - min C) / eps)`` stored once. The term of ``argmax v`` is at least ``exp(-spread)`` times the
  largest possible one (``spread = (max C - min C) / eps``), and the terms that the product rounds away (exponent
  below :data:`~otkit.geometry.tiles.EXP_FLOOR`) are below ``exp(EXP_FLOOR)`` times that largest one. While
  ``spread <= SAFE_LOG`` (60 in float32, 600 in float64) they are below ``exp(-27)`` (float32) or ``exp(-108)``
  (float64) of the sum: the product equals the log-sum-exp to the dtype's rounding. Problems beyond float32's
  range but within float64's compute their products in float64.
- ``"lse"``: ``torch.logsumexp`` over ``v_j - C_ij / eps``, in chunks of at most :data:`LSE_ENTRIES` terms, for
  kernels whose spread is beyond float64's range (any cost scale).

:class:`DenseKernel` holds a cost matrix ``(..., n, m)``; :class:`GridKernel` the squared Euclidean cost of an
``H x W`` grid, applied as two 1-D kernels (one per axis) and never as an ``(HW) x (HW)`` matrix.
"""

from __future__ import annotations

import torch
from torch import Tensor

from otkit.geometry.tiles import EXP_FLOOR, SAFE_LOG

__all__ = ["LSE_ENTRIES", "DenseKernel", "GridKernel", "axis_log_kernel"]

# Terms per chunk of the exact log-sum-exp path (32 MiB in float64).
LSE_ENTRIES = 2**22


def _product_dtype(spread: float, dtype: torch.dtype) -> torch.dtype | None:
    """The dtype in which a shifted product is exact for a kernel of this spread; ``None``: none is."""
    for candidate in (dtype, torch.float64):
        if spread <= SAFE_LOG[candidate]:
            return candidate
    return None


def _shifted_product(v: Tensor, kernel: Tensor, offset: float, dtype: torch.dtype) -> Tensor:
    """``log(exp(v) @ kernel^T) - offset``: ``v (..., m)``, ``kernel (..., n, m)`` -> ``(..., n)`` in ``v``'s dtype."""
    shift = v.amax(-1, keepdim=True)
    shift = torch.where(torch.isfinite(shift), shift, 0.0)  # an all -inf vector: its sum is 0, its log -inf
    scaled = torch.exp((v - shift).clamp_min(EXP_FLOOR[dtype]).to(dtype))
    scaled = torch.where(torch.isneginf(v), 0.0, scaled)
    if kernel.dim() == 2:
        sums = scaled @ kernel.transpose(-1, -2)
    else:
        sums = torch.matmul(kernel, scaled.unsqueeze(-1)).squeeze(-1)
    return (torch.log(sums) - offset).to(v.dtype) + shift


def _chunked_lse(v: Tensor, log_kernel: Tensor) -> Tensor:
    """``LSE_j(v_j + log_kernel_ij)``: ``v (R, m)``, ``log_kernel (n, m)`` -> ``(R, n)``, in row chunks."""
    n, m = log_kernel.shape
    rows = max(1, LSE_ENTRIES // (n * m))
    return torch.cat([torch.logsumexp(chunk.unsqueeze(-2) + log_kernel, -1) for chunk in v.split(rows)])


class DenseKernel:
    """The Gibbs kernel of a cost matrix ``(..., n, m)`` (leading dims broadcast with the vectors' batch)."""

    def __init__(self, cost: Tensor, eps: float) -> None:
        low, high = float(cost.min()), float(cost.max())
        self.eps, self.offset = eps, low / eps
        self.dtype = _product_dtype((high - low) / eps, cost.dtype)
        self.method = "lse" if self.dtype is None else "shifted"
        if self.dtype is None:
            self.log_kernel = -cost / eps
        else:
            self.kernel = torch.exp(-(cost.to(self.dtype) - low) / eps)

    def apply(self, v: Tensor) -> Tensor:
        """``log(K exp(v))``: ``(..., m) -> (..., n)``."""
        if self.dtype is None:
            return torch.logsumexp(v.unsqueeze(-2) + self.log_kernel, -1)
        return _shifted_product(v, self.kernel, self.offset, self.dtype)

    def apply_t(self, u: Tensor) -> Tensor:
        """``log(K^T exp(u))``: ``(..., n) -> (..., m)``."""
        if self.dtype is None:
            return torch.logsumexp(u.unsqueeze(-1) + self.log_kernel, -2)
        return _shifted_product(u, self.kernel.transpose(-1, -2), self.offset, self.dtype)


def axis_log_kernel(size: int, eps: float, like: Tensor) -> Tensor:
    """``-(t_i - t_j)^2 / eps`` for ``t = linspace(0, 1, size)``: the log kernel of one grid axis, ``(size, size)``."""
    t = torch.linspace(0.0, 1.0, size, dtype=like.dtype, device=like.device)
    return -((t.unsqueeze(-1) - t) ** 2) / eps


class _AxisKernel:
    """One axis of a grid kernel: ``log(K_axis exp(v))`` along the last dim of ``v``."""

    def __init__(self, size: int, eps: float, like: Tensor) -> None:
        spread = (1.0 if size > 1 else 0.0) / eps
        self.dtype = _product_dtype(spread, like.dtype)
        log_kernel = axis_log_kernel(size, eps, like)
        self.log_kernel = log_kernel if self.dtype is None else None
        self.kernel = None if self.dtype is None else torch.exp(log_kernel.to(self.dtype))

    def apply(self, v: Tensor) -> Tensor:
        if self.dtype is None:
            flat = v.reshape(-1, v.shape[-1])
            return _chunked_lse(flat, self.log_kernel).reshape(v.shape)
        return _shifted_product(v, self.kernel, 0.0, self.dtype)


class GridKernel:
    """The Gibbs kernel of ``|x - y|^2`` on the grid ``linspace(0, 1, H) x linspace(0, 1, W)``, axis by axis.

    ``K = K_H (x) K_W``, so ``log(K exp(v))`` for ``v (..., H, W)`` is a 1-D log-convolution along ``W`` then one
    along ``H``: ``O(HW (H + W))`` operations and ``O(HW)`` memory per image. ``K`` is symmetric.
    """

    def __init__(self, height: int, width: int, eps: float, like: Tensor) -> None:
        self.rows = _AxisKernel(height, eps, like)
        self.cols = _AxisKernel(width, eps, like)
        methods = {"lse" if axis.dtype is None else "shifted" for axis in (self.rows, self.cols)}
        self.method = "lse" if "lse" in methods else "shifted"

    def apply(self, v: Tensor) -> Tensor:
        """``log(K exp(v))`` for images ``v (..., H, W)``."""
        along_w = self.cols.apply(v)
        return self.rows.apply(along_w.transpose(-1, -2)).transpose(-1, -2)

    apply_t = apply
