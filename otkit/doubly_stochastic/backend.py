"""Where :func:`otkit.sinkhorn_knopp` runs: the PyTorch iterations or the fused Triton kernels, chosen per call.

:func:`select_backend` is the rule; :func:`run_triton` runs the kernels of
:mod:`otkit.doubly_stochastic.kernel`, which is imported (and triton with it) only then.
"""

from __future__ import annotations

import torch
from torch import Tensor

from otkit import _triton
from otkit._checks import is_tracing
from otkit.options import Backend, GradMode

__all__ = ["MAX_SIDE", "run_triton", "select_backend", "unavailable_reason"]

MAX_SIDE = 16  # largest n and m of the kernels: a program holds whole matrices in registers
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def unavailable_reason(log_alpha: Tensor) -> str | None:
    """Why the fused kernels cannot take ``log_alpha (..., n, m)``, or ``None`` when they can."""
    reason = _triton.unavailable_reason(log_alpha)
    if reason is not None:
        return reason
    if log_alpha.dtype not in _DTYPES:
        return f"the kernels compute in float32 and take float32/float16/bfloat16 inputs, got {log_alpha.dtype}"
    n, m = log_alpha.shape[-2:]
    if max(n, m) > MAX_SIDE:
        return f"the kernels take matrices up to {MAX_SIDE} x {MAX_SIDE}, got {n} x {m}"
    return None


def select_backend(backend: Backend, log_alpha: Tensor, grad: GradMode) -> str:
    """``"triton"`` or ``"torch"`` for one call of :func:`otkit.sinkhorn_knopp`.

    - ``"torch"``: always the PyTorch iterations.
    - ``"triton"``: the fused kernels, or a ``ValueError`` that says why they cannot run: see
      :func:`unavailable_reason`, ``grad="implicit"`` (which runs the PyTorch iterations), or ``torch.compile``
      tracing (the compiled graph takes the PyTorch iterations, which it fuses itself).
    - ``"auto"``: the kernels for CUDA tensors where they can run, the PyTorch iterations otherwise (always on the
      CPU, even under ``TRITON_INTERPRET=1``).
    """
    if backend not in ("auto", "torch", "triton"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'triton', got {backend!r}.")
    if backend == "torch" or (backend == "auto" and log_alpha.device.type != "cuda"):
        return "torch"
    reason = unavailable_reason(log_alpha)
    if reason is None and grad == "implicit":
        reason = "grad='implicit' runs the PyTorch iterations; use grad='unroll'"
    if reason is None and is_tracing():
        reason = "the kernels do not run under torch.compile, whose graph takes the PyTorch iterations"
    if backend == "triton":
        if reason is not None:
            raise ValueError(f"backend='triton' cannot run this call: {reason}. Or use backend='torch'.")
        return "triton"
    return "torch" if reason is not None else "triton"


def run_triton(log_alpha: Tensor, n_iter: int, tau: float) -> Tensor:
    """:class:`otkit.doubly_stochastic.kernel.TritonSinkhornKnopp` on ``log_alpha (B, n, m)``."""
    from otkit.doubly_stochastic.kernel import TritonSinkhornKnopp  # imports triton: only when a call runs it

    return TritonSinkhornKnopp.apply(log_alpha, n_iter, tau)
