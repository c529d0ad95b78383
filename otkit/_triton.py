"""Triton, imported only when a kernel is asked for.

``import otkit`` never imports triton: :func:`installed` asks the import system whether it could, and the modules
holding the kernels (``otkit.dense.kernel``, ``otkit.geometry.kernels``) are imported the first time a CUDA tensor
(or an explicit ``backend="triton"``) needs one. With ``TRITON_INTERPRET=1`` set before triton is first imported,
the kernels run in triton's CPU interpreter on CPU tensors (slow; for tests).
"""

from __future__ import annotations

import functools
import importlib.util

from torch import Tensor

__all__ = ["installed", "interpreting", "unavailable_reason"]


@functools.cache
def installed() -> bool:
    """Whether triton can be imported (without importing it)."""
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """Whether triton runs kernels in its CPU interpreter (imports triton; only call it when a kernel is wanted)."""
    import triton

    return bool(triton.knobs.runtime.interpret)


def unavailable_reason(tensor: Tensor) -> str | None:
    """Why no triton kernel can run on ``tensor``'s device, or ``None`` when one can."""
    if not installed():
        return "triton is not installed (pip install 'otkit[triton]')"
    if tensor.device.type != "cuda" and not interpreting():
        return (
            f"the tensors are on {tensor.device.type}, and a triton kernel needs a CUDA tensor (on the CPU, "
            "TRITON_INTERPRET=1 set before triton is first imported runs it in triton's interpreter, for tests)"
        )
    return None
