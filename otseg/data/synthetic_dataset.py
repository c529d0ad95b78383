"""Datasets of the synthetic world, deterministic per index, and a writer of any dataset in the folder layout.

Example:
    >>> world = SyntheticWorld(seed=0)
    >>> split = diagonal_split(world)
    >>> train = SyntheticSegmentationDataset.for_split(world, split, "train", length=1000)
    >>> val = SyntheticSegmentationDataset.for_split(world, split, "val", length=200)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from otseg.data.classes import IGNORE_INDEX, ZeroShotSplit
from otseg.data.datasets import JointTransform, LabelledDataset
from otseg.data.synthetic import SyntheticSample, SyntheticWorld

__all__ = ["SyntheticSegmentationDataset", "write_folder_dataset"]


class SyntheticSegmentationDataset(LabelledDataset):
    """A fixed-length dataset of synthetic images, deterministic per index.

    Items are ``{"image": uint8 (3, H, W), "label": int64 (H, W), "name": str, "caption": str}``, the format of
    :class:`~otseg.data.datasets.SegmentationDataset` plus the caption.

    Args:
        world: The synthetic world.
        length: Number of images.
        classes: Classes objects are drawn from (default all); see :meth:`SyntheticWorld.render`.
        require: Classes of which every image shows at least one (default none).
        stream: Image stream; use different streams for training and evaluation.
        zero_shot_split: Split exposed as :attr:`zero_shot_split` (default: every class seen).
        transform: Optional joint ``transform(image, label)``.
    """

    def __init__(
        self,
        world: SyntheticWorld,
        length: int,
        *,
        classes: Sequence[int] | None = None,
        require: Sequence[int] | None = None,
        stream: int = 0,
        zero_shot_split: ZeroShotSplit | None = None,
        transform: JointTransform | None = None,
    ) -> None:
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}.")
        if zero_shot_split is not None and zero_shot_split.class_names != world.class_names:
            raise ValueError("zero_shot_split.class_names must be the world's class_names (build it from the world).")
        self.world = world
        self.length = int(length)
        self.classes = None if classes is None else tuple(int(k) for k in classes)
        self.require = None if require is None else tuple(int(k) for k in require)
        self.stream = int(stream)
        self.zero_shot_split = zero_shot_split or ZeroShotSplit("synthetic", world.class_names, ())
        self.transform = transform
        self.split = "train" if self.require is None else "val"

    @classmethod
    def for_split(
        cls,
        world: SyntheticWorld,
        split: ZeroShotSplit,
        subset: str,
        length: int,
        transform: JointTransform | None = None,
    ) -> SyntheticSegmentationDataset:
        """The training or evaluation set of a zero-shot split.

        ``subset="train"``: images of seen classes only (stream 0). ``subset="val"``: images of any classes, each
        showing at least one unseen class (stream 1; all classes when the split has no unseen ones).
        """
        if subset == "train":
            return cls(world, length, classes=split.seen, stream=0, zero_shot_split=split, transform=transform)
        if subset == "val":
            require = split.unseen or None
            return cls(world, length, require=require, stream=1, zero_shot_split=split, transform=transform)
        raise ValueError(f"subset must be 'train' or 'val', got {subset!r}.")

    def __len__(self) -> int:
        return self.length

    def sample(self, index: int) -> SyntheticSample:
        """The raw :class:`SyntheticSample` behind item ``index``."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of {self.length} images.")
        return self.world.render(index, classes=self.classes, require=self.require, stream=self.stream)

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.sample(index)
        image = torch.from_numpy(np.ascontiguousarray(s.image.transpose(2, 0, 1)))
        label = torch.from_numpy(s.label.astype(np.int64))
        if self.transform is not None:
            image, label = self.transform(image, label)
        return {"image": image, "label": label, "name": f"synthetic_{self.stream}_{index:06d}", "caption": s.caption}


def write_folder_dataset(dataset: Dataset, root: str | Path, *, overwrite: bool = False) -> Path:
    """Save a dataset in the :class:`~otseg.data.datasets.FolderDataset` layout.

    Writes ``root/images/<name>.png`` (RGB), ``root/labels/<name>.png`` (8-bit class indices, 255 = ignore),
    ``root/classes.txt``, ``root/unseen.txt`` when the dataset's ``zero_shot_split`` has unseen classes, and
    ``root/captions.tsv`` (``name<TAB>caption``) when items carry captions. Read it back with
    ``FolderDataset.from_root(root)``.

    Args:
        dataset: A dataset with ``class_names`` whose items are ``{"image", "label", "name"[, "caption"]}``.
        root: Output folder.
        overwrite: Allow writing into a folder that already holds images.

    Returns:
        ``root`` as a Path.
    """
    root = Path(root).expanduser()
    images_dir, labels_dir = root / "images", root / "labels"
    if images_dir.is_dir() and any(images_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{images_dir} already holds files; pass overwrite=True or choose an empty folder.")
    images_dir.mkdir(parents=True, exist_ok=True)
    labels_dir.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(dataset.class_names) + "\n", encoding="utf-8")
    split = getattr(dataset, "zero_shot_split", None)
    if split is not None and split.unseen:
        (root / "unseen.txt").write_text("\n".join(split.unseen_names) + "\n", encoding="utf-8")
    captions = []
    for i in range(len(dataset)):
        item = dataset[i]
        image, label = item["image"], item["label"]
        if image.dtype != torch.uint8 or label.min() < 0 or label.max() > IGNORE_INDEX:
            raise ValueError(f"item {i} is not uint8 image / labels in 0..255; write the untransformed dataset.")
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(images_dir / f"{item['name']}.png")
        Image.fromarray(label.to(torch.uint8).numpy()).save(labels_dir / f"{item['name']}.png")
        if "caption" in item:
            captions.append(f"{item['name']}\t{item['caption']}")
    if captions:
        (root / "captions.tsv").write_text("\n".join(captions) + "\n", encoding="utf-8")
    return root
