"""Example images for the page: the model's synthetic world, written at start-up, and real ADE20K photos.

The ADE20K photos are the shared fixtures beside the repository (``../shared/fixtures/ade20k_sample``); they are
read where they are, never copied into the repository, and simply left out when the folder is absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from otseg.data.classes import ADE_CLASSES
from otseg.data.readers import IMAGE_SUFFIXES, DataFileError, load_label
from otseg.data.sources import synthetic_sources

__all__ = ["ADE_SAMPLE", "Example", "ade_examples", "synthetic_examples"]

ADE_SAMPLE = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "ade20k_sample"
"""The shared ADE20K sample beside the repository (absent in most installations)."""

ADE_CLASSES_PER_IMAGE = 6


class Example(NamedTuple):
    """An example of the page: an image file, the class names offered with it, and a label."""

    path: Path
    classes: str
    label: str


def synthetic_examples(meta: Mapping[str, Any], folder: Path, count: int = 3) -> list[Example]:
    """Write ``count`` images of the model's synthetic world to ``folder`` as PNG, offered with all its classes.

    Args:
        meta: The model file's record (``dataset`` and ``synthetic`` say which world).
        folder: Where the images go (a folder the server owns).
        count: Number of images.

    Returns:
        The examples, in order.
    """
    options = meta.get("synthetic") if meta.get("dataset") == "synthetic" else None  # else a default world
    sources = synthetic_sources({**(options or {}), "val_images": count, "train_images": 1})
    folder.mkdir(parents=True, exist_ok=True)
    classes = ", ".join(sources.split.class_names)
    examples = []
    for i in range(count):
        path = folder / f"synthetic_{i + 1}.png"
        Image.fromarray(sources.val[i]["image"].permute(1, 2, 0).numpy()).save(path)
        examples.append(Example(path, classes, f"synthetic world {i + 1}"))
    return examples


def _classes_in(annotation: Path) -> list[str]:
    """The ADE20K classes covering most of an annotation (label k is class k - 1, 0 is unlabelled)."""
    labels = load_label(annotation).ravel()
    counts = np.bincount(labels, minlength=len(ADE_CLASSES) + 1)[1 : len(ADE_CLASSES) + 1]
    order = [int(k) for k in np.argsort(-counts, kind="stable") if counts[k] > 0]
    return [ADE_CLASSES[k] for k in order[:ADE_CLASSES_PER_IMAGE]]


def ade_examples(root: Path = ADE_SAMPLE) -> list[Example]:
    """The real ADE20K photos of ``root/images``, each offered with the classes its annotation shows most.

    Returns an empty list when the folder is absent; an image without a readable annotation is offered with the
    classes common to indoor and outdoor scenes.
    """
    folder = root / "images"
    if not folder.is_dir():
        return []
    examples = []
    for i, path in enumerate(sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), 1):
        try:
            names = _classes_in(root / "annotations" / f"{path.stem}.png")
        except (OSError, DataFileError):
            names = ["wall", "floor", "sky", "tree", "person", "building"]
        examples.append(Example(path, ", ".join(names), f"ADE20K photo {i}"))
    return examples
