"""Segmentation metrics: a confusion matrix, mIoU/pAcc/mAcc and the zero-shot summary mIoU(S), mIoU(U), hIoU."""

from otseg.evaluation.metrics import ConfusionMatrix, SegmentationMetrics, harmonic_iou, print_metrics

__all__ = ["ConfusionMatrix", "SegmentationMetrics", "harmonic_iou", "print_metrics"]
