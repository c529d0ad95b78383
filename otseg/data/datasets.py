"""Segmentation datasets in mmsegmentation's on-disk layouts.

Every dataset yields dicts ``{"image": uint8 (3, H, W) RGB, "label": int64 (H, W), "name": str}`` where label
values are class indices ``[0, K)`` in the order of :mod:`otseg.data.classes` and 255 is "ignore", after an
optional joint ``transform(image, label) -> (image, label)``.

Layouts (``root`` may be the folder that holds the top-level dataset folder, or that folder itself):

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
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from otseg.data.classes import IGNORE_INDEX, ZeroShotSplit, check_class_names, get_split, normalize_name

__all__ = [
    "ADE20KDataset",
    "COCOStuffDataset",
    "ContextDataset",
    "FolderDataset",
    "JointTransform",
    "SegmentationDataset",
    "VOCDataset",
    "build_dataset",
    "list_datasets",
    "load_image",
    "load_label",
    "read_class_names",
]

JointTransform = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
"""``(image uint8 (3, H, W), label int64 (H, W)) -> (image, label)``."""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_PREPARE_GUIDE = "mmsegmentation's dataset preparation guide (docs/en/user_guides/2_dataset_prepare.md)"


# ---------------------------------------------------------------------------------------------------------------
# Reading files


def load_image(path: str | Path) -> Tensor:
    """Read an image file as RGB.

    Grayscale and palette images are expanded to three channels, an alpha channel is dropped (colours are kept as
    stored, not composited), 16-bit and 32-bit integer images are scaled from ``0..65535`` to ``0..255`` and float
    images from ``[0, 1]`` (or clipped to ``0..255`` when their values exceed 1). EXIF orientation is not applied,
    so the image stays aligned with its label file.

    Args:
        path: Image file readable by Pillow.

    Returns:
        uint8 tensor ``(3, H, W)``.
    """
    with Image.open(path) as img:
        img.load()
        if img.mode.startswith("I") or img.mode == "F":
            arr = np.asarray(img)
            if img.mode == "F":
                arr = arr.astype(np.float64) * (255.0 if arr.size and np.nanmax(arr) <= 1.0 else 1.0)
            else:
                arr = arr.astype(np.float64) * (255.0 / 65535.0)
            arr = np.clip(np.nan_to_num(arr), 0, 255).round().astype(np.uint8)
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        else:
            arr = np.array(img if img.mode == "RGB" else img.convert("RGB"))
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def load_label(path: str | Path) -> np.ndarray:
    """Read a label file as stored (no reduction).

    Args:
        path: 8-bit single-channel PNG, mode ``"L"`` or palette ``"P"`` (whose pixel values are the palette
            indices, as in VOC's ``SegmentationClass``). 16-bit files are accepted when all values are <= 255.

    Returns:
        uint8 array ``(H, W)``.

    Raises:
        ValueError: The file is not a single-channel index map.
    """
    with Image.open(path) as img:
        mode = img.mode
        if mode in ("L", "P"):
            return np.array(img)
        if mode.startswith("I"):
            arr = np.asarray(img)
            if arr.size == 0 or (arr.min() >= 0 and arr.max() <= 255):
                return arr.astype(np.uint8)
            raise ValueError(
                f"{path}: label image holds values {int(arr.min())}..{int(arr.max())}, beyond 8 bits; labels must be "
                "class indices 0..254 with 255 = ignore."
            )
    raise ValueError(
        f"{path}: label image has mode {mode!r}; expected an 8-bit single-channel PNG (mode 'L', or 'P' whose "
        "palette indices are the classes). Colour-coded RGB masks must be converted to class-index maps first."
    )


def read_class_names(path: str | Path) -> tuple[str, ...]:
    """Read a class-name file: one name per line, in label-index order (blank lines at the end are ignored).

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: A name is empty or repeated.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class-name file not found at {path}; write one class name per line, in index order.")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    empty = [i + 1 for i, line in enumerate(lines) if not line]
    if not lines or empty:
        where = f"lines {empty} are empty" if lines else "it holds no names"
        raise ValueError(f"{path}: {where}; give exactly one non-empty class name per line, in label-index order.")
    check_class_names(lines, str(path))
    return tuple(lines)


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


def _require_dir(folder: Path, what: str, kind: str, guide: str) -> None:
    """Raise a FileNotFoundError naming the expected ``folder`` and how to prepare the dataset."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{what}: {kind} {folder} not found. {guide}")


def _find_base(root: str | Path, candidates: Sequence[str], marker: str, what: str, guide: str) -> Path:
    """The first ``root / candidate`` that contains ``marker``; a FileNotFoundError listing them otherwise."""
    root = Path(root).expanduser()
    tried = [root / c if c != "." else root for c in candidates]
    for base in tried:
        if (base / marker).is_dir():
            return base
    looked = ", ".join(str(base / marker) for base in tried)
    raise FileNotFoundError(f"{what} not found: looked for {looked}. {guide}")


def _read_ids(split_file: Path, what: str, guide: str) -> list[str]:
    if not split_file.is_file():
        raise FileNotFoundError(f"{what}: split file {split_file} not found. {guide}")
    ids = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
    if not ids:
        raise ValueError(f"{what}: split file {split_file} is empty; it should list one image id per line.")
    return ids


def _pairs_from_ids(ids: Sequence[str], image_dir: Path, label_dir: Path, what: str) -> list[tuple[Path, Path]]:
    pairs = [(image_dir / f"{i}.jpg", label_dir / f"{i}.png") for i in ids]
    missing = [str(p) for pair in pairs for p in pair if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{what}: {len(missing)} files listed by the split are missing, e.g. {missing[:3]}; the split file and "
            f"the {image_dir.name}/ and {label_dir.name}/ folders do not match (incomplete download or extraction?)."
        )
    return pairs


def _check_split(split: str, allowed: Sequence[str]) -> str:
    if split not in allowed:
        raise ValueError(f"split must be one of {list(allowed)}, got {split!r}.")
    return split


# ---------------------------------------------------------------------------------------------------------------
# Datasets


class SegmentationDataset(Dataset):
    """Image/label pairs with a class list; the base of every dataset here.

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
    ) -> None:
        self.samples = [(Path(i), Path(lab)) for i, lab in samples]
        self.zero_shot_split = zero_shot_split
        self.split = split
        self.reduce_zero_label = reduce_zero_label
        self.transform = transform
        self.strict_labels = strict_labels
        k = zero_shot_split.num_classes
        lut = np.arange(256, dtype=np.int64)
        if reduce_zero_label:
            lut = np.where(lut == 0, IGNORE_INDEX, lut - 1)
            lut[IGNORE_INDEX] = IGNORE_INDEX
        self._lut = lut.astype(np.uint8)  # file value -> label value
        self._bad = (self._lut >= k) & (self._lut != IGNORE_INDEX)  # file values that are no class

    @property
    def class_names(self) -> tuple[str, ...]:
        """The ``K`` class names in label-index order."""
        return self.zero_shot_split.class_names

    @property
    def num_classes(self) -> int:
        """Number of classes ``K``."""
        return self.zero_shot_split.num_classes

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
                    "are class indices for this dataset, or pass strict_labels=False to ignore those pixels."
                )
            label[self._bad[raw]] = IGNORE_INDEX
        return torch.from_numpy(label.astype(np.int64))

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_path, label_path = self.samples[index]
        image = load_image(image_path)
        raw = load_label(label_path)
        if tuple(raw.shape) != tuple(image.shape[1:]):
            raise ValueError(
                f"image {image_path} is {image.shape[2]}x{image.shape[1]} but its label {label_path} is "
                f"{raw.shape[1]}x{raw.shape[0]} (width x height); labels must have the size of their image."
            )
        label = self.convert_label(raw, label_path)
        if self.transform is not None:
            image, label = self.transform(image, label)
        return {"image": image, "label": label, "name": image_path.stem}


_VOC_GUIDE = (
    "Extract VOCtrainval_11-May-2012.tar so that <root>/VOCdevkit/VOC2012/{JPEGImages, SegmentationClass, "
    "ImageSets/Segmentation/{train,val}.txt} exist; for the augmented training set add SegmentationClassAug/ and "
    f"ImageSets/Segmentation/trainaug.txt built from SBD as in {_PREPARE_GUIDE} (tools/dataset_converters/voc_aug.py)."
)


class VOCDataset(SegmentationDataset):
    """PASCAL VOC 2012, 20 classes (background -> 255 by ``reduce_zero_label``).

    Training uses ``SegmentationClassAug`` + ``ImageSets/Segmentation/trainaug.txt`` (10,582 images; mmseg's
    ``aug.txt`` is accepted too) when ``aug=True`` and both exist, else ``SegmentationClass`` + ``train.txt``
    (1,464 images, with a warning when ``aug=True``). Validation uses ``SegmentationClass`` + ``val.txt``.

    Args:
        root: Folder containing ``VOCdevkit``, or ``VOCdevkit``, or ``VOCdevkit/VOC2012`` itself.
        split: ``"train"`` or ``"val"``.
        aug: Use the SBD-augmented training set when present.
        transform: Optional joint transform.
        strict_labels: See :class:`SegmentationDataset`.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        aug: bool = True,
        *,
        transform: JointTransform | None = None,
        strict_labels: bool = True,
    ) -> None:
        what = "PASCAL VOC 2012"
        _check_split(split, ("train", "val"))
        base = _find_base(root, ("VOCdevkit/VOC2012", "VOC2012", "."), "JPEGImages", what, _VOC_GUIDE)
        sets = base / "ImageSets" / "Segmentation"
        label_dir, split_file = base / "SegmentationClass", sets / f"{split}.txt"
        if split == "train" and aug:
            aug_file = next((f for f in (sets / "trainaug.txt", sets / "aug.txt") if f.is_file()), None)
            if (base / "SegmentationClassAug").is_dir() and aug_file is not None:
                label_dir, split_file = base / "SegmentationClassAug", aug_file
            else:
                warnings.warn(
                    f"{what}: aug=True but {base / 'SegmentationClassAug'} or {sets / 'trainaug.txt'} is missing; "
                    "training on SegmentationClass + train.txt (1,464 images instead of 10,582). "
                    "Pass aug=False to silence this, or add the SBD augmentation (see the VOCDataset docstring).",
                    stacklevel=2,
                )
        _require_dir(label_dir, what, "label folder", _VOC_GUIDE)
        ids = _read_ids(split_file, what, _VOC_GUIDE)
        samples = _pairs_from_ids(ids, base / "JPEGImages", label_dir, what)
        super().__init__(
            samples,
            get_split("voc"),
            split=split,
            reduce_zero_label=True,
            transform=transform,
            strict_labels=strict_labels,
        )
        self.root = base


_CONTEXT_GUIDE = (
    "Extract VOCtrainval_03-May-2010.tar so that <root>/VOCdevkit/VOC2010/JPEGImages exists, then build "
    "SegmentationClassContext/ and ImageSets/SegmentationContext/{train,val}.txt from trainval_merged.json with "
    f"the Detail API as in {_PREPARE_GUIDE} (tools/dataset_converters/pascal_context.py)."
)


class ContextDataset(SegmentationDataset):
    """PASCAL Context, 59 classes (background -> 255 by ``reduce_zero_label``).

    Args:
        root: Folder containing ``VOCdevkit``, or ``VOCdevkit``, or ``VOCdevkit/VOC2010`` itself.
        split: ``"train"`` or ``"val"``.
        transform: Optional joint transform.
        strict_labels: See :class:`SegmentationDataset`.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        transform: JointTransform | None = None,
        strict_labels: bool = True,
    ) -> None:
        what = "PASCAL Context"
        _check_split(split, ("train", "val"))
        base = _find_base(root, ("VOCdevkit/VOC2010", "VOC2010", "."), "JPEGImages", what, _CONTEXT_GUIDE)
        label_dir = base / "SegmentationClassContext"
        _require_dir(label_dir, what, "label folder", _CONTEXT_GUIDE)
        ids = _read_ids(base / "ImageSets" / "SegmentationContext" / f"{split}.txt", what, _CONTEXT_GUIDE)
        samples = _pairs_from_ids(ids, base / "JPEGImages", label_dir, what)
        super().__init__(
            samples,
            get_split("context"),
            split=split,
            reduce_zero_label=True,
            transform=transform,
            strict_labels=strict_labels,
        )
        self.root = base


_COCO_GUIDE = (
    "Extract train2017.zip and val2017.zip into <root>/coco_stuff164k/images/ and stuffthingmaps_trainval2017.zip "
    "into <root>/coco_stuff164k/annotations/, then create the *_labelTrainIds.png files with "
    f"tools/dataset_converters/coco_stuff164k.py as in {_PREPARE_GUIDE}."
)


class COCOStuffDataset(SegmentationDataset):
    """COCO-Stuff 164K, 171 classes from ``*_labelTrainIds.png`` (no reduction, 255 = ignore).

    Args:
        root: Folder containing ``coco_stuff164k``, or ``coco_stuff164k`` itself.
        split: ``"train"`` (``train2017``) or ``"val"`` (``val2017``).
        transform: Optional joint transform.
        strict_labels: See :class:`SegmentationDataset`.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        transform: JointTransform | None = None,
        strict_labels: bool = True,
    ) -> None:
        what = "COCO-Stuff 164K"
        sub = {"train": "train2017", "val": "val2017"}[_check_split(split, ("train", "val"))]
        base = _find_base(root, ("coco_stuff164k", "."), f"images/{sub}", what, _COCO_GUIDE)
        label_dir = base / "annotations" / sub
        _require_dir(label_dir, what, "label folder", _COCO_GUIDE)
        samples = _pair_by_stem(base / "images" / sub, label_dir, "_labelTrainIds.png", what)
        super().__init__(
            samples,
            get_split("coco-stuff"),
            split=split,
            reduce_zero_label=False,
            transform=transform,
            strict_labels=strict_labels,
        )
        self.root = base


_ADE_GUIDE = (
    "Extract ADEChallengeData2016.zip (the SceneParsing release) into <root> so that "
    f"<root>/ADEChallengeData2016/{{images,annotations}}/{{training,validation}} exist, as in {_PREPARE_GUIDE}."
)


class ADE20KDataset(SegmentationDataset):
    """ADE20K SceneParsing, 150 classes ("other" = 0 -> 255 by ``reduce_zero_label``); no unseen classes.

    Reads ``images/<training|validation>`` with ``annotations/<training|validation>/<stem>.png``; when the split
    folders are absent but ``images/`` and ``annotations/`` hold the files directly (the sceneparsing sample),
    those are read, whatever ``split`` is.

    Args:
        root: Folder containing ``ADEChallengeData2016``, or that folder itself.
        split: ``"train"`` (``training``) or ``"val"`` (``validation``).
        transform: Optional joint transform.
        strict_labels: See :class:`SegmentationDataset`.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "val",
        *,
        transform: JointTransform | None = None,
        strict_labels: bool = True,
    ) -> None:
        what = "ADE20K"
        sub = {"train": "training", "val": "validation"}[_check_split(split, ("train", "val"))]
        base = _find_base(root, ("ADEChallengeData2016", "."), "images", what, _ADE_GUIDE)
        image_dir, label_dir = base / "images" / sub, base / "annotations" / sub
        if not image_dir.is_dir() and _list_images(base / "images"):
            image_dir, label_dir = base / "images", base / "annotations"  # flat layout
        _require_dir(image_dir, what, "image folder", _ADE_GUIDE)
        _require_dir(label_dir, what, "label folder", _ADE_GUIDE)
        samples = _pair_by_stem(image_dir, label_dir, ".png", what)
        super().__init__(
            samples,
            get_split("ade"),
            split=split,
            reduce_zero_label=True,
            transform=transform,
            strict_labels=strict_labels,
        )
        self.root = base


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
        )
        self.root = images_dir.parent

    @classmethod
    def from_root(cls, root: str | Path, split: str | None = None, **kwargs: Any) -> FolderDataset:
        """Read ``root/[split/]{images/, labels/, classes.txt[, unseen.txt]}``.

        ``root/split`` is used when it exists (else ``root``); ``unseen.txt``, one name per line, gives the unseen
        classes when present. This is the layout :func:`otseg.data.synthetic.write_folder_dataset` writes.

        Args:
            root: Dataset folder.
            split: Optional subfolder (``"train"``, ``"val"``).
            **kwargs: Passed on to :class:`FolderDataset`.
        """
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
        **kwargs: Dataset-specific options (``aug``, ``strict_labels``, ...).

    Raises:
        ValueError: Unknown name; the message lists the valid ones.
    """
    key = normalize_name(name)
    if key not in _BUILDERS:
        raise ValueError(f"unknown dataset {name!r}; valid names are {list(_BUILDERS)}.")
    return _BUILDERS[key](root, split, transform=transform, **kwargs)
