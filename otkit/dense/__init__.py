"""Entropic OT on dense cost matrices ``(..., n, m)``: :func:`sinkhorn` and its :class:`SinkhornResult`.

Modules: ``solve`` (the entry point and the dispatch), ``result``, ``loops`` (log and kernel domains),
``implicit`` (implicit gradients), ``backend`` (where a solve runs) and ``kernel`` (the fused Triton kernel,
imported only when a CUDA problem runs it).
"""

from otkit.dense.result import SinkhornResult
from otkit.dense.solve import PROFILER_RANGE, sinkhorn

__all__ = ["PROFILER_RANGE", "SinkhornResult", "sinkhorn"]
