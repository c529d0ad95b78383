"""otkit: fast, batched, differentiable entropic optimal transport for PyTorch."""

from otkit.attention import MultiPromptSinkhornAttention, SinkhornAttention, sinkhorn_attention
from otkit.multi_prompt import MultiPromptTransport, multi_prompt_transport
from otkit.result import SinkhornResult
from otkit.sinkhorn import ConvergenceWarning, sinkhorn

__all__ = [
    "ConvergenceWarning",
    "MultiPromptSinkhornAttention",
    "MultiPromptTransport",
    "SinkhornAttention",
    "SinkhornResult",
    "multi_prompt_transport",
    "sinkhorn",
    "sinkhorn_attention",
]

__version__ = "0.1.0"
