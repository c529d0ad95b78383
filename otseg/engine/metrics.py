"""Dataset-level segmentation metrics from one confusion matrix: IoU, accuracy, and the zero-shot summary.

Conventions (those of mmsegmentation's ``IoUMetric``, on a matrix summed over all images, label 255 ignored):

- ``IoU_c = TP / (TP + FP + FN)`` and ``Acc_c = TP / (TP + FN)``, in percent.
- ``IoU_c`` is NaN when class ``c`` is in neither the labels nor the predictions; ``Acc_c`` is NaN when ``c`` is
  not in the labels.
- ``mIoU`` and ``mAcc`` average over the classes present in the labels (NaN-mean). A class that is predicted but
  never labelled keeps ``IoU = 0`` in the per-class table without entering the mean by default; pass
  ``average_over="union"`` to count it as mmseg's NaN-mean does. Both agree whenever every class occurs in the
  labels, as on the full benchmark validation sets.
- ``pAcc = sum TP / number of labelled pixels``.
- With a zero-shot split: ``mIoU(S)`` and ``mIoU(U)`` average the same per-class IoUs over the seen and unseen
  classes, and ``hIoU = 2 S U / (S + U)`` (0 when both are 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor

from otseg.data.classes import IGNORE_INDEX, ZeroShotSplit

__all__ = ["ConfusionMatrix", "SegmentationMetrics", "harmonic_iou", "print_metrics"]


def harmonic_iou(seen: float, unseen: float) -> float:
    """``hIoU = 2 S U / (S + U)``; 0 when both are 0, NaN when either is NaN."""
    if math.isnan(seen) or math.isnan(unseen):
        return math.nan
    total = seen + unseen
    return 0.0 if total == 0 else 2.0 * seen * unseen / total


def _nan_to_none(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else x


@dataclass(frozen=True)
class SegmentationMetrics:
    """Metrics of one evaluation, all in percent (0-100).

    Attributes:
        class_names: The ``K`` class names.
        iou: Per-class IoU ``(K,)``, NaN for classes absent from labels and predictions.
        acc: Per-class accuracy (recall) ``(K,)``, NaN for classes absent from the labels.
        pixels: Labelled pixels per class ``(K,)``.
        pacc: Pixel accuracy.
        macc: Mean class accuracy.
        miou: Mean IoU.
        miou_seen: Mean IoU over the seen classes (None without a split).
        miou_unseen: Mean IoU over the unseen classes (None without a split or when it has no unseen classes).
        hiou: Harmonic mean of ``miou_seen`` and ``miou_unseen`` (None when ``miou_unseen`` is).
        unseen: Indices of the unseen classes (None without a split).
    """

    class_names: tuple[str, ...]
    iou: tuple[float, ...]
    acc: tuple[float, ...]
    pixels: tuple[int, ...]
    pacc: float
    macc: float
    miou: float
    miou_seen: float | None = None
    miou_unseen: float | None = None
    hiou: float | None = None
    unseen: tuple[int, ...] | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict: the summary numbers and a ``per_class`` list; NaN becomes ``None``."""
        unseen = set(self.unseen or ())
        return {
            "miou": _nan_to_none(self.miou),
            "pacc": _nan_to_none(self.pacc),
            "macc": _nan_to_none(self.macc),
            "miou_seen": _nan_to_none(self.miou_seen),
            "miou_unseen": _nan_to_none(self.miou_unseen),
            "hiou": _nan_to_none(self.hiou),
            "per_class": [
                {
                    "name": name,
                    "iou": _nan_to_none(self.iou[k]),
                    "acc": _nan_to_none(self.acc[k]),
                    "pixels": self.pixels[k],
                    "unseen": k in unseen,
                }
                for k, name in enumerate(self.class_names)
            ],
        }


class ConfusionMatrix:
    """A ``(K, K)`` confusion matrix accumulated over a dataset; rows are labels, columns predictions.

    The matrix lives on the device of the tensors given to :meth:`update`; sum it across processes with
    :meth:`all_reduce` (or combine matrices with :meth:`merge`) before :meth:`compute`.

    Args:
        num_classes: Number of classes ``K``.
        device: Initial device of the matrix.

    Example:
        >>> cm = ConfusionMatrix(2)
        >>> cm.update(torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 0, 255]))
        >>> cm.matrix.tolist()
        [[1, 1], [0, 1]]
    """

    def __init__(self, num_classes: int, device: torch.device | str | None = None) -> None:
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}.")
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def __repr__(self) -> str:
        return f"ConfusionMatrix(num_classes={self.num_classes}, pixels={int(self.matrix.sum())})"

    def reset(self) -> None:
        """Set every count to 0."""
        self.matrix.zero_()

    def update(self, pred: Tensor, label: Tensor, ignore_index: int = IGNORE_INDEX) -> None:
        """Add a batch of predictions.

        Args:
            pred: Predicted class indices, any shape, values in ``[0, K)`` where the label is not ignored.
            label: Ground-truth indices of the same shape, values in ``[0, K)`` or ``ignore_index``.
            ignore_index: Label value whose pixels are skipped.

        Raises:
            ValueError: Shapes differ, a tensor is not integer, or a value is out of range.
        """
        if pred.shape != label.shape:
            raise ValueError(
                f"pred {tuple(pred.shape)} and label {tuple(label.shape)} must have the same shape; resize the "
                "prediction to the label size (nearest for indices, or bilinear on the logits) before scoring."
            )
        for name, t in (("pred", pred), ("label", label)):
            if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
                raise ValueError(f"{name} must hold integer class indices, got dtype {t.dtype} (take argmax first).")
        k = self.num_classes
        label = label.reshape(-1).long()
        pred = pred.reshape(-1).long().to(label.device)
        keep = label != ignore_index
        label, pred = label[keep], pred[keep]
        for name, t in (("label", label), ("pred", pred)):
            bad = (t < 0) | (t >= k)
            if bool(bad.any()):
                values = torch.unique(t[bad])[:10].tolist()
                extra = f" other than the ignore value {ignore_index}" if name == "label" else ""
                raise ValueError(
                    f"{name} values {values} are outside [0, {k}){extra}; check num_classes and the label "
                    "convention (reduce_zero_label, inductive remapping)."
                )
        counts = torch.bincount(label * k + pred, minlength=k * k).reshape(k, k)
        self.matrix = self.matrix.to(label.device)
        self.matrix += counts

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix's counts to this one (in place); returns ``self``."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge a {other.num_classes}-class matrix into a {self.num_classes}-class one.")
        self.matrix += other.matrix.to(self.matrix.device)
        return self

    def all_reduce(self) -> ConfusionMatrix:
        """Sum the matrix over all processes of the default group; a no-op unless torch.distributed is initialised.

        Returns ``self``. With the NCCL backend a CPU matrix is reduced through the current CUDA device.
        """
        if not (dist.is_available() and dist.is_initialized()):
            return self
        buf = self.matrix
        if dist.get_backend() == "nccl" and buf.device.type != "cuda":
            buf = buf.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        self.matrix = buf.to(self.matrix.device)
        return self

    def compute(
        self,
        split: ZeroShotSplit | None = None,
        class_names: Sequence[str] | None = None,
        average_over: Literal["label", "union"] = "label",
    ) -> SegmentationMetrics:
        """The metrics of the accumulated counts (see the module docstring for the conventions).

        Args:
            split: Zero-shot split giving class names and the seen/unseen partition for ``miou_seen``,
                ``miou_unseen`` and ``hiou``.
            class_names: Class names when no split is given (default ``"0"``, ``"1"``, ...).
            average_over: Classes entering ``miou`` (and the seen/unseen means): ``"label"``, those present in the
                labels; ``"union"``, those present in labels or predictions (mmseg's NaN-mean).

        Returns:
            A :class:`SegmentationMetrics`.
        """
        k = self.num_classes
        if split is not None:
            if split.num_classes != k:
                raise ValueError(f"split {split.name!r} has {split.num_classes} classes, the matrix {k}.")
            class_names = split.class_names
        names = tuple(class_names) if class_names is not None else tuple(str(i) for i in range(k))
        if len(names) != k:
            raise ValueError(f"class_names has {len(names)} entries for a {k}-class matrix.")
        if average_over not in ("label", "union"):
            raise ValueError(f"average_over must be 'label' or 'union', got {average_over!r}.")

        m = self.matrix.detach().to("cpu", torch.float64)
        tp = m.diagonal()
        label_px, pred_px = m.sum(1), m.sum(0)
        union = label_px + pred_px - tp
        nan = torch.tensor(math.nan, dtype=torch.float64)
        iou = torch.where(union > 0, 100 * tp / union.clamp_min(1), nan)
        acc = torch.where(label_px > 0, 100 * tp / label_px.clamp_min(1), nan)
        counted = label_px > 0 if average_over == "label" else union > 0

        def mean_iou(classes: Sequence[int] | None = None) -> float:
            mask = counted.clone()
            if classes is not None:
                keep = torch.zeros(k, dtype=torch.bool)
                keep[list(classes)] = True
                mask &= keep
            return float(iou[mask].mean()) if bool(mask.any()) else math.nan

        total = float(label_px.sum())
        pacc = 100 * float(tp.sum()) / total if total > 0 else math.nan
        present_acc = acc[label_px > 0]
        macc = float(present_acc.mean()) if present_acc.numel() else math.nan
        miou_seen = miou_unseen = hiou = None
        if split is not None:
            miou_seen = mean_iou(split.seen)
            if split.unseen:
                miou_unseen = mean_iou(split.unseen)
                hiou = harmonic_iou(miou_seen, miou_unseen)
        return SegmentationMetrics(
            class_names=names,
            iou=tuple(iou.tolist()),
            acc=tuple(acc.tolist()),
            pixels=tuple(int(x) for x in label_px.tolist()),
            pacc=pacc,
            macc=macc,
            miou=mean_iou(),
            miou_seen=miou_seen,
            miou_unseen=miou_unseen,
            hiou=hiou,
            unseen=None if split is None else split.unseen,
        )


def _fmt(x: float | None) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.2f}"


def print_metrics(
    metrics: SegmentationMetrics,
    *,
    per_class: bool = True,
    title: str = "Segmentation metrics",
    console: Any = None,
) -> None:
    """Print a summary table and, optionally, a per-class table with rich.

    Args:
        metrics: The metrics to show.
        per_class: Also print IoU, accuracy and labelled pixels of every class.
        title: Title of the summary table.
        console: A ``rich.console.Console`` (default: a new one on stdout).
    """
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    summary = Table(title=title)
    columns = [("mIoU", metrics.miou), ("pAcc", metrics.pacc), ("mAcc", metrics.macc)]
    if metrics.unseen is not None:
        columns.append(("mIoU(S)", metrics.miou_seen))
        if metrics.miou_unseen is not None:
            columns += [("mIoU(U)", metrics.miou_unseen), ("hIoU", metrics.hiou)]
    for name, _ in columns:
        summary.add_column(name, justify="right")
    summary.add_row(*(_fmt(v) for _, v in columns))
    console.print(summary)
    if not per_class:
        return
    table = Table(title="Per class")
    table.add_column("#", justify="right")
    table.add_column("class")
    if metrics.unseen is not None:
        table.add_column("split")
    table.add_column("IoU", justify="right")
    table.add_column("Acc", justify="right")
    table.add_column("pixels", justify="right")
    unseen = set(metrics.unseen or ())
    for k, name in enumerate(metrics.class_names):
        row = [str(k), name]
        if metrics.unseen is not None:
            row.append("[bold magenta]unseen[/]" if k in unseen else "seen")
        row += [_fmt(metrics.iou[k]), _fmt(metrics.acc[k]), str(metrics.pixels[k])]
        table.add_row(*row)
    console.print(table)
