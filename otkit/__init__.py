"""otkit: fast, batched, differentiable entropic optimal transport for PyTorch."""

from otkit.attention import ATTENTION_OPTIONS, MultiPromptSinkhornAttention, SinkhornAttention, sinkhorn_attention
from otkit.multi_prompt import MultiPromptTransport, multi_prompt_transport
from otkit.options import SinkhornOptions
from otkit.result import SinkhornResult
from otkit.sinkhorn import ConvergenceWarning, sinkhorn

__all__ = [
    "ATTENTION_OPTIONS",
    "ConvergenceWarning",
    "MultiPromptSinkhornAttention",
    "MultiPromptTransport",
    "SinkhornAttention",
    "SinkhornOptions",
    "SinkhornResult",
    "multi_prompt_transport",
    "sinkhorn",
    "sinkhorn_attention",
]

__version__ = "0.1.0"
