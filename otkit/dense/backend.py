"""Where a dense solve runs: the PyTorch loops or the fused Triton kernel, chosen once per problem.

:func:`select_backend` is the rule; :func:`solve_triton` runs the kernel of :mod:`otkit.dense.kernel`, which is
imported (and triton with it) only then.
"""

from __future__ import annotations

import torch
from torch import Tensor

from otkit import _triton
from otkit._checks import is_tracing
from otkit._solution import Iterate
from otkit.options import SinkhornOptions

__all__ = [
    "AUTO_MAX_ELEMENTS",
    "MAX_COLUMNS",
    "select_backend",
    "solve_triton",
    "triton_available",
    "unavailable_reason",
]

MAX_COLUMNS = 64  # largest m: a block of rows holds all m columns of the tile
# backend="auto" takes the kernel only up to this many entries per problem: one program per problem leaves
# most of the GPU idle on a few very large problems, where the PyTorch loops use every SM. A heuristic, not a
# measured crossover.
AUTO_MAX_ELEMENTS = 2**17
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def unavailable_reason(cost: Tensor) -> str | None:
    """Why the fused kernel cannot solve ``cost`` ``(..., n, m)``, or ``None`` when it can."""
    reason = _triton.unavailable_reason(cost)
    if reason is not None:
        return reason
    if cost.dtype not in _DTYPES:
        return f"the kernel computes in float32 and takes float32/float16/bfloat16 costs, got {cost.dtype}"
    if cost.shape[-1] > MAX_COLUMNS:
        return (
            f"the cost has m = {cost.shape[-1]} columns and the kernel takes m <= {MAX_COLUMNS} (put the shorter "
            "side last: solve the transposed problem with a and b swapped)"
        )
    return None


def triton_available(cost: Tensor) -> bool:
    """Whether the fused kernel can solve ``cost`` ``(..., n, m)``.

    It can with triton importable, a CUDA tensor (any device under ``TRITON_INTERPRET=1``), a
    float32/float16/bfloat16 dtype and ``m <= MAX_COLUMNS``.
    """
    return unavailable_reason(cost) is None


def select_backend(options: SinkhornOptions, cost: Tensor, a: Tensor, b: Tensor) -> str:
    """The one place that decides whether :func:`otkit.sinkhorn` runs the fused kernel: ``"triton"`` or ``"torch"``.

    The rule reads ``options.backend``, ``options.domain`` and ``options.grad``:

    - ``"torch"``: always the PyTorch loops of :mod:`otkit._iterations`.
    - ``"triton"``: the kernel, or a ``ValueError`` that says why it cannot run: see :func:`unavailable_reason`,
      ``domain="kernel"`` (the kernel iterates in the log domain), ``grad="unroll"`` while autograd needs
      gradients (the kernel is not recorded by autograd: use ``grad="implicit"``), or ``torch.compile`` tracing.
    - ``"auto"``: the kernel when the cost is on CUDA, the kernel can run there (the conditions above) and the
      problem has at most :data:`AUTO_MAX_ELEMENTS` entries; otherwise the PyTorch loops. So a ``grad="unroll"``
      call that needs gradients falls back to PyTorch, and on the CPU (even under ``TRITON_INTERPRET=1``)
      ``auto`` keeps the cache-blocked PyTorch loops of :func:`otkit._iterations.solve`, in the kernel domain
      where it is safe: the fastest path there.

    Shapes: cost ``(*batch, n, m)`` (compute dtype), a ``(*batch, n)``, b ``(*batch, m)``.
    """
    backend = options.backend
    if backend == "torch" or (backend == "auto" and cost.device.type != "cuda"):
        return "torch"
    needs_grad = torch.is_grad_enabled() and (cost.requires_grad or a.requires_grad or b.requires_grad)
    reason = unavailable_reason(cost)
    if reason is None and options.domain == "kernel":
        reason = "the kernel iterates in the log domain; use domain='log' or 'auto'"
    if reason is None and needs_grad and options.grad == "unroll":
        reason = (
            "autograd cannot unroll the kernel's iterations; pass grad='implicit' (the gradient of the fixed "
            "point, constant memory)"
        )
    if reason is None and is_tracing():
        reason = "the kernel does not run under torch.compile; call otkit.sinkhorn outside the compiled region"
    if backend == "triton":
        if reason is not None:
            raise ValueError(f"backend='triton' cannot solve this problem: {reason}. Or use backend='torch'.")
        return "triton"
    n, m = cost.shape[-2:]
    return "triton" if reason is None and n * m <= AUTO_MAX_ELEMENTS else "torch"


def solve_triton(cost: Tensor, a: Tensor, b: Tensor, options: SinkhornOptions, g_init: Tensor | None) -> Iterate:
    """:func:`triton_sinkhorn` on a batch ``(*batch, n, m)``, returned as an :class:`~otkit._iterations.Iterate`.

    ``n_iter`` is the largest per-problem count (one host read); ``errors`` ``(1, *batch)`` holds each problem's
    error at its last check, the only one the kernel keeps.
    """
    from otkit.dense.kernel import triton_sinkhorn  # imports triton: only when a problem runs the kernel

    batch, (n, m) = cost.shape[:-2], cost.shape[-2:]
    f, g, n_iter, err = triton_sinkhorn(
        cost.reshape(-1, n, m),
        a.reshape(-1, n),
        b.reshape(-1, m),
        options,
        None if g_init is None else g_init.reshape(-1, m),
    )
    return Iterate(
        f=f.reshape(*batch, n), g=g.reshape(*batch, m), n_iter=int(n_iter.max()), errors=err.reshape(1, *batch)
    )
