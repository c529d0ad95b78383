"""The MPSA decoder: post-norm transformer layers whose cross-attention is a multi-prompt Sinkhorn plan."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from otkit import MultiPromptSinkhornAttention, SinkhornOptions

__all__ = ["MPSADecoder", "MPSADecoderLayer", "combine_layer_maps"]


class MPSADecoderLayer(nn.Module):
    """One decoder layer: MPSA + residual + LayerNorm, then FFN + residual + LayerNorm (post-norm, ReLU).

    No self-attention among the queries. Submodule names follow OTSeg's checkpoints: ``multihead_attn``
    (``q``, ``k``, ``v``, ``proj``), ``linear1``, ``linear2``, ``norm2``, ``norm3``.

    Args:
        dim: Width C.
        ffn_dim: Hidden width of the feed-forward block.
        dropout: Dropout on the plan, after attention, inside and after the FFN.
        sinkhorn: Sinkhorn settings of the attention plan.
    """

    def __init__(
        self,
        dim: int = 512,
        ffn_dim: int = 2048,
        dropout: float = 0.1,
        sinkhorn: SinkhornOptions = SinkhornOptions(),
    ) -> None:
        super().__init__()
        self.multihead_attn = MultiPromptSinkhornAttention(dim, options=sinkhorn, attn_drop=dropout)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, queries: Tensor, pixels: Tensor, need_output: bool = True) -> tuple[Tensor | None, Tensor]:
        """Update ``queries (B, K, N, C)`` from ``pixels (B, M, C)``; also return mask logits ``(B, K, M)``.

        ``need_output=False`` returns only the logits (``None`` for the queries), skipping the value path and the
        feed-forward block.
        """
        attended, logits = self.multihead_attn(queries, pixels, need_output)
        if not need_output:
            return None, logits
        x = self.norm2(queries + self.dropout2(attended))
        x = self.norm3(x + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(x))))))
        return x, logits


def combine_layer_maps(maps: list[Tensor]) -> Tensor:
    """Decoder output ``A_L * prod_{l<L} sigmoid(A_l) ** (1 / (L - 1))`` from per-layer logits ``(B, K, ...)``."""
    out = maps[-1]
    if len(maps) > 1:
        gate = torch.stack([torch.sigmoid(m) for m in maps[:-1]]).prod(0) ** (1.0 / (len(maps) - 1))
        out = out * gate
    return out


class MPSADecoder(nn.Module):
    """A stack of :class:`MPSADecoderLayer` (3 in OTSeg); keeps every layer's mask logits.

    Args:
        layers: The layers, built by the caller (see :class:`~otseg.modeling.head.OTSegHead`).
    """

    def __init__(self, layers: Sequence[MPSADecoderLayer]) -> None:
        super().__init__()
        if not layers:
            raise ValueError("the decoder needs at least one layer.")
        self.layers = nn.ModuleList(layers)

    def forward(self, queries: Tensor, pixels: Tensor) -> list[Tensor]:
        """Run all layers; returns every layer's mask logits, each ``(B, K, M)``.

        Only the logits leave the decoder, so the last layer computes nothing else: its value and output
        projections and feed-forward block (kept for checkpoint compatibility) are unused, as in OTSeg's code.
        """
        maps = []
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            queries, logits = layer(queries, pixels, need_output=i < last)
            maps.append(logits)
        return maps
