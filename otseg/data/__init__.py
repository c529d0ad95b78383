"""Datasets, class lists and zero-shot splits, joint transforms, and a synthetic world for tests and demos."""

from otseg.data.classes import (
    ADE_CLASSES,
    COCO_STUFF_CLASSES,
    CONTEXT_CLASSES,
    IGNORE_INDEX,
    VOC_CLASSES,
    ZeroShotSplit,
    get_split,
    list_splits,
)
from otseg.data.datasets import (
    ADE20KDataset,
    COCOStuffDataset,
    ContextDataset,
    FolderDataset,
    SegmentationDataset,
    VOCDataset,
    build_dataset,
    list_datasets,
    load_image,
    load_label,
    read_class_names,
)
from otseg.data.synthetic import (
    SyntheticSample,
    SyntheticSegmentationDataset,
    SyntheticWorld,
    diagonal_split,
    write_folder_dataset,
)
from otseg.data.transforms import TrainTransform

__all__ = [
    "ADE_CLASSES",
    "COCO_STUFF_CLASSES",
    "CONTEXT_CLASSES",
    "IGNORE_INDEX",
    "VOC_CLASSES",
    "ADE20KDataset",
    "COCOStuffDataset",
    "ContextDataset",
    "FolderDataset",
    "SegmentationDataset",
    "SyntheticSample",
    "SyntheticSegmentationDataset",
    "SyntheticWorld",
    "TrainTransform",
    "VOCDataset",
    "ZeroShotSplit",
    "build_dataset",
    "diagonal_split",
    "get_split",
    "list_datasets",
    "list_splits",
    "load_image",
    "load_label",
    "read_class_names",
    "write_folder_dataset",
]
