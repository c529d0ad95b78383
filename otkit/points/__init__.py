"""Entropic OT between point clouds: :func:`sinkhorn_points`, :func:`sinkhorn_divergence` and their results.

Modules: ``solve`` (:func:`sinkhorn_points`), ``result`` (:class:`PointCloudResult`, :class:`DivergenceResult`),
``envelope`` (the value and its gradient at the optimum, the plan applied to matrices) and ``divergence``. The
costs, tiles and loops they run on are those of :mod:`otkit.geometry`.
"""

from otkit.points.divergence import sinkhorn_divergence
from otkit.points.result import DivergenceResult, PointCloudResult
from otkit.points.solve import sinkhorn_points

__all__ = ["DivergenceResult", "PointCloudResult", "sinkhorn_divergence", "sinkhorn_points"]
