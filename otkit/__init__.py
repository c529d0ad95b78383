"""otkit: fast, batched, differentiable entropic optimal transport for PyTorch.

Every entry point takes its settings the same way (``eps``, then ``options=`` or any field of
:class:`SinkhornOptions` as a keyword; see :mod:`otkit.options`) and returns a frozen, documented result.

- Dense costs ``(..., n, m)``: :func:`sinkhorn` -> :class:`SinkhornResult`.
- Point clouds ``(..., n, d)``, the cost stored or streamed: :func:`sinkhorn_points` -> :class:`PointCloudResult`,
  :func:`sinkhorn_divergence` -> :class:`DivergenceResult`, :func:`pairwise_cost`.
- Gromov-Wasserstein and fused GW between spaces: :func:`gromov_wasserstein` (intra-cost matrices),
  :func:`gromov_wasserstein_points` (point clouds, streamed) -> :class:`GromovResult`.
- OT attention: :func:`sinkhorn_attention`, :func:`sinkhorn_attention_weights`, :class:`SinkhornAttention`,
  :func:`multi_prompt_transport` -> :class:`MultiPromptTransport`, :class:`MultiPromptSinkhornAttention`.
- Doubly-stochastic layers (fixed iteration counts, for training loops): :func:`sinkhorn_knopp`,
  :func:`gumbel_sinkhorn`, :func:`matching`.
- Soft sorting (entropic OT to a sorted target): :func:`soft_sort`, :func:`soft_rank`, :func:`soft_quantile`.
- Minibatch couplings for flow matching: :mod:`otkit.couplings` (``plan``, ``OTPlanSampler``, ``linear_assignment``).
"""

from torch import Tensor

from otkit import _deprecation, couplings
from otkit._convergence import ConvergenceWarning
from otkit.attention import (
    ATTENTION_OPTIONS,
    MultiPromptSinkhornAttention,
    MultiPromptTransport,
    SinkhornAttention,
    multi_prompt_transport,
    sinkhorn_attention,
    sinkhorn_attention_weights,
)
from otkit.barycenter import (
    BarycenterResult,
    FreeSupportBarycenterResult,
    convolutional_barycenter,
    sinkhorn_barycenter,
)
from otkit.dense import SinkhornResult, sinkhorn
from otkit.dense.solve import solve_dense
from otkit.doubly_stochastic import gumbel_sinkhorn, matching, sinkhorn_knopp
from otkit.geometry import pairwise_cost, unit_vectors
from otkit.gromov import GromovResult, gromov_wasserstein, gromov_wasserstein_points
from otkit.options import SinkhornOptions
from otkit.points import DivergenceResult, PointCloudResult, sinkhorn_divergence, sinkhorn_points
from otkit.sorting import soft_quantile, soft_rank, soft_sort

__version__ = "0.2.0"

__all__ = [
    "ATTENTION_OPTIONS",
    "BarycenterResult",
    "ConvergenceWarning",
    "DivergenceResult",
    "FreeSupportBarycenterResult",
    "GromovResult",
    "MultiPromptSinkhornAttention",
    "MultiPromptTransport",
    "PointCloudResult",
    "SinkhornAttention",
    "SinkhornOptions",
    "SinkhornResult",
    "convolutional_barycenter",
    "couplings",
    "gromov_wasserstein",
    "gromov_wasserstein_points",
    "gumbel_sinkhorn",
    "matching",
    "multi_prompt_transport",
    "pairwise_cost",
    "sinkhorn",
    "sinkhorn_attention",
    "sinkhorn_attention_weights",
    "sinkhorn_barycenter",
    "sinkhorn_divergence",
    "sinkhorn_knopp",
    "sinkhorn_points",
    "soft_quantile",
    "soft_rank",
    "soft_sort",
    "unit_vectors",
]


def _solve(
    self: SinkhornOptions,
    cost: Tensor,
    a: Tensor | None = None,
    b: Tensor | None = None,
    init: tuple[Tensor, Tensor] | None = None,
) -> SinkhornResult:
    """Deprecated (otkit 0.1): ``options.solve(cost, a, b, init)`` is ``otkit.sinkhorn(cost, a, b, init=init,
    options=options)``."""
    _deprecation.warn_once(
        "SinkhornOptions.solve",
        "SinkhornOptions.solve is deprecated since otkit 0.2: call otkit.sinkhorn(cost, a, b, options=options).",
    )
    return solve_dense(cost, a, b, self, init)


SinkhornOptions.solve = _solve  # the otkit 0.1 spelling keeps working (defined here: options.py is data only)
_deprecation.install()
