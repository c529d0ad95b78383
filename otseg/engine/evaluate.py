"""Dataset evaluation: sliding-window predictions accumulated into one confusion matrix (ignore 255)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.utils.data import Dataset

from otseg.data.classes import ZeroShotSplit
from otseg.engine.metrics import ConfusionMatrix, SegmentationMetrics
from otseg.modeling.segmentor import OTSeg
from otseg.predictor import InferenceSettings, OTSegPredictor
from otseg.utils.progress import progress_bar

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(
    model: OTSeg,
    dataset: Dataset,
    split: ZeroShotSplit,
    *,
    settings: InferenceSettings | None = None,
    calibrate_seen: bool = True,
    max_images: int | None = None,
    device: str | torch.device = "cpu",
    show_progress: bool = True,
) -> SegmentationMetrics:
    """Segment every image against all of the split's classes and score it.

    Under ``torch.distributed`` each process takes every ``world_size``-th image and the confusion matrices are
    summed, so every process returns the same metrics.

    Args:
        model: The segmentor.
        dataset: Items ``{"image": uint8 (3, H, W), "label": int64 (H, W)}`` with labels indexing the split's
            classes (255 ignored).
        split: Class names and the seen/unseen partition.
        settings: Test resize, sliding-window and precision settings (default: the paper's VOC/COCO ones).
        calibrate_seen: Lower the seen classes' probabilities by the model's ``seen_bias`` (the inductive
            zero-shot protocol); off for transductive and fully supervised models.
        max_images: Evaluate only the first images (quick checks).
        device: Device to run on.
        show_progress: Show a progress bar (on the first process).

    Returns:
        The :class:`~otseg.engine.metrics.SegmentationMetrics` (mIoU, mIoU(S), mIoU(U), hIoU, ...).
    """
    predictor = OTSegPredictor(model, settings, device=str(device))
    predictor.set_classes(split.class_names, seen=split.seen_names if (calibrate_seen and split.unseen) else None)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    count = len(dataset) if max_images is None else min(max_images, len(dataset))
    matrix = ConfusionMatrix(split.num_classes, device=device)
    indices = range(rank, count, world)
    for i in progress_bar(indices, "evaluating", enabled=show_progress and rank == 0):
        item = dataset[i]
        label = item["label"].to(device)
        probs = predictor.predict_torch(item["image"][None], output_size=tuple(label.shape))
        matrix.update(probs.argmax(1)[0], label)
    matrix.all_reduce()
    return matrix.compute(split)
