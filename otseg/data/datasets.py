"""Segmentation datasets in mmsegmentation's on-disk layouts, described by one table.

Every dataset yields dicts ``{"image": uint8 (3, H, W) RGB, "label": int64 (H, W), "name": str}`` where label
values are class indices ``[0, K)`` in the order of :mod:`otseg.data.classes` and 255 is "ignore", after an
optional joint ``transform(image, label) -> (image, label)``.

Layouts (``root`` may be the folder that holds the top-level dataset folder, or that folder itself), one
:class:`~otseg.data.layouts.Layout` each in :data:`~otseg.data.layouts.LAYOUTS`:

- VOC 2012: ``VOCdevkit/VOC2012/{JPEGImages, SegmentationClass, SegmentationClassAug,
  ImageSets/Segmentation/{train,trainaug,val}.txt}``
- PASCAL Context: ``VOCdevkit/VOC2010/{JPEGImages, SegmentationClassContext,
  ImageSets/SegmentationContext/{train,val}.txt}``
- COCO-Stuff 164K: ``coco_stuff164k/{images,annotations}/{train2017,val2017}``, labels ``*_labelTrainIds.png``
- ADE20K: ``ADEChallengeData2016/{images,annotations}/{training,validation}`` (flat ``images/`` and
  ``annotations/`` folders, as in the sceneparsing sample, are read too)
- any other: :class:`FolderDataset`, ``images/``, ``labels/`` (same stems, PNG) and ``classes.txt``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from otseg.data.classes import IGNORE_INDEX, ZeroShotSplit, get_split, normalize_name
from otseg.data.layouts import LAYOUTS, Layout
from otseg.data.readers import IMAGE_SUFFIXES, load_image, load_label, read_class_names

__all__ = [
    "ADE20KDataset",
    "BenchmarkDataset",
    "COCOStuffDataset",
    "ContextDataset",
    "FolderDataset",
    "JointTransform",
    "LabelledDataset",
    "SegmentationDataset",
    "VOCDataset",
    "build_dataset",
    "list_datasets",
]

JointTransform = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
"""``(image uint8 (3, H, W), label int64 (H, W)) -> (image, label)``."""


# ---------------------------------------------------------------------------------------------------------------
# Pairing images with labels


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _pair_by_stem(images_dir: Path, labels_dir: Path, label_suffix: str, what: str) -> list[tuple[Path, Path]]:
    """Pair every image of ``images_dir`` with ``labels_dir / (stem + label_suffix)``; raise if any is missing."""
    images = _list_images(images_dir)
    if not images:
        raise FileNotFoundError(f"{what}: no images ({', '.join(IMAGE_SUFFIXES)}) found in {images_dir}.")
    pairs = [(p, labels_dir / f"{p.stem}{label_suffix}") for p in images]
    missing = [str(lab) for _, lab in pairs if not lab.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{what}: {len(missing)} of {len(pairs)} images in {images_dir} have no label file, e.g. {missing[:3]}; "
            f"each image needs a label named <image stem>{label_suffix} in {labels_dir}."
        )
    return pairs


def _pair_by_ids(split_file: Path, image_dir: Path, label_dir: Path, what: str, guide: str) -> list[tuple[Path, Path]]:
    """Pair ``<id>.jpg`` with ``<id>.png`` for every id listed in ``split_file``."""
    if not split_file.is_file():
        raise FileNotFoundError(f"{what}: split file {split_file} not found. {guide}")
    ids = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
    if not ids:
        raise ValueError(f"{what}: split file {split_file} is empty; it should list one image id per line.")
    pairs = [(image_dir / f"{i}.jpg", label_dir / f"{i}.png") for i in ids]
    missing = [str(p) for pair in pairs for p in pair if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{what}: {len(missing)} files listed by the split are missing, e.g. {missing[:3]}; the split file and "
            f"the {image_dir.name}/ and {label_dir.name}/ folders do not match (incomplete download or extraction?)."
        )
    return pairs


# ---------------------------------------------------------------------------------------------------------------
# Datasets


class LabelledDataset(Dataset):
    """A dataset whose labels index the classes of its :attr:`zero_shot_split` (set by the subclass)."""

    zero_shot_split: ZeroShotSplit

    @property
    def class_names(self) -> tuple[str, ...]:
        """The ``K`` class names in label-index order."""
        return self.zero_shot_split.class_names

    @property
    def num_classes(self) -> int:
        """Number of classes ``K``."""
        return self.zero_shot_split.num_classes


class SegmentationDataset(LabelledDataset):
    """Image/label pairs with a class list; the base of every dataset read from files.

    Labels are read as stored, reduced when ``reduce_zero_label`` (0 -> 255, ``k`` -> ``k - 1``, 255 stays 255),
    then checked: a value outside ``[0, K)`` other than 255 raises a ValueError naming the file and the values,
    or becomes 255 when ``strict_labels=False``.

    Args:
        samples: ``(image_path, label_path)`` pairs.
        zero_shot_split: Class names and unseen classes of the dataset.
        split: Which subset the samples are (``"train"``, ``"val"``, ...), informative only.
        reduce_zero_label: Whether file label 0 is background/"other" to be ignored.
        transform: Optional joint ``transform(image, label) -> (image, label)``.
        strict_labels: Raise on out-of-range label values (True) or map them to 255 (False).
        max_pixels: Largest image or label read, in pixels (default
            :data:`~otseg.data.readers.MAX_PIXELS`); a larger file raises
            :class:`~otseg.data.readers.ImageTooLargeError` naming it, before it is decoded.

    Attributes:
        class_names: The ``K`` class names in label-index order.
        num_classes: ``K``.
        zero_shot_split: The :class:`~otseg.data.classes.ZeroShotSplit` of the dataset.
        split: The subset name.
        samples: The ``(image_path, label_path)`` pairs.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str | Path, str | Path]],
        zero_shot_split: ZeroShotSplit,
        *,
        split: str = "val",
        reduce_zero_label: bool = False,
        transform: JointTransform | None = None,
        strict_labels: bool = True,
        max_pixels: int | None = None,
    ) -> None:
        self.samples = [(Path(i), Path(lab)) for i, lab in samples]
        self.zero_shot_split = zero_shot_split
        self.split = split
        self.reduce_zero_label = reduce_zero_label
        self.transform = transform
        self.strict_labels = strict_labels
        self.max_pixels = max_pixels
        k = zero_shot_split.num_classes
        lut = np.arange(256, dtype=np.int64)
        if reduce_zero_label:
            lut = np.where(lut == 0, IGNORE_INDEX, lut - 1)
            lut[IGNORE_INDEX] = IGNORE_INDEX
        self._lut = lut.astype(np.uint8)  # file value -> label value
        self._bad = (self._lut >= k) & (self._lut != IGNORE_INDEX)  # file values that are no class

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split={self.split!r}, {len(self)} images, {self.num_classes} classes, "
            f"reduce_zero_label={self.reduce_zero_label})"
        )

    def convert_label(self, raw: np.ndarray, path: str | Path = "<array>") -> Tensor:
        """File label values ``(H, W)`` uint8 -> int64 class indices with 255 = ignore (see the class docstring)."""
        present = np.flatnonzero(np.bincount(raw.ravel(), minlength=256))
        bad_values = present[self._bad[present]]
        label = self._lut[raw]
        if bad_values.size:
            if self.strict_labels:
                k = self.num_classes
                valid = f"0..{k} (0 = ignored background)" if self.reduce_zero_label else f"0..{k - 1}"
                raise ValueError(
                    f"{path}: label values {bad_values.tolist()} are outside the {k} classes of this dataset "
                    f"(valid values in the file: {valid} and {IGNORE_INDEX} = ignore). Check that the annotations "
                    "are class indices for this dataset, or ignore those pixels: strict_labels=False in Python, "
                    "--set strict_labels=false for otseg train, --lenient-labels for otseg eval."
                )
            label[self._bad[raw]] = IGNORE_INDEX
        return torch.from_numpy(label.astype(np.int64))

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_path, label_path = self.samples[index]
        image = load_image(image_path, self.max_pixels)
        raw = load_label(label_path, max_pixels=self.max_pixels)
        if tuple(raw.shape) != tuple(image.shape[1:]):
            raise ValueError(
                f"image {image_path} is {image.shape[2]}x{image.shape[1]} but its label {label_path} is "
                f"{raw.shape[1]}x{raw.shape[0]} (width x height); labels must have the size of their image."
            )
        label = self.convert_label(raw, label_path)
        if self.transform is not None:
            image, label = self.transform(image, label)
        return {"image": image, "label": label, "name": image_path.stem}


class BenchmarkDataset(SegmentationDataset):
    """A benchmark read through its :class:`Layout` (the subclasses set :attr:`layout`).

    Args:
        root: Folder containing the dataset's top-level folder, or a folder further down (see ``Layout.bases``).
        split: ``"train"`` or ``"val"`` (default: the layout's).
        aug: Train on the augmented label set when the layout has one and it is present (VOC's SBD, 10,582
            images instead of 1,464); a warning says when it is asked for but missing.
        transform: Optional joint transform.
        strict_labels: See :class:`SegmentationDataset`.
        max_pixels: See :class:`SegmentationDataset`.
    """

    layout: ClassVar[Layout]

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        *,
        aug: bool = True,
        transform: JointTransform | None = None,
        strict_labels: bool = True,
        max_pixels: int | None = None,
    ) -> None:
        lay = self.layout
        split = lay.default_split if split is None else split
        if split not in lay.subfolders:
            raise ValueError(f"split must be one of {list(lay.subfolders)}, got {split!r}.")
        sub = lay.subfolders[split]
        base = self._find_base(Path(root).expanduser(), lay.marker.format(sub=sub))
        image_dir, label_dir = base / lay.images.format(sub=sub), base / lay.labels.format(sub=sub)
        split_file = None if lay.split_file is None else base / lay.split_file.format(sub=sub)
        if split == "train" and aug and lay.aug_labels is not None:
            aug_file = next((base / f for f in lay.aug_split_files if (base / f).is_file()), None)
            if (base / lay.aug_labels).is_dir() and aug_file is not None:
                label_dir, split_file = base / lay.aug_labels, aug_file
            else:
                warnings.warn(
                    f"{lay.title}: aug=True but {base / lay.aug_labels} or {base / lay.aug_split_files[0]} is "
                    "missing; training on the standard labels and split file instead. Pass aug=False (training: "
                    "--set voc_aug=false) to silence this, or add the augmentation (see the dataset guide).",
                    stacklevel=2,
                )
        if lay.flat_fallback and not image_dir.is_dir() and _list_images(base / "images"):
            image_dir, label_dir = base / "images", base / "annotations"
        for folder, kind in ((image_dir, "image folder"), (label_dir, "label folder")):
            if not folder.is_dir():
                raise FileNotFoundError(f"{lay.title}: {kind} {folder} not found. {lay.guide}")
        if split_file is None:
            samples = _pair_by_stem(image_dir, label_dir, lay.label_suffix, lay.title)
        else:
            samples = _pair_by_ids(split_file, image_dir, label_dir, lay.title, lay.guide)
        super().__init__(
            samples,
            get_split(lay.split_name),
            split=split,
            reduce_zero_label=lay.reduce_zero_label,
            transform=transform,
            strict_labels=strict_labels,
            max_pixels=max_pixels,
        )
        self.root = base

    def _find_base(self, root: Path, marker: str) -> Path:
        """The first candidate base under ``root`` that contains ``marker``; a FileNotFoundError listing them."""
        lay = self.layout
        tried = [root / c if c != "." else root for c in lay.bases]
        for base in tried:
            if (base / marker).is_dir():
                return base
        looked = ", ".join(str(base / marker) for base in tried)
        raise FileNotFoundError(f"{lay.title} not found: looked for {looked}. {lay.guide}")


class VOCDataset(BenchmarkDataset):
    """PASCAL VOC 2012, 20 classes (background -> 255); training on ``SegmentationClassAug`` + ``trainaug.txt``."""

    layout = LAYOUTS["voc"]


class ContextDataset(BenchmarkDataset):
    """PASCAL Context, 59 classes (background -> 255 by ``reduce_zero_label``)."""

    layout = LAYOUTS["context"]


class COCOStuffDataset(BenchmarkDataset):
    """COCO-Stuff 164K, 171 classes from ``*_labelTrainIds.png`` (no reduction, 255 = ignore)."""

    layout = LAYOUTS["coco-stuff"]


class ADE20KDataset(BenchmarkDataset):
    """ADE20K SceneParsing, 150 classes ("other" = 0 -> 255); no unseen classes (cross-dataset evaluation)."""

    layout = LAYOUTS["ade"]


class FolderDataset(SegmentationDataset):
    """Any dataset as two folders and a class list.

    Every image in ``images_dir`` needs a label PNG with the same stem in ``labels_dir`` holding class indices
    (255 = ignore, or 0 = ignore with ``reduce_zero_label``); the class-name file lists one name per line in index
    order.

    Args:
        images_dir: Folder of images.
        labels_dir: Folder of label PNGs.
        class_names_file: Text file of class names.
        unseen_names: Names of the unseen classes (defines :attr:`zero_shot_split`); none by default.
        reduce_zero_label: Whether file value 0 means "ignore" and ``k`` is class ``k - 1``.
        split: Name of the subset, informative only.
        transform: Optional joint transform.
        strict_labels: See :class:`SegmentationDataset`.
        max_pixels: See :class:`SegmentationDataset`.
    """

    def __init__(
        self,
        images_dir: str | Path,
        labels_dir: str | Path,
        class_names_file: str | Path,
        *,
        unseen_names: Sequence[str] = (),
        reduce_zero_label: bool = False,
        split: str = "val",
        transform: JointTransform | None = None,
        strict_labels: bool = True,
        max_pixels: int | None = None,
    ) -> None:
        images_dir, labels_dir = Path(images_dir).expanduser(), Path(labels_dir).expanduser()
        names = read_class_names(Path(class_names_file).expanduser())
        for folder, kind in ((images_dir, "image"), (labels_dir, "label")):
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"{kind} folder {folder} not found; a folder dataset needs images/ and labels/ folders whose "
                    "files share stems (labels as 8-bit PNG class-index maps) and a classes.txt file."
                )
        samples = _pair_by_stem(images_dir, labels_dir, ".png", f"folder dataset {images_dir.parent}")
        zero_shot_split = ZeroShotSplit.from_names(names, unseen_names, name="folder")
        super().__init__(
            samples,
            zero_shot_split,
            split=split,
            reduce_zero_label=reduce_zero_label,
            transform=transform,
            strict_labels=strict_labels,
            max_pixels=max_pixels,
        )
        self.root = images_dir.parent

    @classmethod
    def from_root(cls, root: str | Path, split: str | None = None, **kwargs: Any) -> FolderDataset:
        """Read ``root/[split/]{images/, labels/, classes.txt[, unseen.txt]}``.

        ``root/split`` is used when it exists (else ``root``); ``unseen.txt``, one name per line, gives the unseen
        classes when present. This is the layout :func:`otseg.data.synthetic_dataset.write_folder_dataset` writes.

        Args:
            root: Dataset folder.
            split: Optional subfolder (``"train"``, ``"val"``).
            **kwargs: Passed on to :class:`FolderDataset` (``aug`` is accepted and ignored, as for every dataset
                without an augmented set).
        """
        kwargs.pop("aug", None)
        base = Path(root).expanduser()
        if split is not None and (base / split).is_dir():
            base = base / split
        if "unseen_names" not in kwargs and (base / "unseen.txt").is_file():
            kwargs["unseen_names"] = read_class_names(base / "unseen.txt")
        if split is not None:
            kwargs.setdefault("split", split)
        return cls(base / "images", base / "labels", base / "classes.txt", **kwargs)


_BUILDERS: dict[str, Callable[..., SegmentationDataset]] = {
    "voc": VOCDataset,
    "context": ContextDataset,
    "coco-stuff": COCOStuffDataset,
    "ade": ADE20KDataset,
    "folder": FolderDataset.from_root,
}


def list_datasets() -> tuple[str, ...]:
    """Names accepted by :func:`build_dataset`."""
    return tuple(_BUILDERS)


def build_dataset(
    name: str, root: str | Path, split: str = "val", transform: JointTransform | None = None, **kwargs: Any
) -> SegmentationDataset:
    """Build a dataset by name.

    Args:
        name: ``"voc"``, ``"context"``, ``"coco-stuff"``, ``"ade"`` or ``"folder"`` (see
            :meth:`FolderDataset.from_root`); case-insensitive, aliases as in :func:`~otseg.data.classes.get_split`.
        root: Dataset root folder.
        split: ``"train"`` or ``"val"``.
        transform: Optional joint ``transform(image, label)``.
        **kwargs: Dataset options (``aug``, ``strict_labels``, ``max_pixels``).

    Raises:
        ValueError: Unknown name; the message lists the valid ones.
    """
    key = normalize_name(name)
    if key not in _BUILDERS:
        raise ValueError(f"unknown dataset {name!r}; valid names are {list(_BUILDERS)}.")
    return _BUILDERS[key](root, split, transform=transform, **kwargs)
