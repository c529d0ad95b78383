"""The OTSeg segmentor: composes the prompted image encoder, the text side and the decode head."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from otseg.config import ModelConfig
from otseg.modeling.head import HeadOutput, OTSegHead
from otseg.modeling.image_encoder import PromptedVisionTransformer
from otseg.modeling.text_encoder import LearnableContext, TextEncoder

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "OTSeg", "PromptTransport", "upsample"]

ImageEncoderFn = Callable[[Tensor], tuple[Tensor, Tensor]]
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


def _interpolation_matrix(n_in: int, n_out: int, device: torch.device) -> Tensor:
    """``(n_out, n_in)`` float64 weights of 1-D linear interpolation, ``align_corners=False`` (``F.interpolate``'s)."""
    src = ((torch.arange(n_out, device=device, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp_min(0)
    low = src.floor().long().clamp_max(n_in - 1)
    frac = src - low
    rows = torch.arange(n_out, device=device)
    weights = torch.zeros(n_out, n_in, dtype=torch.float64, device=device)
    weights.index_put_((rows, low), 1 - frac, accumulate=True)
    weights.index_put_((rows, (low + 1).clamp_max(n_in - 1)), frac, accumulate=True)
    return weights


def upsample(maps: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """Bilinear resize of patch-grid maps ``(B, K, h, w)`` to ``size`` (``align_corners=False``, the paper's).

    Equals ``F.interpolate(maps, size, mode="bilinear", align_corners=False)`` to float rounding, computed as two
    small matrix products ``R_h @ maps @ R_w^T`` (``h + h*w/H`` multiply-adds per output): for a 32x32 grid to
    512x512 about twice as fast as ``F.interpolate`` on the CPU. In float32 at least, outside autocast.
    """
    height, width = size
    if tuple(maps.shape[-2:]) == (height, width):
        return maps
    dtype = torch.promote_types(maps.dtype, torch.float32)
    with torch.autocast(maps.device.type, enabled=False):
        rows = _interpolation_matrix(maps.shape[-2], height, maps.device).to(dtype)
        cols = _interpolation_matrix(maps.shape[-1], width, maps.device).to(dtype)
        return rows @ (maps.to(dtype) @ cols.T)  # (H, h) @ (B, K, h, W) -> (B, K, H, W)


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

    Example:
        >>> import torch, otseg
        >>> model = otseg.build_otseg("otseg-tiny", allow_random_clip=True)
        >>> text = model.class_embeddings(["cat", "dog", "sky"])  # (K, N, C)
        >>> out = model(torch.randint(0, 256, (1, 3, 64, 64)).float(), text)
        >>> tuple(text.shape), {name: tuple(logits.shape) for name, logits in out.items()}
        ((3, 3, 32), {'decoder': (1, 3, 64, 64), 'score': (1, 3, 64, 64)})
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

    def _encode(
        self, images: Tensor, text: Tensor, image_encoder: ImageEncoderFn | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Check the class embeddings and encode the images: ``(dense, global_embedding, text)`` for the head."""
        if text.dim() != 3:
            raise ValueError(f"text must be class embeddings (K, N, C), got shape {tuple(text.shape)}.")
        if text.shape[-1] != self.image_encoder.output_dim:
            raise ValueError(
                f"class embeddings have width {text.shape[-1]}, the image encoder {self.image_encoder.output_dim}; "
                "compute them with this model's text encoder (class_embeddings) or the same CLIP."
            )
        encoder = self.image_encoder if image_encoder is None else image_encoder
        dense, global_embedding = encoder(self.normalize(images))
        return dense, global_embedding, text.to(dense.device)

    def _head_maps(self, images: Tensor, text: Tensor, image_encoder: ImageEncoderFn | None = None) -> HeadOutput:
        """Check the inputs, encode the images and run the head: logit maps on the patch grid ``(B, K, h, w)``."""
        return self.head(*self._encode(images, text, image_encoder))

    def forward(self, images: Tensor, text: Tensor) -> dict[str, Tensor]:
        """Logit maps at the input resolution.

        Args:
            images: ``(B, 3, H, W)`` RGB in 0-255.
            text: ``(K, N, C)`` class-prompt embeddings (from :meth:`class_embeddings`).

        Returns:
            ``{"decoder": (B, K, H, W), "score": (B, K, H, W)}`` logits, bilinearly upsampled from the patch grid.
        """
        out = self._head_maps(images, text)
        size = images.shape[-2:]
        return {"decoder": upsample(out.decoder, size), "score": upsample(out.score, size)}

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

    @torch.no_grad()
    def infer(
        self, images: Tensor, text: Tensor, seen: Tensor | None = None, *, image_encoder: ImageEncoderFn | None = None
    ) -> Tensor:
        """OTSeg+ probabilities at the input resolution: ``probabilities(forward(images, text), seen)``, faster.

        Bilinear upsampling is linear, so the ensemble is mixed on the patch grid and upsampled once, and the
        sigmoid and calibration run in place; the result equals the two-step path up to float rounding (~1e-7).

        Args:
            images: ``(B, 3, H, W)`` RGB in 0-255.
            text: ``(K, N, C)`` class-prompt embeddings.
            seen: ``(K,)`` bool, classes seen in training (see :meth:`probabilities`).
            image_encoder: Stands in for ``self.image_encoder``: the same module compiled (``torch.compile``).

        Returns:
            ``(B, K, H, W)`` float32 probabilities.
        """
        out = self._head_maps(images, text, image_encoder)
        w = self.ensemble_weight
        mixed = torch.lerp(out.score.float(), out.decoder.float(), w)  # w * decoder + (1 - w) * score
        return self._calibrate(upsample(mixed, images.shape[-2:]).sigmoid_(), seen)

    def ensemble(self, outputs: dict[str, Tensor]) -> Tensor:
        """OTSeg+ logits ``w * decoder + (1 - w) * score``, ``(B, K, H, W)``."""
        return torch.lerp(outputs["score"], outputs["decoder"], self.ensemble_weight)

    def _calibrate(self, prob: Tensor, seen: Tensor | None) -> Tensor:
        """Lower the seen classes of ``prob (B, K, H, W)`` by ``seen_bias`` (in place unless it needs gradients)."""
        if seen is None or not self.seen_bias or bool(seen.all()):
            return prob
        shift = self.seen_bias * seen.to(prob.dtype).view(1, -1, 1, 1)
        return prob - shift if prob.requires_grad else prob.sub_(shift)

    def probabilities(self, outputs: dict[str, Tensor], seen: Tensor | None = None) -> Tensor:
        """Per-class sigmoid probabilities of the ensemble, seen classes lowered by ``seen_bias``.

        Args:
            outputs: Output of :meth:`forward`.
            seen: ``(K,)`` bool, classes seen in training (``None`` or all seen: no calibration, as in the
                fully supervised setting where it cannot change the argmax).

        Returns:
            ``(B, K, H, W)``.
        """
        return self._calibrate(self.ensemble(outputs).sigmoid_(), seen)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters with ``requires_grad`` (prompts and head, unless the backbone is fine-tuned)."""
        return [p for p in self.parameters() if p.requires_grad]
