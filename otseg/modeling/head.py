"""OTSeg's decode head: relationship descriptor, multi-prompt Sinkhorn (MPS) path and MPSA decoder."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from otkit import MultiPromptTransport, SinkhornOptions, multi_prompt_transport
from otseg.modeling.decoder import MPSADecoder, combine_layer_maps
from otseg.modeling.descriptor import RelationshipDescriptor

__all__ = ["HeadOutput", "OTSegHead"]


class HeadOutput(NamedTuple):
    """Logit maps on the patch grid.

    Attributes:
        decoder: ``(B, K, h, w)`` decoder output ``A_L * prod sigmoid(A_l) ** (1 / (L - 1))``.
        score: ``(B, K, h, w)`` MPS score map ``sum_n M N T sim``.
        layers: Every decoder layer's logits, each ``(B, K, h, w)``.
    """

    decoder: Tensor
    score: Tensor
    layers: list[Tensor]


class OTSegHead(nn.Module):
    """Prompt queries transported onto the pixels twice: directly (MPS) and through the MPSA decoder.

    The relationship descriptor builds the queries; the MPS path gives the score map, the decoder gives each
    layer's mask logits, combined into its output. Parts are built by the caller (:func:`otseg.build.build_otseg`).

    Args:
        descriptor: The relationship descriptor.
        decoder: The MPSA decoder.
        sinkhorn: Sinkhorn settings of the MPS path (OTSeg: those of the decoder, eps 0.05, at most 100
            iterations, tol 1e-6).
    """

    def __init__(self, descriptor: RelationshipDescriptor, decoder: MPSADecoder, sinkhorn: SinkhornOptions) -> None:
        super().__init__()
        self.descriptor = descriptor
        self.decoder = decoder
        self.sinkhorn = sinkhorn

    def forward(self, dense: Tensor, global_embedding: Tensor, text: Tensor) -> HeadOutput:
        """Segment against the given classes (inputs as in :meth:`transport`).

        Returns:
            :class:`HeadOutput` with maps ``(B, K, h, w)``.
        """
        batch, _, h, w = dense.shape
        pixels = dense.flatten(2).transpose(1, 2)  # (B, M, C)
        queries = self.descriptor(global_embedding, text)  # (B, K, N, C)
        score = multi_prompt_transport(pixels, queries, options=self.sinkhorn)
        maps = self.decoder(queries, pixels)
        grid = (batch, -1, h, w)
        layers = [m.reshape(grid) for m in maps]
        return HeadOutput(decoder=combine_layer_maps(layers), score=score.score.reshape(grid), layers=layers)

    def transport(self, dense: Tensor, global_embedding: Tensor, text: Tensor) -> MultiPromptTransport:
        """The MPS path alone: how each class's prompts share the pixels (the plan behind :attr:`HeadOutput.score`).

        Args:
            dense: ``(B, C, h, w)`` pixel embeddings (L2-normalised).
            global_embedding: ``(B, C)`` image embedding (L2-normalised).
            text: ``(K, N, C)`` class-prompt embeddings (L2-normalised).

        Returns:
            :class:`~otkit.MultiPromptTransport`: ``plan (B, K, M, N)`` with ``M = h * w`` pixels in row-major grid
            order, ``score (B, K, M)``, ``similarity (B, K, M, N)``.
        """
        pixels = dense.flatten(2).transpose(1, 2)  # (B, M, C)
        return multi_prompt_transport(pixels, self.descriptor(global_embedding, text), options=self.sinkhorn)
