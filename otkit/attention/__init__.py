"""OT attention: Sinkformer attention (dense or streamed) and multi-prompt transport, as functions and layers.

Modules: ``functional`` (:func:`sinkhorn_attention`, :func:`sinkhorn_attention_weights`), ``streamed`` (the
streamed path, never ``L x L``), ``multi_prompt`` (:func:`multi_prompt_transport`) and ``modules``
(:class:`SinkhornAttention`, :class:`MultiPromptSinkhornAttention`).
"""

from otkit.attention.functional import ATTENTION_OPTIONS, sinkhorn_attention, sinkhorn_attention_weights
from otkit.attention.modules import MultiPromptSinkhornAttention, SinkhornAttention
from otkit.attention.multi_prompt import MultiPromptTransport, multi_prompt_transport

__all__ = [
    "ATTENTION_OPTIONS",
    "MultiPromptSinkhornAttention",
    "MultiPromptTransport",
    "SinkhornAttention",
    "multi_prompt_transport",
    "sinkhorn_attention",
    "sinkhorn_attention_weights",
]
