"""Builders: assemble an OTSeg network from a :class:`~otseg.config.ModelConfig` and local weight files."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from otkit.sinkhorn import GradMode
from otseg.clip import build_clip, build_tokenizer, load_clip_weights
from otseg.config import ModelConfig, get_model_config
from otseg.modeling.head import OTSegHead
from otseg.modeling.image_encoder import PromptedVisionTransformer
from otseg.modeling.otseg import OTSeg
from otseg.modeling.text_encoder import LearnableContext, TextEncoder, templates_for

__all__ = ["RandomWeightsWarning", "build_otseg", "build_otseg_vit_b16", "otseg_model_registry"]


class RandomWeightsWarning(UserWarning):
    """The CLIP backbone was left at random initialisation."""


def _config(config: ModelConfig | str | Path) -> ModelConfig:
    return config if isinstance(config, ModelConfig) else get_model_config(config)


def build_otseg(
    config: ModelConfig | str | Path = "otseg-vit-b16",
    *,
    clip_weights: str | Path | None = None,
    cache_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> OTSeg:
    """Build OTSeg from a config (name, JSON path or :class:`ModelConfig`) and optional CLIP weights.

    Args:
        config: Model config.
        clip_weights: CLIP weights (see :func:`otseg.clip.load_clip_weights`); ``None`` leaves CLIP random and
            warns, which is only useful for tests and shape checks.
        cache_dir: Folder for cached class embeddings.
        device: Where to put the model.

    Returns:
        The model, with CLIP frozen except the visual prompts (or fully trainable image encoder when
        ``finetune_backbone``), the head trainable, the text encoder frozen.
    """
    cfg = _config(config)
    clip = build_clip(cfg.clip, cfg.quick_gelu)
    if clip_weights is None:
        warnings.warn(
            "No CLIP weights given: the CLIP backbone is RANDOMLY INITIALISED. Segmentations will be meaningless "
            "unless you train everything; pass clip_weights=<path to ViT-B-16.pt or an open_clip checkpoint>.",
            RandomWeightsWarning,
            stacklevel=2,
        )
    else:
        load_clip_weights(clip, clip_weights, quick_gelu=cfg.quick_gelu)
    image_encoder = PromptedVisionTransformer(
        clip.visual,
        image_size=cfg.image_size,
        num_tokens=cfg.num_prompt_tokens,
        deep_layers=cfg.deep_prompt_layers,
        prompt_dropout=cfg.prompt_dropout,
        double_class_embedding=cfg.double_class_embedding,
    )
    tokenizer = build_tokenizer(cfg.tokenizer, clip.context_length)
    text_encoder = TextEncoder(clip, tokenizer, templates_for(cfg.num_prompts), cache_dir=cache_dir)
    grad: GradMode = cfg.sinkhorn_grad  # type: ignore[assignment]
    head = OTSegHead(
        image_encoder.output_dim,
        cfg.decoder_layers,
        cfg.ffn_dim,
        cfg.dropout,
        eps=cfg.eps,
        max_iter=cfg.sinkhorn_iters,
        tol=cfg.sinkhorn_tol,
        grad=grad,
    )
    context = LearnableContext(text_encoder, cfg.num_prompts, cfg.learnable_context) if cfg.learnable_context else None
    model = OTSeg(
        image_encoder,
        head,
        text_encoder,
        learnable_context=context,
        ensemble_weight=cfg.ensemble_weight,
        seen_bias=cfg.seen_bias,
    )
    image_encoder.requires_grad_(cfg.finetune_backbone)
    for param in image_encoder.prompt_parameters():
        param.requires_grad_(True)
    text_encoder.requires_grad_(False)
    model.config = cfg
    return model.to(device)


def build_otseg_vit_b16(clip_weights: str | Path | None = None, **kwargs: object) -> OTSeg:
    """OTSeg with CLIP ViT-B/16 at 512x512, 10 prompt tokens, 6 templates (PASCAL VOC)."""
    return build_otseg("otseg-vit-b16", clip_weights=clip_weights, **kwargs)


def build_otseg_vit_b16_context(clip_weights: str | Path | None = None, **kwargs: object) -> OTSeg:
    """OTSeg with CLIP ViT-B/16 at 480x480, 10 prompt tokens, 8 templates (PASCAL Context)."""
    return build_otseg("otseg-vit-b16-context", clip_weights=clip_weights, **kwargs)


def build_otseg_vit_b16_coco(clip_weights: str | Path | None = None, **kwargs: object) -> OTSeg:
    """OTSeg with CLIP ViT-B/16 at 512x512, 100 prompt tokens, 8 templates (COCO-Stuff)."""
    return build_otseg("otseg-vit-b16-coco", clip_weights=clip_weights, **kwargs)


otseg_model_registry = {
    "default": build_otseg_vit_b16,
    "vit_b16": build_otseg_vit_b16,
    "vit_b16_context": build_otseg_vit_b16_context,
    "vit_b16_coco": build_otseg_vit_b16_coco,
}
