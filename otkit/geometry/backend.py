"""Where the tiles of a streamed geometry are computed: the PyTorch tiles or the fused Triton kernels.

:func:`stream_backend` is the rule, applied once when a geometry is built; the tile functions then only read
``geometry.backend``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from otkit import _triton

if TYPE_CHECKING:  # for the annotation only: costs imports this module
    from otkit.geometry.costs import Geometry

__all__ = ["stream_backend"]


def stream_backend(requested: str, geom: Geometry) -> str:
    """``"triton"`` or ``"torch"`` for the :class:`~otkit.geometry.Geometry` ``geom``, given the setting ``requested``.

    ``"torch"``: the PyTorch tiles. ``"auto"``: the fused kernels for a streamed float32 geometry on CUDA with
    triton installed, else the PyTorch tiles (triton is never imported for CPU tensors). ``"triton"``: the kernels,
    or a ``ValueError`` that says why they cannot run (CPU tensors need ``TRITON_INTERPRET=1``; a stored cost
    matrix and float64 use the PyTorch tiles).
    """
    if requested not in ("auto", "torch", "triton"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'triton', got {requested!r}.")
    if requested == "torch" or (requested == "auto" and geom.device.type != "cuda"):
        return "torch"
    if geom.matrix is not None or geom.x is None:
        reason = "the cost is stored densely (storage='dense' or a callable cost); stream it with storage='streaming'"
    elif geom.dtype != torch.float32:
        reason = f"the streaming kernels compute in float32, got {geom.dtype}"
    else:
        reason = _triton.unavailable_reason(geom.x)
    if requested == "triton" and reason is not None:
        raise ValueError(f"backend='triton' cannot stream this problem: {reason}. Or use backend='torch'.")
    return "triton" if reason is None else "torch"
