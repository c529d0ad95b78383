"""OTSeg's decode head: relationship descriptor, multi-prompt Sinkhorn (MPS) path and MPSA decoder."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from otkit import multi_prompt_transport
from otkit.sinkhorn import GradMode
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
    layer's mask logits, combined into its output.

    Args:
        dim: Embedding width C.
        num_layers: Decoder layers (3).
        ffn_dim: Decoder feed-forward width (2048).
        dropout: Decoder dropout (0.1).
        eps: Sinkhorn regularisation of both paths (0.05).
        max_iter: Sinkhorn iteration cap (100).
        tol: Sinkhorn tolerance (1e-6).
        grad: Sinkhorn gradient mode.
    """

    def __init__(
        self,
        dim: int = 512,
        num_layers: int = 3,
        ffn_dim: int = 2048,
        dropout: float = 0.1,
        *,
        eps: float = 0.05,
        max_iter: int = 100,
        tol: float | None = 1e-6,
        grad: GradMode = "unroll",
    ) -> None:
        super().__init__()
        self.eps, self.max_iter, self.tol, self.grad = eps, max_iter, tol, grad
        self.descriptor = RelationshipDescriptor(dim)
        self.decoder = MPSADecoder(
            num_layers, dim=dim, ffn_dim=ffn_dim, dropout=dropout, eps=eps, max_iter=max_iter, tol=tol, grad=grad
        )

    def forward(self, dense: Tensor, global_embedding: Tensor, text: Tensor) -> HeadOutput:
        """Segment against the given classes.

        Args:
            dense: ``(B, C, h, w)`` pixel embeddings (L2-normalised).
            global_embedding: ``(B, C)`` image embedding (L2-normalised).
            text: ``(K, N, C)`` class-prompt embeddings (L2-normalised).

        Returns:
            :class:`HeadOutput` with maps ``(B, K, h, w)``.
        """
        batch, _, h, w = dense.shape
        pixels = dense.flatten(2).transpose(1, 2)  # (B, M, C)
        queries = self.descriptor(global_embedding, text)  # (B, K, N, C)
        score = multi_prompt_transport(pixels, queries, self.eps, max_iter=self.max_iter, tol=self.tol, grad=self.grad)
        maps = self.decoder(queries, pixels)
        grid = (batch, -1, h, w)
        layers = [m.reshape(grid) for m in maps]
        return HeadOutput(decoder=combine_layer_maps(layers), score=score.score.reshape(grid), layers=layers)
