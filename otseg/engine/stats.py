"""Model size and cost: parameter counts and the FLOPs of one forward, in two conventions.

- **All operations** (``gflops``): every floating-point operation of our forward as ``torch.utils.flop_counter``
  counts it, 2 per multiply-add, attention matmuls included.
- **The paper's convention** (``paper_gflops``): the paper's 61.9 GFLOPs is what mmcv's complexity counter
  reports for the public model: the multiply-accumulates of the modules whose type is exactly ``nn.Linear`` or
  ``nn.Conv2d``. That leaves out ``nn.MultiheadAttention`` (its input projection is a functional call, its output
  projection a subclass of ``nn.Linear``), every attention matmul, the Sinkhorn solves, norms and activations.
  :func:`paper_convention_macs` counts the same modules of our model (they map one to one onto the public ones)
  with the rows the public model passes through them. It counts from the modules' shapes, not from a run, because
  our forward skips work whose result is unused (the prompt tokens' outputs, the last decoder layer's value
  path and feed-forward block), which the public model computes and mmcv counts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from otseg.modeling.segmentor import OTSeg

__all__ = ["PAPER_FIGURES", "ModelStats", "model_stats", "paper_convention_macs", "unused_paper_parameters"]

# The paper's efficiency figures (ECCV 2024, ViT-B/16): trainable parameters in millions per model config, and
# GFLOPs of one forward at 512x512 on PASCAL VOC (20 classes, 6 prompts), the one setting it gives them for.
PAPER_FIGURES: dict[str, dict[str, float]] = {
    "otseg-vit-b16": {"trainable_params_m": 13.8, "gflops": 61.9},
    "otseg-vit-b16-context": {"trainable_params_m": 13.8},
    "otseg-vit-b16-coco": {"trainable_params_m": 14.6},
}


@dataclass(frozen=True)
class ModelStats:
    """Parameter counts and the cost of one forward pass of one image.

    Attributes:
        total_params: Every parameter of the segmentor, frozen CLIP towers included.
        trainable_params: Parameters that require grad.
        paper_trainable_params: ``trainable_params`` plus what the public model also holds and trains but never
            uses (:func:`unused_paper_parameters`): the paper's convention of its 13.8M.
        unused_trainable_params: Trainable parameters no output depends on (the last decoder layer's value,
            output projection and FFN: only its mask logits are used).
        text_encoder_params: The frozen text tower (not run per image: class embeddings are cached).
        gflops: All floating-point operations of our forward (2 per multiply-add), text excluded.
        image_encoder_gflops: The prompted CLIP ViT's share of ``gflops``.
        head_gflops: The decode head's share (descriptor, MPS path, decoder).
        paper_gflops: Giga multiply-accumulates in the paper's convention (:func:`paper_convention_macs`).
        image_size: Input size used.
        num_classes: K used.
        num_prompts: N used.
    """

    total_params: int
    trainable_params: int
    paper_trainable_params: int
    unused_trainable_params: int
    text_encoder_params: int
    gflops: float
    image_encoder_gflops: float
    head_gflops: float
    paper_gflops: float
    image_size: int
    num_classes: int
    num_prompts: int

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable)."""
        return asdict(self)


def paper_convention_macs(model: OTSeg, image_size: int, num_classes: int, num_prompts: int) -> dict[str, int]:
    """Multiply-accumulates of one ``(1, 3, S, S)`` forward counted as mmcv counts the public model.

    Counted modules and the rows the public model passes through each (``M = (S / patch)^2`` pixels, ``T`` prompt
    tokens, ``L`` deep-prompted blocks, ``Q = K * N`` prompt queries):

    - the patch convolution: ``M`` positions;
    - the shared prompt projection: ``T`` tokens, ``1 + L`` times;
    - each CLIP block's MLP (``c_fc``, ``c_proj``): the whole sequence, ``1 + T + M`` tokens (the attention's
      projections are not ``nn.Linear`` modules there and are not counted);
    - the relationship descriptor: ``Q`` queries;
    - every decoder layer, the last one included: ``k`` and ``v`` on ``M`` pixels; ``q``, ``proj``, ``linear1``
      and ``linear2`` on ``Q`` queries.

    Args:
        model: The segmentor.
        image_size: Input side S.
        num_classes: K.
        num_prompts: N.

    Returns:
        ``{"linear": ..., "conv": ..., "total": ...}`` multiply-accumulates (bias additions are not counted).
    """
    encoder = model.image_encoder
    pixels = (image_size // encoder.patch_size) ** 2
    sequence = 1 + encoder.num_tokens + pixels
    queries = num_classes * num_prompts
    linear = (1 + encoder.deep_layers) * encoder.num_tokens * encoder.prompt_proj.weight.numel()
    for block in encoder.transformer.resblocks:
        linear += sequence * (block.mlp.c_fc.weight.numel() + block.mlp.c_proj.weight.numel())
    linear += queries * model.head.descriptor.q_proj.weight.numel()
    for layer in model.head.decoder.layers:
        attn = layer.multihead_attn
        linear += pixels * (attn.k.weight.numel() + attn.v.weight.numel())
        linear += queries * sum(m.weight.numel() for m in (attn.q, attn.proj, layer.linear1, layer.linear2))
    conv = pixels * encoder.conv1.weight.numel()
    return {"linear": linear, "conv": conv, "total": linear + conv}


def unused_paper_parameters(model: OTSeg) -> int:
    """Trainable parameters the public model holds but never runs: each decoder layer's stock ``self_attn``.

    Its decoder layers subclass ``nn.TransformerDecoderLayer``, whose self-attention (an ``nn.MultiheadAttention``
    of width d, ``4 d^2 + 4 d`` parameters) and ``norm1`` (``2 d``) are built and trained but skipped by its
    forward; our layers do not have them (the checkpoint loader lists them as unused keys).
    """
    width = model.head.descriptor.q_proj.out_features
    return len(model.head.decoder.layers) * (4 * width * width + 4 * width + 2 * width)


def model_stats(
    model: OTSeg, image_size: int | None = None, num_classes: int = 20, num_prompts: int | None = None
) -> ModelStats:
    """Count parameters and the FLOPs of one forward of a ``(1, 3, S, S)`` image against K random classes.

    Args:
        model: The segmentor.
        image_size: S (default: the model's training size).
        num_classes: K (20: PASCAL VOC, the setting of the paper's 61.9 GFLOPs).
        num_prompts: N (default: the model's templates).

    Returns:
        The :class:`ModelStats`.
    """
    size = image_size or model.config.image_size
    n_prompts = num_prompts or model.config.num_prompts
    dim = model.image_encoder.output_dim
    text = torch.nn.functional.normalize(torch.randn(num_classes, n_prompts, dim), dim=-1)
    images = torch.rand(1, 3, size, size) * 255
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:  # autograd on: the counter's module hooks fail on parameter views made under no_grad
        model(images, text)
    model.train(was_training)
    by_module = counter.get_flop_counts()
    last = model.head.decoder.layers[-1]
    unused = sum(
        p.numel()
        for module in (
            last.multihead_attn.v,
            last.multihead_attn.proj,
            last.linear1,
            last.linear2,
            last.norm2,
            last.norm3,
        )
        for p in module.parameters()
        if p.requires_grad
    )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    text_params = sum(p.numel() for p in model.text_encoder.parameters()) if model.text_encoder is not None else 0
    return ModelStats(
        total_params=sum(p.numel() for p in model.parameters()),
        trainable_params=trainable,
        paper_trainable_params=trainable + unused_paper_parameters(model),
        unused_trainable_params=unused,
        text_encoder_params=text_params,
        gflops=counter.get_total_flops() / 1e9,
        image_encoder_gflops=sum(by_module.get("OTSeg.image_encoder", {}).values()) / 1e9,
        head_gflops=sum(by_module.get("OTSeg.head", {}).values()) / 1e9,
        paper_gflops=paper_convention_macs(model, size, num_classes, n_prompts)["total"] / 1e9,
        image_size=size,
        num_classes=num_classes,
        num_prompts=n_prompts,
    )
