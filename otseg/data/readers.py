"""The files of a dataset: reading images, label maps and class-name lists, and writing label maps.

Every reader raises :class:`DataFileError` (a ``ValueError``) that names the file and says what is wrong with it
(not an image, truncated, a colour-coded mask, ...), so that a bad file among thousands is found at once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from otseg.data.classes import check_class_names

__all__ = ["IMAGE_SUFFIXES", "DataFileError", "load_image", "load_label", "read_class_names", "save_label_map"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class DataFileError(ValueError):
    """A file of a dataset, a class list or a config that cannot be used; the message names the file."""


def _open(path: Path, what: str) -> Image.Image:
    """Open and fully decode an image file, turning every Pillow failure into a :class:`DataFileError`."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found.")
    try:
        img = Image.open(path)
    except UnidentifiedImageError:
        raise DataFileError(f"{path}: not an image file Pillow can read; remove it or convert it to PNG.") from None
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as err:  # truncated data, broken headers, decoder errors
        img.close()
        raise DataFileError(f"{path}: the {what} is damaged or truncated ({err}); copy the file again.") from None
    return img


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

    Raises:
        FileNotFoundError: no such file.
        DataFileError: the file is not an image, or is damaged.
    """
    path = Path(path)
    with _open(path, "image") as img:
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


def load_label(path: str | Path, *, wide: bool = False) -> np.ndarray:
    """Read a label file as stored (no reduction).

    Args:
        path: Single-channel PNG: 8-bit, mode ``"L"`` or palette ``"P"`` (whose pixel values are the palette
            indices, as in VOC's ``SegmentationClass``), or 16-bit (``"I;16"``).
        wide: Return the 16-bit values as they are (``uint16``), for label maps of more than 255 classes (as
            ``otseg predict`` writes them). Without it a 16-bit file must hold values <= 255.

    Returns:
        ``(H, W)`` array, uint8 (or uint16 with ``wide``).

    Raises:
        FileNotFoundError: no such file.
        DataFileError: the file is not a single-channel index map, or (without ``wide``) holds values > 255.
    """
    path = Path(path)
    with _open(path, "label image") as img:
        mode = img.mode
        if mode in ("L", "P"):
            arr = np.array(img)
            return arr.astype(np.uint16) if wide else arr
        if mode.startswith("I"):
            arr = np.asarray(img)
            if arr.size and (arr.min() < 0 or arr.max() > 65535):
                raise DataFileError(f"{path}: label values {int(arr.min())}..{int(arr.max())} do not fit 16 bits.")
            if wide:
                return arr.astype(np.uint16)
            if arr.size == 0 or arr.max() <= 255:
                return arr.astype(np.uint8)
            raise DataFileError(
                f"{path}: label image holds values {int(arr.min())}..{int(arr.max())}, beyond 8 bits; dataset labels "
                "must be class indices 0..254 with 255 = ignore."
            )
    raise DataFileError(
        f"{path}: label image has mode {mode!r}; expected an 8-bit single-channel PNG (mode 'L', or 'P' whose "
        "palette indices are the classes). Colour-coded RGB masks must be converted to class-index maps first."
    )


def read_class_names(path: str | Path) -> tuple[str, ...]:
    """Read a class-name file: one name per line, in label-index order (blank lines at the end are ignored).

    Raises:
        FileNotFoundError: The file does not exist.
        DataFileError: The file is not UTF-8 text, or a name is empty or repeated.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class-name file not found at {path}; write one class name per line, in index order.")
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError:
        raise DataFileError(f"{path}: not UTF-8 text; a class-name file lists one name per line.") from None
    while lines and not lines[-1]:
        lines.pop()
    empty = [i + 1 for i, line in enumerate(lines) if not line]
    if not lines or empty:
        where = f"lines {empty} are empty" if lines else "it holds no names"
        raise DataFileError(f"{path}: {where}; give exactly one non-empty class name per line, in label-index order.")
    try:
        return check_class_names(lines, str(path))
    except ValueError as err:
        raise DataFileError(str(err)) from None


def save_label_map(path: str | Path, labels: np.ndarray, num_classes: int) -> Path:
    """Write class indices ``(H, W)`` as a PNG: 8-bit for up to 255 classes, 16-bit beyond.

    Read a 16-bit map back with ``load_label(path, wide=True)``.

    Raises:
        ValueError: labels outside ``[0, num_classes)`` or more than 65535 classes.
    """
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got {int(labels.min())}..{int(labels.max())}.")
    if num_classes > 65535:
        raise ValueError(f"{num_classes} classes do not fit a 16-bit label map.")
    path = Path(path)
    dtype = np.uint8 if num_classes <= 255 else np.uint16
    Image.fromarray(labels.astype(dtype)).save(path)
    return path
