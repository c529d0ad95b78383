"""The files of a dataset: reading images, label maps and class-name lists, and writing label maps.

Every reader raises :class:`DataFileError` (a ``ValueError``) that names the file and says what is wrong with it
(not an image, truncated, a colour-coded mask, too many pixels, ...), so that a bad file among thousands is found
at once. Every image is opened by one helper, :func:`open_image`, which checks its size from the header against a
pixel limit before anything is decoded.
"""

from __future__ import annotations

import re
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from otseg.data.classes import check_class_names

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "DataFileError",
    "ImageTooLargeError",
    "load_image",
    "load_label",
    "open_image",
    "read_class_names",
    "save_label_map",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

MAX_PIXELS = 100_000_000
"""Default largest image read, in pixels (width x height; a 10000 x 10000 image): ``--max-megapixels`` raises it."""

_PILLOW_LIMIT = threading.Lock()
_CLAIMED_PIXELS = re.compile(r"\((\d+) pixels\)")


class DataFileError(ValueError):
    """A file of a dataset, a class list or a config that cannot be used; the message names the file."""


class ImageTooLargeError(DataFileError):
    """An image whose header claims more pixels than the limit; nothing of it was decoded.

    Attributes:
        path: The file.
        pixels: Width x height, as its header claims.
        size: ``(width, height)``, or ``None`` where Pillow refused the file before saying more than its pixels.
        limit: The limit it exceeds, in pixels.
    """

    def __init__(self, path: Path, pixels: int, size: tuple[int, int] | None, limit: int) -> None:
        self.path, self.pixels, self.size, self.limit = path, pixels, size, limit
        dims = f"{pixels / 1e6:.3g} megapixels"
        if size:
            dims = f"{size[0]}x{size[1]} pixels ({dims})"
        super().__init__(
            f"{path}: {dims}, over the limit of {limit / 1e6:g} megapixels per image (a guard against decompression "
            f"bombs); if the image is genuine, raise the limit: --max-megapixels {_megapixels_above(pixels)} (otseg "
            "predict, eval and serve), max_pixels= in Python."
        )


def _megapixels_above(pixels: int) -> str:
    """The smallest whole number of megapixels that takes ``pixels``."""
    return str(-(-pixels // 1_000_000))


def _let_pillow_open(max_pixels: int) -> None:
    """Raise Pillow's own decompression-bomb limit where it would refuse images under ``max_pixels``.

    Pillow warns above ``Image.MAX_IMAGE_PIXELS`` and refuses above twice it, before our check can run. It is
    raised (process-wide, never switched off, never lowered) only when a caller asks for a larger limit.
    """
    with _PILLOW_LIMIT:
        current = Image.MAX_IMAGE_PIXELS
        if current is not None and 2 * current < max_pixels:
            Image.MAX_IMAGE_PIXELS = -(-max_pixels // 2)


def open_image(path: str | Path, what: str = "image", max_pixels: int | None = None) -> Image.Image:
    """Open an image file lazily (its header only), refusing it when it claims more than ``max_pixels``.

    Every image otseg reads (datasets, ``otseg predict``, the page of ``otseg serve``) is opened here. Pillow's
    decompression-bomb check stays on: it is raised (never switched off) only where ``max_pixels`` exceeds what
    it lets through, and its warning is silenced because the limit here is checked right after.

    Args:
        path: The image file.
        what: What the file is, for messages (``"image"``, ``"label image"``).
        max_pixels: Largest width x height accepted (default :data:`MAX_PIXELS`).

    Returns:
        The opened, not yet decoded, ``PIL.Image.Image`` (close it, or use it as a context manager).

    Raises:
        FileNotFoundError: no such file.
        ImageTooLargeError: the header claims more than ``max_pixels``.
        DataFileError: not an image Pillow can read, or a header it cannot parse.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> path = Path(tempfile.mkdtemp()) / "a.png"
        >>> Image.new("RGB", (40, 30)).save(path)
        >>> with open_image(path) as img:
        ...     print(img.size)
        (40, 30)
        >>> open_image(path, max_pixels=1000)
        Traceback (most recent call last):
        ...
        otseg.data.readers.ImageTooLargeError: ...: 40x30 pixels (0.0012 megapixels), over the limit of 0.001...
    """
    path = Path(path)
    limit = MAX_PIXELS if max_pixels is None else int(max_pixels)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found.")
    _let_pillow_open(limit)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as err:
        claimed = _CLAIMED_PIXELS.search(str(err))
        pixels = int(claimed.group(1)) if claimed else 2 * (Image.MAX_IMAGE_PIXELS or 0) + 1
        raise ImageTooLargeError(path, pixels, None, limit) from None
    except UnidentifiedImageError:
        raise DataFileError(f"{path}: not an image file Pillow can read; remove it or convert it to PNG.") from None
    except (OSError, SyntaxError, ValueError) as err:  # a header Pillow recognises but cannot parse
        raise DataFileError(f"{path}: the {what} is damaged ({err}); copy the file again.") from None
    width, height = img.size
    if width * height > limit:
        img.close()
        raise ImageTooLargeError(path, width * height, (width, height), limit)
    return img


def _open(path: Path, what: str, max_pixels: int | None = None) -> Image.Image:
    """Open (see :func:`open_image`) and fully decode an image file; every Pillow failure is a DataFileError."""
    img = open_image(path, what, max_pixels)
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as err:  # truncated data, broken headers, decoder errors
        img.close()
        raise DataFileError(f"{path}: the {what} is damaged or truncated ({err}); copy the file again.") from None
    return img


def load_image(path: str | Path, max_pixels: int | None = None) -> Tensor:
    """Read an image file as RGB.

    Grayscale and palette images are expanded to three channels, an alpha channel is dropped (colours are kept as
    stored, not composited), 16-bit and 32-bit integer images are scaled from ``0..65535`` to ``0..255`` and float
    images from ``[0, 1]`` (or clipped to ``0..255`` when their values exceed 1). EXIF orientation is not applied,
    so the image stays aligned with its label file.

    Args:
        path: Image file readable by Pillow.
        max_pixels: Largest width x height read (default :data:`MAX_PIXELS`), checked before decoding.

    Returns:
        uint8 tensor ``(3, H, W)``.

    Raises:
        FileNotFoundError: no such file.
        ImageTooLargeError: the image has more than ``max_pixels`` pixels (a :class:`DataFileError`).
        DataFileError: the file is not an image, or is damaged.
    """
    path = Path(path)
    with _open(path, "image", max_pixels) as img:
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


def load_label(path: str | Path, *, wide: bool = False, max_pixels: int | None = None) -> np.ndarray:
    """Read a label file as stored (no reduction).

    Args:
        path: Single-channel PNG: 8-bit, mode ``"L"`` or palette ``"P"`` (whose pixel values are the palette
            indices, as in VOC's ``SegmentationClass``), or 16-bit (``"I;16"``).
        wide: Return the 16-bit values as they are (``uint16``), for label maps of more than 255 classes (as
            ``otseg predict`` writes them). Without it a 16-bit file must hold values <= 255.
        max_pixels: Largest width x height read (default :data:`MAX_PIXELS`), checked before decoding.

    Returns:
        ``(H, W)`` array, uint8 (or uint16 with ``wide``).

    Raises:
        FileNotFoundError: no such file.
        DataFileError: the file is not a single-channel index map, or (without ``wide``) holds values > 255.
    """
    path = Path(path)
    with _open(path, "label image", max_pixels) as img:
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
