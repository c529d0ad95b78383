"""Where each benchmark keeps its files: one :class:`Layout` per dataset, in one table (:data:`LAYOUTS`)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LAYOUTS", "Layout"]

_PREPARE_GUIDE = "mmsegmentation's dataset preparation guide (docs/en/user_guides/2_dataset_prepare.md)"


@dataclass(frozen=True)
class Layout:
    """Where a benchmark keeps its files, relative to its base folder.

    Attributes:
        title: The dataset's name in messages.
        split_name: The zero-shot split of :func:`~otseg.data.classes.get_split`.
        bases: Folders under ``root`` that may be the base (``"."`` is ``root`` itself), tried in order.
        marker: A folder that identifies the base; ``{sub}`` is the split's subfolder.
        subfolders: ``split -> sub``: the split's subfolder (or split-file stem).
        images: Image folder, relative to the base.
        labels: Label folder.
        split_file: File listing the split's image ids (``None``: images and labels pair by file stem).
        label_suffix: Label file name after the image stem (stem pairing).
        reduce_zero_label: Whether file label 0 is background to be ignored.
        default_split: The split when none is given.
        guide: How to prepare the dataset, for error messages.
        aug_labels: Extra training labels (VOC's SBD augmentation) used when present and asked for.
        aug_split_files: Split files of the augmented training set, first existing one wins.
        flat_fallback: Read ``images/`` and ``annotations/`` directly when the split folders are absent.
    """

    title: str
    split_name: str
    bases: tuple[str, ...]
    marker: str
    subfolders: dict[str, str]
    images: str
    labels: str
    split_file: str | None
    label_suffix: str
    reduce_zero_label: bool
    default_split: str
    guide: str
    aug_labels: str | None = None
    aug_split_files: tuple[str, ...] = ()
    flat_fallback: bool = False


LAYOUTS: dict[str, Layout] = {
    "voc": Layout(
        title="PASCAL VOC 2012",
        split_name="voc",
        bases=("VOCdevkit/VOC2012", "VOC2012", "."),
        marker="JPEGImages",
        subfolders={"train": "train", "val": "val"},
        images="JPEGImages",
        labels="SegmentationClass",
        split_file="ImageSets/Segmentation/{sub}.txt",
        label_suffix=".png",
        reduce_zero_label=True,
        default_split="train",
        guide=(
            "Extract VOCtrainval_11-May-2012.tar so that <root>/VOCdevkit/VOC2012/{JPEGImages, SegmentationClass, "
            "ImageSets/Segmentation/{train,val}.txt} exist; for the augmented training set add SegmentationClassAug/ "
            f"and ImageSets/Segmentation/trainaug.txt built from SBD as in {_PREPARE_GUIDE} "
            "(tools/dataset_converters/voc_aug.py)."
        ),
        aug_labels="SegmentationClassAug",
        aug_split_files=("ImageSets/Segmentation/trainaug.txt", "ImageSets/Segmentation/aug.txt"),
    ),
    "context": Layout(
        title="PASCAL Context",
        split_name="context",
        bases=("VOCdevkit/VOC2010", "VOC2010", "."),
        marker="JPEGImages",
        subfolders={"train": "train", "val": "val"},
        images="JPEGImages",
        labels="SegmentationClassContext",
        split_file="ImageSets/SegmentationContext/{sub}.txt",
        label_suffix=".png",
        reduce_zero_label=True,
        default_split="train",
        guide=(
            "Extract VOCtrainval_03-May-2010.tar so that <root>/VOCdevkit/VOC2010/JPEGImages exists, then build "
            "SegmentationClassContext/ and ImageSets/SegmentationContext/{train,val}.txt from trainval_merged.json "
            f"with the Detail API as in {_PREPARE_GUIDE} (tools/dataset_converters/pascal_context.py)."
        ),
    ),
    "coco-stuff": Layout(
        title="COCO-Stuff 164K",
        split_name="coco-stuff",
        bases=("coco_stuff164k", "."),
        marker="images/{sub}",
        subfolders={"train": "train2017", "val": "val2017"},
        images="images/{sub}",
        labels="annotations/{sub}",
        split_file=None,
        label_suffix="_labelTrainIds.png",
        reduce_zero_label=False,
        default_split="train",
        guide=(
            "Extract train2017.zip and val2017.zip into <root>/coco_stuff164k/images/ and "
            "stuffthingmaps_trainval2017.zip into <root>/coco_stuff164k/annotations/, then create the "
            f"*_labelTrainIds.png files with tools/dataset_converters/coco_stuff164k.py as in {_PREPARE_GUIDE}."
        ),
    ),
    "ade": Layout(
        title="ADE20K",
        split_name="ade",
        bases=("ADEChallengeData2016", "."),
        marker="images",
        subfolders={"train": "training", "val": "validation"},
        images="images/{sub}",
        labels="annotations/{sub}",
        split_file=None,
        label_suffix=".png",
        reduce_zero_label=True,
        default_split="val",
        guide=(
            "Extract ADEChallengeData2016.zip (the SceneParsing release) into <root> so that "
            f"<root>/ADEChallengeData2016/{{images,annotations}}/{{training,validation}} exist, as in {_PREPARE_GUIDE}."
        ),
        flat_fallback=True,
    ),
}
"""The benchmark layouts by dataset name."""
