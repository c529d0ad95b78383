"""Model size and cost: parameter counts and FLOPs of one forward pass."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from otseg.modeling.segmentor import OTSeg

__all__ = ["ModelStats", "model_stats"]


@dataclass(frozen=True)
class ModelStats:
    """Parameter counts and the cost of one forward pass.

    Attributes:
        total_params: Every parameter of the segmentor, frozen CLIP towers included.
        trainable_params: Parameters that require grad.
        unused_trainable_params: Trainable parameters no output depends on (the last decoder layer's value,
            output projection and FFN: only its mask logits are used).
        text_encoder_params: The frozen text tower (not run per image: class embeddings are cached).
        gflops: Forward GFLOPs at ``image_size`` (``torch.utils.flop_counter``: 2 per multiply-add), text excluded.
        image_encoder_gflops: The prompted CLIP ViT's share.
        head_gflops: The decode head's share (descriptor, MPS path, decoder).
        image_size: Input size used.
        num_classes: K used.
        num_prompts: N used.
    """

    total_params: int
    trainable_params: int
    unused_trainable_params: int
    text_encoder_params: int
    gflops: float
    image_encoder_gflops: float
    head_gflops: float
    image_size: int
    num_classes: int
    num_prompts: int


def model_stats(
    model: OTSeg, image_size: int = 512, num_classes: int = 20, num_prompts: int | None = None
) -> ModelStats:
    """Count parameters and the FLOPs of one forward of a ``(1, 3, S, S)`` image against K random classes."""
    n_prompts = num_prompts or model.config.num_prompts
    dim = model.image_encoder.output_dim
    text = torch.nn.functional.normalize(torch.randn(num_classes, n_prompts, dim), dim=-1)
    images = torch.rand(1, 3, image_size, image_size) * 255
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
    text_params = sum(p.numel() for p in model.text_encoder.parameters()) if model.text_encoder is not None else 0
    return ModelStats(
        total_params=sum(p.numel() for p in model.parameters()),
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        unused_trainable_params=unused,
        text_encoder_params=text_params,
        gflops=counter.get_total_flops() / 1e9,
        image_encoder_gflops=sum(by_module.get("OTSeg.image_encoder", {}).values()) / 1e9,
        head_gflops=sum(by_module.get("OTSeg.head", {}).values()) / 1e9,
        image_size=image_size,
        num_classes=num_classes,
        num_prompts=n_prompts,
    )
