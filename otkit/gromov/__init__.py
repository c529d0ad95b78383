"""Gromov-Wasserstein and fused GW: :func:`gromov_wasserstein` and its :class:`GromovResult`.

Modules: ``solve`` (the entry point on intra-cost matrices), ``losses`` (the decomposition of the square and KL
losses), ``outer`` (the mirror-descent loop, its stopping rule and envelope terms) and ``result``.
"""

from otkit.gromov.result import GromovResult
from otkit.gromov.solve import gromov_wasserstein

__all__ = ["GromovResult", "gromov_wasserstein"]
