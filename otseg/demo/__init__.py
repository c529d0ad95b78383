"""The CPU demo: a synthetic world, a tiny CLIP pre-trained on it, and OTSeg segmenting classes named only in text."""

from otseg.demo.clip_pretrain import PretrainConfig, pretrain_clip, zero_shot_accuracy
from otseg.demo.run import COLOURS, PATTERNS, demo_model_config, run_demo

__all__ = [
    "COLOURS",
    "PATTERNS",
    "PretrainConfig",
    "demo_model_config",
    "pretrain_clip",
    "run_demo",
    "zero_shot_accuracy",
]
