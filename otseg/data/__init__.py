"""Datasets, class lists and zero-shot splits, joint transforms, and a synthetic world for tests and demos."""

from otseg.data.classes import (
    ADE_CLASSES,
    COCO_STUFF_CLASSES,
    CONTEXT_CLASSES,
    IGNORE_INDEX,
    VOC_CLASSES,
    ZeroShotSplit,
    check_class_names,
    get_split,
    list_splits,
    parse_class_names,
)
from otseg.data.datasets import (
    ADE20KDataset,
    BenchmarkDataset,
    COCOStuffDataset,
    ContextDataset,
    FolderDataset,
    SegmentationDataset,
    VOCDataset,
    build_dataset,
    list_datasets,
)
from otseg.data.layouts import LAYOUTS, Layout
from otseg.data.readers import DataFileError, ImageTooLargeError, load_image, load_label, open_image, read_class_names
from otseg.data.sources import DataSources, build_sources
from otseg.data.synthetic import SyntheticSample, SyntheticWorld, diagonal_split
from otseg.data.synthetic_dataset import SyntheticSegmentationDataset, write_folder_dataset
from otseg.data.transforms import TrainTransform

__all__ = [
    "ADE_CLASSES",
    "COCO_STUFF_CLASSES",
    "CONTEXT_CLASSES",
    "IGNORE_INDEX",
    "LAYOUTS",
    "VOC_CLASSES",
    "ADE20KDataset",
    "BenchmarkDataset",
    "COCOStuffDataset",
    "ContextDataset",
    "DataFileError",
    "DataSources",
    "FolderDataset",
    "ImageTooLargeError",
    "Layout",
    "SegmentationDataset",
    "SyntheticSample",
    "SyntheticSegmentationDataset",
    "SyntheticWorld",
    "TrainTransform",
    "VOCDataset",
    "ZeroShotSplit",
    "build_dataset",
    "build_sources",
    "check_class_names",
    "diagonal_split",
    "get_split",
    "list_datasets",
    "list_splits",
    "load_image",
    "load_label",
    "open_image",
    "parse_class_names",
    "read_class_names",
    "write_folder_dataset",
]
