"""Choosing the demo's seen bias by calibrated stacking, with no unseen class and no test image.

Calibrated stacking (Chao et al., 2016) lowers the scores of seen classes by a constant so that a model trained on
seen classes only still names the unseen ones. The constant must not be tuned on the unseen classes it is meant to
help: here 4 seen classes (the next diagonal of the colour x pattern grid) become pseudo-unseen. The tiny CLIP and
OTSeg are trained with the demo's recipe on the 16 other seen classes; images of seen classes only, each showing a
pseudo-unseen one, are segmented with the 20 seen names; the bias maximising hIoU over (16 seen, 4 pseudo-unseen)
is the demo's ``SEEN_BIAS``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from otseg.build import load_otseg
from otseg.data.classes import ZeroShotSplit
from otseg.data.synthetic import diagonal_split
from otseg.data.synthetic_dataset import SyntheticSegmentationDataset
from otseg.demo.recipe import (
    OTSEG_ITERS,
    PRETRAIN,
    SEEN_BIAS,
    TRAIN_IMAGES,
    demo_model_config,
    demo_world,
    demo_world_options,
)
from otseg.demo.training import WHOLE_IMAGE, pretrain_tiny_clip, train_otseg, write_model_config
from otseg.engine.metrics import ConfusionMatrix
from otseg.predictor import predict_probabilities

__all__ = ["CALIBRATION_BIASES", "calibrate_seen_bias"]

CALIBRATION_BIASES = (0.0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2)
"""Seen biases tried (probabilities are sigmoids in [0, 1])."""


def calibrate_seen_bias(
    out: Path, *, quick: bool = False, console: Console | None = None, seed: int = 0
) -> dict[str, Any]:
    """Choose the demo's seen bias on pseudo-unseen seen classes; writes and returns ``out/calibration.json``.

    Returns:
        ``{"pseudo_unseen": names, "seen_bias": best, "sweep": {bias: {miou_seen, miou_unseen, hiou}}}``.
    """
    console = console or Console()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    world = demo_world()
    real = diagonal_split(world)
    held_out = diagonal_split(world, 2 * len(real.unseen))
    pseudo = sorted(set(held_out.unseen) - set(real.unseen))
    model_cfg = demo_model_config(world)
    model_file = write_model_config(out, model_cfg)
    console.print(f"calibration: pseudo-unseen classes {', '.join(world.class_names[k] for k in pseudo)}")
    pre = dataclasses.replace(PRETRAIN, seed=seed, **({"steps": 30, "warmup": 3} if quick else {}))
    weights, _, _, _ = pretrain_tiny_clip(out / "tiny-clip", world, model_cfg, held_out.seen, pre, not quick)
    synthetic = {
        **demo_world_options(),
        "train_images": TRAIN_IMAGES,
        "val_images": 2,
        "num_unseen": len(held_out.unseen),
    }
    iters = 20 if quick else OTSEG_ITERS
    summary = train_otseg(out / "otseg", model_file, weights, iters, synthetic, not quick, eval_images=2)
    model, _ = load_otseg(summary["model"], clip_weights=weights)

    seen = list(real.seen)
    names = [world.class_names[k] for k in seen]
    split = ZeroShotSplit("pseudo-unseen", names, tuple(seen.index(k) for k in pseudo))
    images = SyntheticSegmentationDataset(world, 40 if quick else 150, classes=seen, require=pseudo, stream=3)
    lut = real.inductive_label_map()
    text = model.class_embeddings(names)
    lowered = (~split.unseen_mask()).float().view(1, -1, 1, 1)
    matrices = {b: ConfusionMatrix(len(names)) for b in CALIBRATION_BIASES}
    for i in range(len(images)):
        item = images[i]
        prob = predict_probabilities(model, item["image"][None], text, WHOLE_IMAGE)
        label = lut[item["label"]]
        for bias, matrix in matrices.items():
            matrix.update((prob - bias * lowered).argmax(1)[0], label)
    scores = {b: m.compute(split) for b, m in matrices.items()}
    best = max(CALIBRATION_BIASES, key=lambda b: scores[b].hiou or 0.0)
    report = {
        "pseudo_unseen": [world.class_names[k] for k in pseudo],
        "seen_bias": best,
        "sweep": {
            str(b): {"miou_seen": s.miou_seen, "miou_unseen": s.miou_unseen, "hiou": s.hiou} for b, s in scores.items()
        },
    }
    (out / "calibration.json").write_text(json.dumps(report, indent=2))
    table = Table(title="Calibrated stacking on pseudo-unseen seen classes")
    for col in ("seen bias", "mIoU(S)", "mIoU(pseudo-U)", "hIoU"):
        table.add_column(col, justify="right")
    for b, s in scores.items():
        table.add_row(f"{b:.3f}", f"{s.miou_seen:.1f}", f"{s.miou_unseen:.1f}", f"{s.hiou:.1f}")
    console.print(table)
    console.print(f"chosen seen bias: {best} (the demo uses SEEN_BIAS = {SEEN_BIAS})")
    return report
