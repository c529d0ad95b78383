"""The CPU demo: zero-shot segmentation of classes named only in text, with no download.

1. A synthetic world of 24 classes, colour x fill pattern ("red striped", "blue dotted", ...), objects drawn in
   random shapes; 4 classes (each colour and each pattern of them seen in other classes) are unseen. Patterns
   rather than shapes define the classes because a pattern is visible inside every 8x8 patch, which a 3-layer
   ViT resolves; with shapes the same budget learns the seen classes poorly.
2. A small open_clip CLIP is pre-trained contrastively on captioned images of the 20 seen classes and saved as
   an open_clip ``local-dir:`` folder, read back through the normal weight loader.
3. OTSeg is trained inductively on seen classes with that CLIP, and, as the ablation, with a random CLIP.
4. Both are evaluated on images that each contain an unseen class: mIoU(S), mIoU(U), hIoU; a picture and the
   training curves are written.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import Dataset

from otseg.build import load_otseg
from otseg.clip import WordTokenizer, build_clip, save_local_dir
from otseg.config import ModelConfig
from otseg.data.classes import ZeroShotSplit
from otseg.data.sources import synthetic_sources
from otseg.data.synthetic import SyntheticWorld, diagonal_split
from otseg.data.synthetic_dataset import SyntheticSegmentationDataset
from otseg.demo.clip_pretrain import PretrainConfig, pretrain_clip, zero_shot_accuracy
from otseg.engine.config import TrainConfig
from otseg.engine.evaluate import evaluate
from otseg.engine.trainer import train
from otseg.modeling.text_encoder import templates_for
from otseg.predictor import InferenceSettings, OTSegPredictor
from otseg.utils.plots import colour_palette, overlay, save_prediction_figure

__all__ = ["demo_model_config", "run_demo"]

NUM_PROMPTS = 6
IMAGE_SIZE = 64
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
PATTERNS = ("solid", "striped", "dotted", "checkered")


def _vocabulary(world: SyntheticWorld) -> list[str]:
    words = {w for name in world.class_names for w in name.split()}
    for template in templates_for(NUM_PROMPTS):
        words |= set(template.replace("{}", " ").replace(".", " ").split())
    return sorted(words)


def demo_model_config(world: SyntheticWorld) -> ModelConfig:
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
        name="otseg-demo",
    )


def _train_otseg(
    out: Path, model_file: Path, clip_weights: str | None, iters: int, synthetic: dict[str, Any], progress: bool
) -> dict[str, Any]:
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
        inference=InferenceSettings(short_side=None, mode="whole"),
        out_dir=str(out),
        checkpoint_interval=0,
        log_interval=max(1, iters // 40),
        num_workers=0,
        progress=progress,
    )
    return train(cfg, overwrite=True)


class _SeenOnly(Dataset):
    """Held-out images of seen classes, labels renumbered to the seen-class list."""

    def __init__(self, images: SyntheticSegmentationDataset, split: ZeroShotSplit) -> None:
        self.images, self.lut = images, split.inductive_label_map()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.images[index]
        return {**item, "label": self.lut[item["label"]]}


def _seen_only_set(world: SyntheticWorld, split: ZeroShotSplit, length: int) -> _SeenOnly:
    images = SyntheticSegmentationDataset(world, length, classes=split.seen, stream=2, zero_shot_split=split)
    return _SeenOnly(images, split)


def _picture(out: Path, summary: dict[str, Any], world: SyntheticWorld, split, clip_weights: str, synthetic) -> Path:
    model, _ = load_otseg(summary["model"], clip_weights=clip_weights)
    predictor = OTSegPredictor(model, InferenceSettings(short_side=None, mode="whole"))
    predictor.set_classes(split.class_names, seen=split.seen_names)
    val = synthetic_sources(synthetic).val
    palette = colour_palette(world.num_classes)
    panels, present = [], set()
    for i in range(3):
        item = val[i]
        image = item["image"].permute(1, 2, 0).numpy()
        label = item["label"].numpy().astype(np.uint8)
        pred = predictor.predict([item["image"]])[0].astype(np.uint8)
        pred[label == 255] = 255  # background is unlabelled in this world: show predictions on objects only
        present |= set(np.unique(label[label != 255]).tolist()) | set(np.unique(pred[pred != 255]).tolist())
        panels += [
            (f"image {i}", np.kron(image, np.ones((4, 4, 1), dtype=np.uint8))),
            ("ground truth", np.kron(overlay(image, label, palette, 0.9), np.ones((4, 4, 1), dtype=np.uint8))),
            ("prediction", np.kron(overlay(image, pred, palette, 0.9), np.ones((4, 4, 1), dtype=np.uint8))),
        ]
    return save_prediction_figure(
        out / "prediction.png", panels, world.class_names, sorted(present), split.unseen, rows=3
    )


def run_demo(out: Path, *, quick: bool = False, console: Console | None = None) -> dict[str, Any]:
    """Run the whole demo into ``out``; returns the numbers it prints (also written to ``out/demo.json``)."""
    console = console or Console()
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    world = SyntheticWorld(COLOURS, image_size=IMAGE_SIZE, min_objects=1, max_objects=3, seed=0, patterns=PATTERNS)
    split = diagonal_split(world)
    model_cfg = demo_model_config(world)
    model_file = out / "otseg-demo.json"
    model_file.write_text(json.dumps({k: v for k, v in model_cfg.to_dict().items() if k != "name"}, indent=2))
    synthetic = {
        "colours": list(COLOURS),
        "patterns": list(PATTERNS),
        "image_size": IMAGE_SIZE,
        "train_images": 4000,
        "val_images": 60 if quick else 150,
        "seed": 0,
    }
    console.print(
        f"[bold]1/4[/] world: {world.num_classes} classes; unseen in training: {', '.join(split.unseen_names)}"
    )

    # 2. CLIP pre-training on seen classes
    tokenizer = WordTokenizer(model_cfg.tokenizer["vocab"], context_length=16)
    clip = build_clip(model_cfg.clip, model_cfg.quick_gelu)
    templates = templates_for(NUM_PROMPTS)
    pre = PretrainConfig(steps=30 if quick else 300, warmup=3 if quick else 30)
    losses = pretrain_clip(clip, tokenizer, world, split.seen, templates, pre, show_progress=not quick)
    clip_dir = save_local_dir(clip, out / "tiny-clip", model_cfg.clip, model_cfg.quick_gelu)
    clip_weights = f"local-dir:{clip_dir}"
    acc_unseen = zero_shot_accuracy(clip, tokenizer, world, split.unseen, split.unseen, templates, num_images=120)
    acc_all = zero_shot_accuracy(clip, tokenizer, world, split.unseen, range(world.num_classes), templates, 120)
    console.print(
        f"[bold]2/4[/] tiny CLIP pre-trained on seen classes ({pre.steps} steps, loss {losses[0]:.2f} -> "
        f"{losses[-1]:.2f}); images of unseen classes classified right {100 * acc_unseen:.0f}% among the unseen "
        f"names (chance {100 / len(split.unseen):.0f}%), {100 * acc_all:.0f}% among all names "
        f"(chance {100 / world.num_classes:.0f}%)"
    )

    # 3. OTSeg with the pre-trained CLIP, and with a random CLIP
    iters = 20 if quick else 450
    runs = {}
    for label, weights in (("pre-trained tiny CLIP", clip_weights), ("random CLIP (ablation)", None)):
        folder = out / ("otseg" if weights else "otseg-random-clip")
        console.print(f"[bold]3/4[/] training OTSeg ({iters} steps) with the {label}")
        runs[label] = _train_otseg(folder, model_file, weights, iters, synthetic, progress=not quick)

    # 4. results
    seen_only = _seen_only_set(world, split, 40 if quick else 150)
    table = Table(title="Zero-shot segmentation of unseen classes (synthetic world)")
    for col in ("CLIP", "mIoU(S)", "mIoU(U)", "hIoU", "seen, seen names only"):
        table.add_column(col, justify="right" if col != "CLIP" else "left")
    results = {}
    for label, summary in runs.items():
        m = summary["metrics"]
        model, _ = load_otseg(summary["model"], clip_weights=clip_weights if "pre-trained" in label else None)
        supervised = evaluate(
            model,
            seen_only,
            ZeroShotSplit("seen names", split.seen_names, ()),
            settings=InferenceSettings(short_side=None, mode="whole"),
            calibrate_seen=False,
            show_progress=False,
        )
        results[label] = {k: m[k] for k in ("miou_seen", "miou_unseen", "hiou", "miou")}
        results[label]["miou_seen_names_only"] = supervised.miou
        table.add_row(
            label, *(f"{v:.1f}" for v in (*(m[k] for k in ("miou_seen", "miou_unseen", "hiou")), supervised.miou))
        )
    console.print(table)
    console.print(
        "  mIoU(S), mIoU(U), hIoU: images with unseen classes, all 24 names offered, seen classes calibrated "
        "(-0.1). Last column: images of seen classes, only the 20 seen names offered (what training optimised)."
    )
    picture = _picture(out, runs["pre-trained tiny CLIP"], world, split, clip_weights, synthetic)
    elapsed = time.perf_counter() - start
    report = {
        "seconds": elapsed,
        "clip_zero_shot_accuracy": {"unseen_among_unseen": acc_unseen, "unseen_among_all": acc_all},
        "results": results,
        "picture": str(picture),
        "curves": {k: v["curves"] for k, v in runs.items()},
    }
    (out / "demo.json").write_text(json.dumps(report, indent=2))
    console.print(
        f"[bold]4/4[/] done in {elapsed / 60:.1f} min.\n  picture: {picture}\n  training curves: "
        + ", ".join(v["curves"] for v in runs.values())
        + f"\n  numbers: {out / 'demo.json'}"
    )
    return report
