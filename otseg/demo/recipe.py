"""The demo's recipe: its world of 24 colour x pattern classes on 64x64 images, a tiny CLIP, OTSeg on it, steps.

Classes are compositions of two words ("red striped", "blue dotted", ...): a pattern is visible inside every 8x8
patch, which a 3-layer ViT resolves (with shapes the same budget learns the seen classes poorly). Objects, in random
shapes, are placed apart (``OBJECT_GAP``): with overlapping objects, borders inside shared patches were the dominant
error of a model whose masks come from an 8x8 token grid.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from otseg.clip import WordTokenizer
from otseg.config import ModelConfig
from otseg.data.synthetic import SyntheticWorld
from otseg.demo.clip_pretrain import PretrainConfig
from otseg.modeling.text_encoder import templates_for

__all__ = [
    "COLOURS",
    "IMAGE_SIZE",
    "NUM_PROMPTS",
    "OTSEG_ITERS",
    "PATTERNS",
    "PRETRAIN",
    "SEEN_BIAS",
    "TRAIN_IMAGES",
    "class_colours",
    "demo_model_config",
    "demo_world",
    "demo_world_options",
]

NUM_PROMPTS = 6
IMAGE_SIZE = 64
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
PATTERNS = ("solid", "striped", "dotted", "checkered")
OBJECT_GAP = 2  # pixels between the circles holding the objects' shapes: objects never overlap
PRETRAIN = PretrainConfig(steps=300, warmup=30, pooling="tokens", token_temperature=0.1, min_objects=1, max_objects=3)
"""The tiny CLIP's pre-training: patch tokens pooled by a soft maximum (see :mod:`otseg.demo.clip_pretrain`)."""
OTSEG_ITERS = 800  # OTSeg training steps, batch 8
TRAIN_IMAGES = 4000  # distinct training images of the synthetic world (a training epoch is 500 steps)
SEEN_BIAS = 0.025
"""Probability subtracted from seen classes at zero-shot inference. Chosen by :func:`otseg.demo.calibrate_seen_bias`
(``otseg demo --calibrate``): calibrated stacking with 4 seen classes held out as pseudo-unseen, no unseen class or
test image involved. Its run gave hIoU (16 seen, 4 pseudo-unseen) 56.4 at 0, 76.5 at 0.025, 75.7 at 0.05, 71.9 at
0.075 and 66.5 at the paper's 0.1 (tuned for ViT-B/16's probabilities)."""


def demo_world_options(seed: int = 0) -> dict[str, Any]:
    """:class:`~otseg.data.synthetic.SyntheticWorld` arguments of the demo world (JSON-serialisable)."""
    return {
        "colours": list(COLOURS),
        "patterns": list(PATTERNS),
        "image_size": IMAGE_SIZE,
        "min_objects": 1,
        "max_objects": 3,
        "object_gap": OBJECT_GAP,
        "seed": seed,
    }


def demo_world(seed: int = 0) -> SyntheticWorld:
    """The demo's :class:`~otseg.data.synthetic.SyntheticWorld`."""
    return SyntheticWorld(**demo_world_options(seed))


def class_colours(world: SyntheticWorld) -> np.ndarray:
    """Colours ``(K, 3)`` uint8 to paint classes with: the class's own colour, lighter or darker by pattern.

    A wrong colour word shows as a wrong hue, a wrong pattern word as a wrong shade (solid: the colour; striped:
    lighter; dotted: darker; checkered: greyer).
    """
    toward = {"solid": (0.0, 0.0), "striped": (0.45, 255.0), "dotted": (0.45, 0.0), "checkered": (0.5, 128.0)}
    colours = []
    for k in range(world.num_classes):
        rgb = np.array(world.palette[world.colour_of(k)], dtype=np.float64)
        share, target = toward.get(world.attribute_of(k), (0.3, 128.0))
        colours.append((1 - share) * rgb + share * target)
    return np.round(colours).astype(np.uint8)


def _vocabulary(world: SyntheticWorld) -> list[str]:
    words = {w for name in world.class_names for w in name.split()}
    for template in templates_for(NUM_PROMPTS):
        words |= set(template.replace("{}", " ").replace(".", " ").split())
    return sorted(words)


def demo_model_config(world: SyntheticWorld, seen_bias: float = SEEN_BIAS) -> ModelConfig:
    """OTSeg on a 3-layer ViT (width 128, 8x8 patches on 64x64 images) and a 2-layer word-level text encoder."""
    vocab = _vocabulary(world)
    tokenizer = WordTokenizer(vocab, context_length=16)
    clip = {
        "embed_dim": 64,
        "vision_cfg": {
            "image_size": IMAGE_SIZE,
            "layers": 3,
            "width": 128,
            "patch_size": 8,
            "head_width": 32,
            "pool_type": "avg",
        },
        "text_cfg": {"context_length": 16, "vocab_size": tokenizer.vocab_size, "width": 64, "heads": 2, "layers": 2},
    }
    return ModelConfig(
        clip=clip,
        quick_gelu=False,
        tokenizer={"type": "words", "vocab": vocab},
        image_size=IMAGE_SIZE,
        num_prompt_tokens=4,
        num_prompts=NUM_PROMPTS,
        decoder_layers=2,
        ffn_dim=256,
        seen_bias=seen_bias,
        name="otseg-demo",
    )
