"""Doubly-stochastic layers for training loops, with a fixed number of iterations.

:func:`sinkhorn_knopp` (Sinkhorn-Knopp iterations, unrolled or implicit gradients).

Modules: ``projection`` (the entry point and its checks), ``unrolled`` (the log-domain iterations and their
reverse pass).
"""

from otkit.doubly_stochastic.projection import sinkhorn_knopp

__all__ = ["sinkhorn_knopp"]
