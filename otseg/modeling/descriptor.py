"""The relationship descriptor: image-conditioned prompt queries (from ZegCLIP)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["RelationshipDescriptor"]


class RelationshipDescriptor(nn.Module):
    """``q = Linear(2C -> C)([g * t, t])`` for every image ``b``, class ``k`` and prompt ``n``.

    ``g`` is the image's global embedding and ``t`` a prompt's text embedding; the product ties the query to the
    image, the raw text keeps the class identity. The linear layer is named ``q_proj`` as in OTSeg's checkpoints.

    Args:
        dim: Embedding width C.
    """

    def __init__(self, dim: int = 512) -> None:
        super().__init__()
        self.q_proj = nn.Linear(2 * dim, dim)

    def forward(self, global_embedding: Tensor, text: Tensor) -> Tensor:
        """Build the queries.

        Args:
            global_embedding: ``(B, C)``.
            text: ``(K, N, C)`` class-prompt embeddings.

        Returns:
            ``(B, K, N, C)``.
        """
        text = text.to(global_embedding.dtype)
        product = global_embedding[:, None, None, :] * text  # (B, K, N, C)
        return self.q_proj(torch.cat([product, text.expand_as(product)], dim=-1))
