"""The engine: training (:func:`train`, configured by :class:`TrainConfig`), dataset evaluation and its metrics.

Modules: ``config`` (the run's settings and schedule), ``trainer`` (the loop), ``run_dir`` (the output folder),
``state`` (checkpoints and resume), ``distributed`` (processes and Ctrl-C), ``sampling`` (data stream and
pseudo-labels), ``optim`` (optimiser and precision), ``evaluate`` and ``metrics``, ``stats`` (a model's size
and cost).
"""

from otseg.engine.config import TrainConfig, lr_at
from otseg.engine.evaluate import evaluate
from otseg.engine.metrics import ConfusionMatrix, SegmentationMetrics, harmonic_iou, print_metrics
from otseg.engine.run_dir import RunFolderError
from otseg.engine.trainer import TrainingDiverged, train

__all__ = [
    "ConfusionMatrix",
    "RunFolderError",
    "SegmentationMetrics",
    "TrainConfig",
    "TrainingDiverged",
    "evaluate",
    "harmonic_iou",
    "lr_at",
    "print_metrics",
    "train",
]
