"""The training and validation sets of a run: a benchmark folder or the synthetic world, from explicit arguments."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from otseg.data.classes import ZeroShotSplit
from otseg.data.datasets import build_dataset
from otseg.data.synthetic import SyntheticWorld, diagonal_split
from otseg.data.synthetic_dataset import SyntheticSegmentationDataset

__all__ = ["SYNTHETIC_COUNTS", "DataSources", "build_sources", "synthetic_sources"]

SYNTHETIC_COUNTS: dict[str, Any] = {"train_images": 2000, "val_images": 200, "num_unseen": None}
"""Options of a synthetic run beyond :class:`~otseg.data.synthetic.SyntheticWorld`'s, with their defaults."""


@dataclass(frozen=True)
class DataSources:
    """Training and validation sets and the zero-shot split their labels index."""

    train: Dataset
    val: Dataset
    split: ZeroShotSplit


def synthetic_sources(options: Mapping[str, Any], setting: str = "inductive") -> DataSources:
    """Datasets of the synthetic world.

    Training images show seen classes only (all classes outside the inductive setting); every validation image
    shows an unseen class.

    Args:
        options: :class:`~otseg.data.synthetic.SyntheticWorld` arguments plus ``train_images``, ``val_images`` and
            ``num_unseen`` (unseen classes along the grid's diagonals; default one diagonal).
        setting: ``"inductive"``, ``"transductive"`` or ``"fully"``.
    """
    opts = {**SYNTHETIC_COUNTS, **options}
    counts = {k: opts.pop(k) for k in SYNTHETIC_COUNTS}
    try:
        world = SyntheticWorld(**opts)
    except TypeError as err:
        raise ValueError(f"bad synthetic world options {sorted(options)}: {err}.") from None
    split = diagonal_split(world, counts["num_unseen"])
    val = SyntheticSegmentationDataset.for_split(world, split, "val", counts["val_images"])
    if setting == "inductive":
        train = SyntheticSegmentationDataset.for_split(world, split, "train", counts["train_images"])
    else:
        train = SyntheticSegmentationDataset(world, counts["train_images"], stream=0, zero_shot_split=split)
    return DataSources(train=train, val=val, split=split)


def build_sources(
    dataset: str,
    data_root: str | Path | None,
    *,
    setting: str = "inductive",
    synthetic: Mapping[str, Any] | None = None,
    **dataset_options: Any,
) -> DataSources:
    """The datasets of a run.

    Args:
        dataset: ``"synthetic"`` or a name of :func:`~otseg.data.datasets.build_dataset`.
        data_root: The dataset's root folder (unused for the synthetic world).
        setting: ``"inductive"``, ``"transductive"`` or ``"fully"`` (which classes the synthetic training shows).
        synthetic: Options of the synthetic world (see :func:`synthetic_sources`).
        **dataset_options: Options of the dataset (``aug``, ``strict_labels``).
    """
    if dataset == "synthetic":
        return synthetic_sources(synthetic or {}, setting)
    if data_root is None:
        raise ValueError(
            f"dataset {dataset!r} needs a data root: --set data_root=<folder> (training) or --data-root (eval)."
        )
    train = build_dataset(dataset, data_root, "train", **dataset_options)
    val = build_dataset(dataset, data_root, "val", **{k: v for k, v in dataset_options.items() if k != "aug"})
    return DataSources(train=train, val=val, split=train.zero_shot_split)
