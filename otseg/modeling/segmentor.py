"""The OTSeg segmentor: composes the prompted image encoder, the text side and the decode head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from otseg.config import ModelConfig
from otseg.modeling.head import OTSegHead
from otseg.modeling.image_encoder import PromptedVisionTransformer
from otseg.modeling.text_encoder import LearnableContext, TextEncoder

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "OTSeg", "PromptTransport"]

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


class PromptTransport(NamedTuple):
    """The MPS transport of images against classes (:meth:`OTSeg.transport`).

    Attributes:
        plan: ``(B, K, M, N)`` plan of each (image, class) problem, ``M = h * w`` pixels in row-major grid order.
        score: ``(B, K, h, w)`` MPS score map ``sum_n M N T sim`` (logits, before upsampling).
        similarity: ``(B, K, M, N)`` cosine similarity between pixels and prompts.
        grid: The patch grid ``(h, w)``.
    """

    plan: Tensor
    score: Tensor
    similarity: Tensor
    grid: tuple[int, int]


class OTSeg(nn.Module):
    """OTSeg: zero-shot semantic segmentation by multi-prompt Sinkhorn attention.

    Parts are built elsewhere (:func:`otseg.build.build_otseg`) and passed in. The segmentor normalises images, runs the
    image encoder, and the head against class embeddings ``(K, N, C)``; classes are inputs, so one model segments
    any class list. Inference (OTSeg+) mixes the decoder and MPS logits, applies sigmoid, and lowers the
    probabilities of classes seen in training by ``seen_bias`` (calibration against seen bias).

    Args:
        image_encoder: The prompted CLIP ViT.
        head: The decode head.
        text_encoder: The frozen CLIP text encoder (``None`` when class embeddings are always given).
        learnable_context: CoOp context vectors replacing the templates (``None``: templates).
        pixel_mean: Per-channel mean of 0-255 RGB images (ImageNet's, as the paper's pipelines).
        pixel_std: Per-channel standard deviation.
        ensemble_weight: Weight of the decoder logits in the OTSeg+ ensemble (0.5); the score map gets the rest.
        seen_bias: Probability subtracted from seen classes at inference in the zero-shot setting (0.1).
        config: The :class:`~otseg.config.ModelConfig` the parts were built from (``None`` for hand-assembled
            models); model files store it, so a model built without one cannot be saved.

    Attributes:
        config: As given.
    """

    def __init__(
        self,
        image_encoder: PromptedVisionTransformer,
        head: OTSegHead,
        text_encoder: TextEncoder | None = None,
        *,
        learnable_context: LearnableContext | None = None,
        pixel_mean: Sequence[float] = IMAGENET_MEAN,
        pixel_std: Sequence[float] = IMAGENET_STD,
        ensemble_weight: float = 0.5,
        seen_bias: float = 0.1,
        config: ModelConfig | None = None,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.head = head
        self.text_encoder = text_encoder
        self.learnable_context = learnable_context
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), persistent=False)
        self.ensemble_weight = ensemble_weight
        self.seen_bias = seen_bias
        self.config = config

    def class_embeddings(self, class_names: Sequence[str]) -> Tensor:
        """Embeddings ``(K, N, C)`` of the class names: learned context if present, else the cached templates."""
        if self.learnable_context is not None:
            return self.learnable_context(class_names)
        if self.text_encoder is None:
            raise RuntimeError("this OTSeg has no text encoder; pass class embeddings (K, N, C) to forward instead.")
        return self.text_encoder.encode_classes(class_names).to(self.pixel_mean.device)

    def normalize(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` RGB in 0-255 (uint8 or float) -> normalised float."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W) RGB, got shape {tuple(images.shape)}.")
        return (images.to(self.pixel_mean.dtype) - self.pixel_mean) / self.pixel_std

    def _encode(self, images: Tensor, text: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Check the class embeddings and encode the images: ``(dense, global_embedding, text)`` for the head."""
        if text.dim() != 3:
            raise ValueError(f"text must be class embeddings (K, N, C), got shape {tuple(text.shape)}.")
        if text.shape[-1] != self.image_encoder.output_dim:
            raise ValueError(
                f"class embeddings have width {text.shape[-1]}, the image encoder {self.image_encoder.output_dim}; "
                "compute them with this model's text encoder (class_embeddings) or the same CLIP."
            )
        dense, global_embedding = self.image_encoder(self.normalize(images))
        return dense, global_embedding, text.to(dense.device)

    def forward(self, images: Tensor, text: Tensor) -> dict[str, Tensor]:
        """Logit maps at the input resolution.

        Args:
            images: ``(B, 3, H, W)`` RGB in 0-255.
            text: ``(K, N, C)`` class-prompt embeddings (from :meth:`class_embeddings`).

        Returns:
            ``{"decoder": (B, K, H, W), "score": (B, K, H, W)}`` logits, bilinearly upsampled from the patch grid.
        """
        out = self.head(*self._encode(images, text))
        size = images.shape[-2:]
        return {
            "decoder": F.interpolate(out.decoder, size=size, mode="bilinear", align_corners=False),
            "score": F.interpolate(out.score, size=size, mode="bilinear", align_corners=False),
        }

    def transport(self, images: Tensor, text: Tensor) -> PromptTransport:
        """The multi-prompt transport of the MPS path: which pixels each prompt of each class takes.

        Runs the image encoder and the MPS path only (no decoder); :meth:`forward` is unchanged. The score map is
        the one behind ``forward(images, text)["score"]``, on the patch grid before upsampling.

        Args:
            images: ``(B, 3, H, W)`` RGB in 0-255.
            text: ``(K, N, C)`` class-prompt embeddings (from :meth:`class_embeddings`).

        Returns:
            :class:`PromptTransport` with ``plan (B, K, M, N)`` (``M = h * w``, rows in row-major grid order; each
            (image, class) plan has rows summing to ``1/M`` and columns to ``1/N``), ``score (B, K, h, w)``,
            ``similarity (B, K, M, N)`` and ``grid = (h, w)``.
        """
        dense, global_embedding, text = self._encode(images, text)
        mps = self.head.transport(dense, global_embedding, text)
        grid = (dense.shape[-2], dense.shape[-1])
        score = mps.score.reshape(*mps.score.shape[:2], *grid)
        return PromptTransport(plan=mps.plan, score=score, similarity=mps.similarity, grid=grid)

    def ensemble(self, outputs: dict[str, Tensor]) -> Tensor:
        """OTSeg+ logits ``w * decoder + (1 - w) * score``, ``(B, K, H, W)``."""
        w = self.ensemble_weight
        return w * outputs["decoder"] + (1 - w) * outputs["score"]

    def probabilities(self, outputs: dict[str, Tensor], seen: Tensor | None = None) -> Tensor:
        """Per-class sigmoid probabilities of the ensemble, seen classes lowered by ``seen_bias``.

        Args:
            outputs: Output of :meth:`forward`.
            seen: ``(K,)`` bool, classes seen in training (``None`` or all seen: no calibration, as in the
                fully supervised setting where it cannot change the argmax).

        Returns:
            ``(B, K, H, W)``.
        """
        prob = torch.sigmoid(self.ensemble(outputs))
        if seen is not None and self.seen_bias and not bool(seen.all()):
            prob = prob - self.seen_bias * seen.to(prob.dtype).view(1, -1, 1, 1)
        return prob

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters with ``requires_grad`` (prompts and head, unless the backbone is fine-tuned)."""
        return [p for p in self.parameters() if p.requires_grad]
