"""The datasets of a training or evaluation run, from its config: benchmark folders or the synthetic world."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset

from otseg.data.classes import ZeroShotSplit
from otseg.data.datasets import build_dataset
from otseg.data.synthetic import SyntheticSegmentationDataset, SyntheticWorld, diagonal_split

__all__ = ["RunData", "build_run_data", "synthetic_run_data"]

SYNTHETIC_DEFAULTS: dict[str, Any] = {"train_images": 2000, "val_images": 200, "num_unseen": None}


@dataclass(frozen=True)
class RunData:
    """Training and validation sets and the zero-shot split their labels index."""

    train: Dataset
    val: Dataset
    split: ZeroShotSplit


def synthetic_run_data(options: dict[str, Any], setting: str = "inductive") -> RunData:
    """Datasets of the synthetic colour x shape world.

    Training images show seen classes only (all classes outside the inductive setting); every validation image
    shows an unseen class.

    Args:
        options: :class:`~otseg.data.synthetic.SyntheticWorld` arguments plus ``train_images``, ``val_images`` and
            ``num_unseen`` (unseen classes along the grid's diagonals; default one diagonal).
        setting: ``"inductive"``, ``"transductive"`` or ``"fully"``.
    """
    opts = {**SYNTHETIC_DEFAULTS, **options}
    counts = {k: opts.pop(k) for k in SYNTHETIC_DEFAULTS}
    world = SyntheticWorld(**opts)
    split = diagonal_split(world, counts["num_unseen"])
    val = SyntheticSegmentationDataset.for_split(world, split, "val", counts["val_images"])
    if setting == "inductive":
        train = SyntheticSegmentationDataset.for_split(world, split, "train", counts["train_images"])
    else:
        train = SyntheticSegmentationDataset(world, counts["train_images"], stream=0, zero_shot_split=split)
    return RunData(train=train, val=val, split=split)


def build_run_data(cfg: Any) -> RunData:
    """Datasets for a :class:`~otseg.train.TrainConfig` (``dataset``, ``data_root``, ``synthetic``, ``setting``)."""
    if cfg.dataset == "synthetic":
        return synthetic_run_data(cfg.synthetic, cfg.setting)
    if cfg.data_root is None:
        raise ValueError(f"dataset {cfg.dataset!r} needs data_root=<folder>; see the dataset's preparation guide.")
    train = build_dataset(cfg.dataset, cfg.data_root, "train")
    val = build_dataset(cfg.dataset, cfg.data_root, "val")
    return RunData(train=train, val=val, split=train.zero_shot_split)
