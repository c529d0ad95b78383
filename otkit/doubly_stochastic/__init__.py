"""Doubly-stochastic layers for training loops, with a fixed number of iterations.

:func:`sinkhorn_knopp` (Sinkhorn-Knopp iterations, unrolled or implicit gradients), :func:`gumbel_sinkhorn` (its
Gumbel-noise samples) and :func:`matching` (the hard maximising permutation, for evaluation).

Modules: ``projection`` (the entry point and its checks), ``unrolled`` (the log-domain iterations and their
reverse pass on the CPU and any device), ``backend`` (where a call runs) and ``kernel`` (the fused Triton forward
and backward for CUDA, imported only when a call runs them), ``gumbel`` and ``matching`` (the hard assignment, by
:func:`otkit.couplings.linear_assignment`).
"""

from otkit.doubly_stochastic.gumbel import gumbel_sinkhorn
from otkit.doubly_stochastic.matching import matching
from otkit.doubly_stochastic.projection import sinkhorn_knopp

__all__ = ["gumbel_sinkhorn", "matching", "sinkhorn_knopp"]
