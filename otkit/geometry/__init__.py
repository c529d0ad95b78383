"""Point clouds and their costs, stored as a matrix or streamed tile by tile: the engine of the point solvers.

Modules: ``costs`` (cost names, :class:`Geometry`, :func:`pairwise_cost`, :func:`unit_vectors`), ``storage``
(stored or streamed), ``tiles`` (sums of ``exp`` over tiles, the soft-min), ``loops`` (log-domain Sinkhorn loops on a
geometry, eps-annealing), ``backend`` (where tiles are computed) and ``kernels`` (the fused Triton kernels, imported
only when a CUDA geometry runs them).
"""

from otkit.geometry.costs import COSTS, Cost, CostName, Geometry, check_points, pairwise_cost, unit_vectors
from otkit.geometry.storage import DENSE_MAX_BYTES, DENSE_MIN_DIM, Storage, choose_storage

__all__ = [
    "COSTS",
    "DENSE_MAX_BYTES",
    "DENSE_MIN_DIM",
    "Cost",
    "CostName",
    "Geometry",
    "Storage",
    "check_points",
    "choose_storage",
    "pairwise_cost",
    "unit_vectors",
]
