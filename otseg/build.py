"""Getting a model: :func:`build_otseg` assembles one from a config, :func:`load_otseg` gets one from any source.

Sources: a config name or JSON file, our ``.safetensors`` model file, the paper's ``.pth`` checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch

from otseg.checkpoint import CheckpointError, load_paper_checkpoint, load_state, read_model_metadata
from otseg.clip import build_clip, build_tokenizer, load_clip_weights
from otseg.config import ModelConfig, get_model_config
from otseg.modeling.decoder import MPSADecoder, MPSADecoderLayer
from otseg.modeling.descriptor import RelationshipDescriptor
from otseg.modeling.head import OTSegHead
from otseg.modeling.image_encoder import PromptedVisionTransformer
from otseg.modeling.segmentor import OTSeg
from otseg.modeling.text_encoder import LearnableContext, TextEncoder, templates_for
from otseg.utils.io import is_torchscript_archive, read_state_dict

__all__ = [
    "LoadedModel",
    "build_otseg",
    "build_otseg_vit_b16",
    "build_otseg_vit_b16_coco",
    "build_otseg_vit_b16_context",
    "load_otseg",
    "otseg_model_registry",
]

NO_CLIP_WEIGHTS = (
    "no CLIP weights given: pass clip_weights=<ViT-B-16.pt, an open_clip .bin/.safetensors, or local-dir:<folder>> "
    "(--clip-weights on the command line). allow_random_clip=True builds a randomly initialised CLIP instead: "
    "its segmentations are meaningless, for tests and shape checks only."
)


def build_otseg(
    config: ModelConfig | str | Path = "otseg-vit-b16",
    *,
    clip_weights: str | Path | None = None,
    allow_random_clip: bool = False,
    cache_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> OTSeg:
    """Build OTSeg from a config (preset name, JSON path or :class:`ModelConfig`) and CLIP weights.

    Args:
        config: Model config.
        clip_weights: CLIP weights (see :func:`otseg.clip.load_clip_weights`).
        allow_random_clip: Build without ``clip_weights``, leaving CLIP at random initialisation (tests, or when every
            weight is loaded from a model file next).
        cache_dir: Folder for cached class embeddings.
        device: Where to put the model.

    Returns:
        The model, with CLIP frozen except the visual prompts (or a fully trainable image encoder when
        ``finetune_backbone``), the head trainable, the text encoder frozen.

    Raises:
        ValueError: no ``clip_weights`` and not ``allow_random_clip``; weights that do not fit.

    Example:
        >>> import otseg
        >>> model = otseg.build_otseg("otseg-tiny", allow_random_clip=True)  # a tiny model, random CLIP (tests)
        >>> type(model).__name__, model.config.name
        ('OTSeg', 'otseg-tiny')
    """
    cfg = config if isinstance(config, ModelConfig) else get_model_config(config)
    if clip_weights is None and not allow_random_clip:
        raise ValueError(NO_CLIP_WEIGHTS)
    clip = build_clip(cfg.clip, cfg.quick_gelu)
    if clip_weights is not None:
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
    dim = image_encoder.output_dim
    descriptor = RelationshipDescriptor(dim)  # built before the decoder: the order of random initialisation
    layers = [MPSADecoderLayer(dim, cfg.ffn_dim, cfg.dropout, cfg.sinkhorn) for _ in range(cfg.decoder_layers)]
    head = OTSegHead(descriptor, MPSADecoder(layers), cfg.sinkhorn)
    context = LearnableContext(text_encoder, cfg.num_prompts, cfg.learnable_context) if cfg.learnable_context else None
    model = OTSeg(
        image_encoder,
        head,
        text_encoder,
        learnable_context=context,
        ensemble_weight=cfg.ensemble_weight,
        seen_bias=cfg.seen_bias,
        config=cfg,
    )
    image_encoder.requires_grad_(cfg.finetune_backbone)
    for param in image_encoder.prompt_parameters():
        param.requires_grad_(True)
    text_encoder.requires_grad_(False)
    return model.to(device)


class LoadedModel(NamedTuple):
    """A model and what its file says about it (class names, split, step, CLIP weights, inference settings).

    Example:
        >>> import otseg
        >>> loaded = otseg.load_otseg("otseg-tiny", allow_random_clip=True)
        >>> type(loaded.model).__name__, isinstance(loaded.meta, dict)
        ('OTSeg', True)
    """

    model: OTSeg
    meta: dict[str, Any]


def _recorded_clip_weights(meta: Mapping[str, Any], path: Path) -> str | None:
    """The CLIP weights a model file records, if they are still where it says (or where it says relative to it)."""
    for key, base in (("clip_weights", Path()), ("clip_weights_relative", path.parent)):
        spec = meta.get(key)
        if not spec:
            continue
        local = spec.startswith("local-dir:")
        location = base / (spec[len("local-dir:") :] if local else spec)
        if location.exists():
            return f"local-dir:{location}" if local else str(location)
    return None


def load_otseg(
    source: ModelConfig | str | Path,
    *,
    clip_weights: str | Path | None = None,
    allow_random_clip: bool = False,
    paper_config: ModelConfig | str = "otseg-vit-b16",
    overrides: Mapping[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """Get a model from any source: the one way the CLI, training, the demo and the benchmarks get models.

    Sources:

    - a :class:`ModelConfig`, a preset name (``"otseg-vit-b16"``) or a JSON config file: a new model, CLIP from
      ``clip_weights`` (or random with ``allow_random_clip``);
    - our ``.safetensors`` model file: architecture from the file; a file holding only the trained weights takes the
      CLIP weights from ``clip_weights`` or, when not given, from where the file records them;
    - the paper's released ``.pth`` checkpoint: architecture from ``paper_config``, every weight from the file.

    Args:
        source: See above.
        clip_weights: CLIP weights file or ``local-dir:<folder>``.
        allow_random_clip: Allow a new model without CLIP weights (tests only).
        paper_config: Architecture of a paper checkpoint (``otseg-vit-b16``, ``-context``, ``-coco``).
        overrides: Config values to change before building, e.g. ``{"sinkhorn": {"grad": "implicit"}}``; loaded
            weights must still fit.
        cache_dir: Class-embedding cache folder.
        device: Where to put the model.

    Returns:
        :class:`LoadedModel` ``(model, meta)``; ``meta`` is empty except for our model files.

    Raises:
        FileNotFoundError, ValueError (:class:`~otseg.checkpoint.CheckpointError`): with the file and the fix.

    Example:
        >>> import otseg
        >>> model, meta = otseg.load_otseg("otseg-tiny", allow_random_clip=True)  # a preset; or a model file
        >>> type(model).__name__, meta
        ('OTSeg', {})
    """
    overrides = overrides or {}
    path = None if isinstance(source, ModelConfig) else Path(source)
    if path is not None and path.suffix == ".safetensors":
        config, meta, trainable_only = read_model_metadata(path)
        weights = None
        if trainable_only:
            weights = clip_weights or _recorded_clip_weights(meta, path)
            if weights is None:
                recorded = meta.get("clip_weights")
                recorded = f" (it records {recorded!r}, which is not there)" if recorded else ""
                raise CheckpointError(
                    f"{path} holds only the trained weights; give the CLIP weights it was trained with: "
                    f"--clip-weights <file or local-dir:folder> (clip_weights= in Python){recorded}."
                )
        model = build_otseg(
            config.with_overrides(overrides), clip_weights=weights, allow_random_clip=True, cache_dir=cache_dir
        )
        load_state(model, read_state_dict(path), str(path), partial=trainable_only)
        return LoadedModel(model.to(device), meta)
    if path is not None and path.suffix in (".pth", ".pt") and path.is_file() and not is_torchscript_archive(path):
        config = paper_config if isinstance(paper_config, ModelConfig) else get_model_config(paper_config)
        model = build_otseg(config.with_overrides(overrides), allow_random_clip=True, cache_dir=cache_dir)
        report = load_paper_checkpoint(model, path)
        return LoadedModel(model.to(device), {"paper_checkpoint": report})
    config = source if isinstance(source, ModelConfig) else get_model_config(source)
    model = build_otseg(
        config.with_overrides(overrides),
        clip_weights=clip_weights,
        allow_random_clip=allow_random_clip,
        cache_dir=cache_dir,
    )
    return LoadedModel(model.to(device), {})


def build_otseg_vit_b16(clip_weights: str | Path | None = None, **kwargs: Any) -> OTSeg:
    """OTSeg with CLIP ViT-B/16 at 512x512, 10 prompt tokens, 6 templates (PASCAL VOC).

    Example:
        >>> import otseg
        >>> otseg.otseg_model_registry["default"] is otseg.build_otseg_vit_b16  # build_otseg("otseg-vit-b16", ...)
        True
    """
    return build_otseg("otseg-vit-b16", clip_weights=clip_weights, **kwargs)


def build_otseg_vit_b16_context(clip_weights: str | Path | None = None, **kwargs: Any) -> OTSeg:
    """OTSeg with CLIP ViT-B/16 at 480x480, 10 prompt tokens, 8 templates (PASCAL Context)."""
    return build_otseg("otseg-vit-b16-context", clip_weights=clip_weights, **kwargs)


def build_otseg_vit_b16_coco(clip_weights: str | Path | None = None, **kwargs: Any) -> OTSeg:
    """OTSeg with CLIP ViT-B/16 at 512x512, 100 prompt tokens, 8 templates (COCO-Stuff)."""
    return build_otseg("otseg-vit-b16-coco", clip_weights=clip_weights, **kwargs)


#: The builders of the paper's models by name (``"default"`` is ``"vit_b16"``, PASCAL VOC), each
#: ``builder(clip_weights=None, **overrides) -> OTSeg``.
otseg_model_registry = {
    "default": build_otseg_vit_b16,
    "vit_b16": build_otseg_vit_b16,
    "vit_b16_context": build_otseg_vit_b16_context,
    "vit_b16_coco": build_otseg_vit_b16_coco,
}
