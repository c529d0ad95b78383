"""Gromov-Wasserstein and fused GW: :func:`gromov_wasserstein`, :func:`gromov_wasserstein_points`, their result.

Modules: ``solve`` (the entry point on intra-cost matrices), ``points`` (:func:`gromov_wasserstein_points`, point
clouds with squared Euclidean intra-costs, streamed), ``losses`` (the decomposition of the square and KL
losses), ``outer`` (the mirror-descent loop, its stopping rule and envelope terms) and ``result``.
"""

from otkit.gromov.points import gromov_wasserstein_points
from otkit.gromov.result import GromovResult
from otkit.gromov.solve import gromov_wasserstein

__all__ = ["GromovResult", "gromov_wasserstein", "gromov_wasserstein_points"]
