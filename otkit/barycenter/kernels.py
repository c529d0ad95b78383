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
- ``"blocked"`` (grid axes): beyond that spread, blocks of columns within which the kernel spans at most
  ``SAFE_LOG``, each a shifted product, combined by a log-sum-exp over the blocks; exact in the same way.
- ``"lse"``: ``torch.logsumexp`` over ``v_j - C_ij / eps``, in chunks of at most :data:`LSE_ENTRIES` terms, for
  dense kernels whose spread is beyond float64's range, and grid axes whose blocks would hold one column.

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
        low, high = float(cost.detach().min()), float(cost.detach().max())
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


def _block_size(size: int, eps: float) -> int:
    """Columns per block of a blocked axis kernel, ``s``.

    Within a block ``(t_i - t_j)^2`` spans at most ``2 (s - 1) / (size - 1)`` for every ``i``, which must stay
    within float64's ``SAFE_LOG`` times ``eps``.
    """
    return int(SAFE_LOG[torch.float64] / 2 * eps * (size - 1)) + 1


class _AxisKernel:
    """One axis of a grid kernel: ``log(K_axis exp(v))`` along the last dim of ``v``.

    Up to a spread ``1 / eps`` of float64's ``SAFE_LOG``, one max-shifted product. Beyond, ``"blocked"``: the
    columns are cut into blocks of :func:`_block_size` within which the kernel spans at most ``SAFE_LOG``; each
    block is a product shifted by its own maximum of ``v`` and, per output, its own smallest cost, and the blocks'
    logs are combined by a log-sum-exp (exact, like one product per block). Blocks of one column are the exact
    log-sum-exp itself, computed directly (``"lse"``).
    """

    def __init__(self, size: int, eps: float, like: Tensor) -> None:
        spread = (1.0 if size > 1 else 0.0) / eps
        self.dtype = _product_dtype(spread, like.dtype)
        self.eps = eps
        log_kernel = axis_log_kernel(size, eps, like)
        self.log_kernel = self.kernel = None
        if self.dtype is not None:
            self.method = "shifted"
            self.kernel = torch.exp(log_kernel.to(self.dtype))
        elif _block_size(size, eps) > 1:
            self.method = "blocked"
            self._build_blocks(size, eps, like)
        else:
            self.method = "lse"
            self.log_kernel = log_kernel

    def _build_blocks(self, size: int, eps: float, like: Tensor) -> None:
        block = _block_size(size, eps)
        count = -(-size // block)
        t = torch.linspace(0.0, 1.0, size, dtype=torch.float64, device=like.device)
        columns = torch.arange(count * block, device=like.device).reshape(count, block)
        valid = columns < size
        cost = (t.view(1, -1, 1) - t[columns.clamp(max=size - 1)].unsqueeze(1)) ** 2  # (count, size, block)
        self.block_min = torch.where(valid.unsqueeze(1), cost, torch.inf).amin(-1)  # (count, size)
        self.block_kernel = torch.where(valid.unsqueeze(1), torch.exp(-(cost - self.block_min.unsqueeze(-1)) / eps), 0)
        self.padding = count * block - size
        self.block_shape = (count, block)

    def _apply_blocked(self, v: Tensor) -> Tensor:
        flat = v.reshape(-1, v.shape[-1]).to(torch.float64)
        flat = torch.nn.functional.pad(flat, (0, self.padding), value=-torch.inf).reshape(-1, *self.block_shape)
        shift = flat.amax(-1, keepdim=True)
        shift = torch.where(torch.isfinite(shift), shift, 0.0)
        scaled = torch.exp((flat - shift).clamp_min(EXP_FLOOR[torch.float64]))
        scaled = torch.where(torch.isneginf(flat), 0.0, scaled)
        sums = torch.einsum("rbs,bls->rbl", scaled, self.block_kernel)  # (rows, blocks, size)
        logs = torch.log(sums) + shift - self.block_min / self.eps
        return torch.logsumexp(logs, 1).to(v.dtype).reshape(v.shape)

    def apply(self, v: Tensor) -> Tensor:
        if self.method == "shifted":
            return _shifted_product(v, self.kernel, 0.0, self.dtype)
        if self.method == "blocked":
            return self._apply_blocked(v)
        flat = v.reshape(-1, v.shape[-1])
        return _chunked_lse(flat, self.log_kernel).reshape(v.shape)


class GridKernel:
    """The Gibbs kernel of ``|x - y|^2`` on the grid ``linspace(0, 1, H) x linspace(0, 1, W)``, axis by axis.

    ``K = K_H (x) K_W``, so ``log(K exp(v))`` for ``v (..., H, W)`` is a 1-D log-convolution along ``W`` then one
    along ``H``: ``O(HW (H + W))`` operations and ``O(HW)`` memory per image. ``K`` is symmetric.
    """

    def __init__(self, height: int, width: int, eps: float, like: Tensor) -> None:
        self.rows = _AxisKernel(height, eps, like)
        self.cols = _AxisKernel(width, eps, like)
        methods = {self.rows.method, self.cols.method}
        self.method = next(m for m in ("lse", "blocked", "shifted") if m in methods)

    def apply(self, v: Tensor) -> Tensor:
        """``log(K exp(v))`` for images ``v (..., H, W)``."""
        along_w = self.cols.apply(v)
        return self.rows.apply(along_w.transpose(-1, -2)).transpose(-1, -2)

    apply_t = apply
