"""otkit: fast, batched, differentiable entropic optimal transport for PyTorch."""

from otkit.attention import ATTENTION_OPTIONS, MultiPromptSinkhornAttention, SinkhornAttention, sinkhorn_attention
from otkit.divergence import sinkhorn_divergence
from otkit.geometry import pairwise_cost
from otkit.multi_prompt import MultiPromptTransport, multi_prompt_transport
from otkit.options import SinkhornOptions
from otkit.point_result import PointCloudResult
from otkit.points import sinkhorn_points
from otkit.result import SinkhornResult
from otkit.sinkhorn import ConvergenceWarning, sinkhorn

__all__ = [
    "ATTENTION_OPTIONS",
    "ConvergenceWarning",
    "MultiPromptSinkhornAttention",
    "MultiPromptTransport",
    "PointCloudResult",
    "SinkhornAttention",
    "SinkhornOptions",
    "SinkhornResult",
    "multi_prompt_transport",
    "pairwise_cost",
    "sinkhorn",
    "sinkhorn_attention",
    "sinkhorn_divergence",
    "sinkhorn_points",
]

__version__ = "0.1.0"
