"""The demo's trainings: the tiny CLIP's pre-training, OTSeg on seen classes, and its seen-names-only score."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from open_clip.model import CLIP
from torch.utils.data import Dataset

from otseg.build import load_otseg
from otseg.clip import WordTokenizer, build_clip, save_local_dir
from otseg.config import ModelConfig
from otseg.data.classes import ZeroShotSplit
from otseg.data.sources import SYNTHETIC_COUNTS
from otseg.data.synthetic import SyntheticWorld, diagonal_split
from otseg.data.synthetic_dataset import SyntheticSegmentationDataset
from otseg.demo.clip_pretrain import PretrainConfig, pretrain_clip
from otseg.demo.recipe import IMAGE_SIZE, NUM_PROMPTS
from otseg.engine.config import TrainConfig
from otseg.engine.evaluate import evaluate
from otseg.engine.trainer import train
from otseg.modeling.segmentor import OTSeg
from otseg.modeling.text_encoder import templates_for
from otseg.predictor import InferenceSettings

__all__ = [
    "WHOLE_IMAGE",
    "pretrain_tiny_clip",
    "seen_names_only_miou",
    "train_and_score",
    "train_otseg",
    "write_model_config",
]

WHOLE_IMAGE = InferenceSettings(short_side=None, mode="whole")
"""The demo's inference: 64x64 images as they are, no resize, no windows."""


def write_model_config(out: Path, model_cfg: ModelConfig) -> Path:
    """Write ``model_cfg`` as the JSON model file training reads (``out/otseg-demo.json``); returns its path."""
    model_file = out / "otseg-demo.json"
    model_file.write_text(json.dumps({k: v for k, v in model_cfg.to_dict().items() if k != "name"}, indent=2))
    return model_file


def pretrain_tiny_clip(
    out: Path,
    world: SyntheticWorld,
    model_cfg: ModelConfig,
    classes: Sequence[int],
    cfg: PretrainConfig,
    progress: bool,
) -> tuple[str, list[float], CLIP, WordTokenizer]:
    """Pre-train the tiny CLIP of ``model_cfg`` on images of ``classes`` and save it as an open_clip folder ``out``.

    Returns its ``local-dir:`` weights source, the loss of every step, the CLIP and its tokenizer.
    """
    tokenizer = WordTokenizer(model_cfg.tokenizer["vocab"], context_length=model_cfg.clip["text_cfg"]["context_length"])
    clip = build_clip(model_cfg.clip, model_cfg.quick_gelu)
    losses = pretrain_clip(clip, tokenizer, world, classes, templates_for(NUM_PROMPTS), cfg, show_progress=progress)
    folder = save_local_dir(clip, out, model_cfg.clip, model_cfg.quick_gelu)
    return f"local-dir:{folder}", losses, clip, tokenizer


def train_otseg(
    out: Path,
    model_file: Path,
    clip_weights: str | None,
    iters: int,
    synthetic: dict[str, Any],
    progress: bool,
    eval_images: int | None = None,
) -> dict[str, Any]:
    """Train OTSeg inductively on the synthetic world ``synthetic`` into ``out``; the trainer's summary.

    ``clip_weights=None`` trains on a random CLIP (the ablation). The model file records the CLIP weights and the
    whole-image inference, so ``otseg eval`` and ``otseg predict`` on it need no options.
    """
    cfg = TrainConfig(
        model=str(model_file),
        clip_weights=clip_weights,
        allow_random_clip=clip_weights is None,  # the ablation's random CLIP is intended
        dataset="synthetic",
        synthetic=synthetic,
        setting="inductive",
        crop_size=IMAGE_SIZE,
        resize_scale=(2 * IMAGE_SIZE, IMAGE_SIZE),
        # classes are defined by colour and fine patterns: no hue jitter, no down-scaling that would blur them
        ratio_range=(1.0, 1.0),
        photometric=False,
        iters=iters,
        batch_size=8,
        lr=3e-3,
        warmup_iters=max(1, iters // 10),
        inference=WHOLE_IMAGE,
        eval_images=eval_images,
        out_dir=str(out),
        checkpoint_interval=0,
        log_interval=max(1, iters // 40),
        num_workers=0,
        progress=progress,
    )
    return train(cfg, overwrite=True)


class _SeenOnly(Dataset):
    """Images of seen classes, labels renumbered to the seen-class list."""

    def __init__(self, images: SyntheticSegmentationDataset, split: ZeroShotSplit) -> None:
        self.images, self.lut = images, split.inductive_label_map()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.images[index]
        return {**item, "label": self.lut[item["label"]]}


def seen_names_only_miou(model: OTSeg, world: SyntheticWorld, split: ZeroShotSplit, images: int) -> float:
    """The mIoU on ``images`` held-out images of seen classes with only the seen names offered (what training fits)."""
    data = _SeenOnly(SyntheticSegmentationDataset(world, images, classes=split.seen, stream=2), split)
    names = ZeroShotSplit("seen names", split.seen_names, ())
    metrics = evaluate(model, data, names, settings=WHOLE_IMAGE, calibrate_seen=False, show_progress=False)
    return metrics.miou


def train_and_score(
    out: Path,
    model_file: Path,
    clip_weights: str | None,
    iters: int,
    synthetic: dict[str, Any],
    seen_only_images: int,
    threads: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """:func:`train_otseg`, then :func:`seen_names_only_miou`; the summary with ``miou_seen_names_only`` added.

    Runs in a worker process too (the ablation trains alongside the CLIP pre-training): ``threads`` sets the
    process's torch threads. ``seconds`` in the summary is the wall time of the training and the score.
    """
    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    summary = train_otseg(out, model_file, clip_weights, iters, synthetic, progress)
    world_options = {k: v for k, v in synthetic.items() if k not in SYNTHETIC_COUNTS}
    world = SyntheticWorld(**world_options)
    model, _ = load_otseg(summary["model"], clip_weights=clip_weights)
    split = diagonal_split(world, synthetic.get("num_unseen"))
    miou = seen_names_only_miou(model, world, split, seen_only_images)
    return {**summary, "miou_seen_names_only": miou, "seconds": time.perf_counter() - start}
