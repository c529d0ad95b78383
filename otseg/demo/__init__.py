"""The CPU demo: a synthetic world, a tiny CLIP pre-trained on it, and OTSeg segmenting classes named only in text."""

from otseg.demo.calibration import calibrate_seen_bias
from otseg.demo.clip_pretrain import PretrainConfig, patch_zero_shot_accuracy, pretrain_clip, zero_shot_accuracy
from otseg.demo.recipe import COLOURS, PATTERNS, demo_model_config, demo_world, demo_world_options
from otseg.demo.run import run_demo

__all__ = [
    "COLOURS",
    "PATTERNS",
    "PretrainConfig",
    "calibrate_seen_bias",
    "demo_model_config",
    "demo_world",
    "demo_world_options",
    "patch_zero_shot_accuracy",
    "pretrain_clip",
    "run_demo",
    "zero_shot_accuracy",
]
