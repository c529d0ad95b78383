"""Example images for the page: the model's synthetic world, written at start-up, and a folder of the user's own.

The synthetic world's examples are built in; a folder of images (``otseg serve --examples DIR``) adds the user's
own, read where they are. Nothing here reads files outside the package unless it is given their folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from otseg.data.classes import ADE_CLASSES
from otseg.data.readers import IMAGE_SUFFIXES, DataFileError, load_label, open_image, read_class_names
from otseg.data.sources import synthetic_sources

__all__ = ["Example", "folder_examples", "synthetic_examples"]

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


def folder_examples(folder: str | Path, classes: str, max_pixels: int | None = None) -> list[Example]:
    """The images of ``folder`` (or of ``folder/images`` when it has one), as examples of the page.

    Each image is offered with the first of: the ADE20K classes its annotation ``annotations/<stem>.png`` shows
    most (ADE20K's layout, label ``k`` being class ``k - 1``), the names of ``classes.txt`` in the folder (one per
    line), or ``classes``.

    Args:
        folder: A folder of images (``.png``, ``.jpg``, ...; other files are skipped).
        classes: Class names offered with images that have neither (e.g. the model's own, comma-separated).
        max_pixels: Largest image, in pixels (the page's limit); every image's header is checked at once.

    Returns:
        The examples, in file-name order, labelled by their file names.

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
        ValueError: it holds no images, one of them is not an image or is over ``max_pixels``
            (:class:`~otseg.data.readers.DataFileError`), or its ``classes.txt`` is not a class list.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> Image.new("RGB", (32, 32)).save(folder / "street.png")
        >>> [(e.label, e.classes) for e in folder_examples(folder, "road, car")]
        [('street', 'road, car')]
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"examples folder {root} not found; give a folder of images (--examples DIR).")
    images = root / "images" if (root / "images").is_dir() else root
    paths = sorted(p for p in images.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"examples folder {images} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
    names_file = root / "classes.txt"
    offered = ", ".join(read_class_names(names_file)) if names_file.is_file() else classes
    examples = []
    for path in paths:
        open_image(path, max_pixels=max_pixels).close()
        annotation = root / "annotations" / f"{path.stem}.png"
        try:
            names = ", ".join(_classes_in(annotation)) if annotation.is_file() else offered
        except DataFileError:
            names = offered
        examples.append(Example(path, names, path.stem))
    return examples
