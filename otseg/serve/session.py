"""The model side of ``otseg serve``: request checks, image limits, one shared model, segmentation and transport.

Everything here runs without Gradio or a browser; :mod:`otseg.serve.app` lays the results out on a page.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from otseg.data.classes import parse_class_names
from otseg.data.readers import DataFileError, ImageTooLargeError, load_image, open_image
from otseg.modeling.segmentor import OTSeg
from otseg.predictor import InferenceSettings, OTSegPredictor, resize_short_side
from otseg.utils.plots import colour_palette, overlay

__all__ = ["RequestError", "Segmentation", "SegmentationSession", "ServeLimits", "fit_image", "read_upload"]

MAX_NAME_CHARS = 80
"""Longest class name a request may hold (CLIP's text context is 77 tokens, template included)."""

MIN_SIDE = 16
"""Shortest image side a request may have (ViT-B/16's patch)."""


class RequestError(ValueError):
    """A request the page answers with a message: a bad image, a bad class list, a limit exceeded."""


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask of the server.

    Attributes:
        max_upload_mb: Largest image file, in MiB.
        max_pixels: Largest image, in pixels (width x height), checked from the header before decoding.
        max_side: Longer side an image is resized to (ratio kept) when larger, before segmentation; the model's
            own test resize then applies, as in ``otseg predict``.
        max_classes: Most class names in one request.
    """

    max_upload_mb: float = 20.0
    max_pixels: int = 40_000_000
    max_side: int = 1024
    max_classes: int = 64

    def __post_init__(self) -> None:
        if self.max_upload_mb <= 0 or self.max_pixels < 256 or self.max_side < 16 or self.max_classes < 1:
            raise ValueError(
                "serve limits must be positive: max_upload_mb > 0, max_pixels >= 256, max_side >= 16, "
                f"max_classes >= 1; got {self}."
            )

    def parse_classes(self, text: str | None) -> tuple[str, ...]:
        """Class names of a request (commas or new lines), checked by the one class-name validator.

        Raises:
            RequestError: no names, an empty entry, duplicates, a name too long, or more than ``max_classes``.
        """
        if not text or not text.strip():
            raise RequestError("no class names given: type at least one, separated by commas or new lines.")
        try:
            names = parse_class_names(text, "the class list")
        except ValueError as err:
            raise RequestError(str(err)) from None
        if len(names) > self.max_classes:
            raise RequestError(
                f"{len(names)} class names given; this server takes at most {self.max_classes} per request: "
                "remove some."
            )
        long = [n[:20] + "..." for n in names if len(n) > MAX_NAME_CHARS]
        if long:
            raise RequestError(f"class names {long} are longer than {MAX_NAME_CHARS} characters: shorten them.")
        return names


def fit_image(image: np.ndarray, max_side: int) -> np.ndarray:
    """Resize an ``(H, W, 3)`` uint8 image (bilinear, antialiased) so its longer side is at most ``max_side``."""
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def read_upload(path: str | Path, limits: ServeLimits) -> np.ndarray:
    """Read an uploaded image within the limits, as ``(H, W, 3)`` uint8 RGB, resized to ``limits.max_side``.

    Messages name the file by its name only, never by where the server keeps it.

    Raises:
        RequestError: the file is too large, not an image, damaged, or has too many pixels.
    """
    path = Path(path)
    name = path.name
    megabytes = path.stat().st_size / 2**20
    if megabytes > limits.max_upload_mb:
        raise RequestError(
            f"{name} is {megabytes:.1f} MiB; this server takes images up to {limits.max_upload_mb:g} MiB: "
            "upload a smaller file."
        )
    try:
        with open_image(path, max_pixels=limits.max_pixels) as img:
            width, height = img.size
    except ImageTooLargeError as err:
        size = f"{err.size[0]}x{err.size[1]} pixels" if err.size else f"{err.pixels / 1e6:.3g} megapixels"
        raise RequestError(
            f"{name} has {size}; this server takes at most {limits.max_pixels / 1e6:g} megapixels: "
            "upload a smaller image."
        ) from None
    except DataFileError:
        raise RequestError(
            f"{name} is not an image this server can read: upload a PNG, JPEG, WebP or BMP file."
        ) from None
    if min(width, height) < MIN_SIDE:
        raise RequestError(f"{name} is {width}x{height} pixels; upload an image of at least {MIN_SIDE}x{MIN_SIDE}.")
    try:
        image = load_image(path, limits.max_pixels)
    except DataFileError:
        raise RequestError(f"{name} is damaged or truncated: upload the image again or another one.") from None
    return fit_image(image.permute(1, 2, 0).numpy(), limits.max_side)


@dataclass(frozen=True)
class Segmentation:
    """One request's result: the labels, and the MPS transport of every class on the patch grid.

    Attributes:
        image: ``(H, W, 3)`` uint8, the image segmented.
        labels: ``(H, W)`` int64 class indices.
        class_names: The ``K`` names of the request.
        kinds: Per class, ``"seen"`` or ``"unseen"`` in the model's training split, or ``""`` (not in it).
        plan: ``(K, h, w, N)`` float32 MPS plan scaled by ``M``: the share of each grid cell that each prompt of
            each class takes (it sums to 1 over the prompts; each prompt's mean over the grid is ``1/N``).
        score: ``(K, h, w)`` float32 sigmoid of the MPS score map.
        prompts: The ``N`` prompt texts, ``{}`` standing for the class name.
        seconds: Time the model took for the request.
    """

    image: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    kinds: tuple[str, ...]
    plan: np.ndarray
    score: np.ndarray
    prompts: tuple[str, ...]
    seconds: float

    @property
    def palette(self) -> np.ndarray:
        """``(K, 3)`` uint8 colours of the classes."""
        return colour_palette(len(self.class_names))

    def overlay(self) -> np.ndarray:
        """``(H, W, 3)`` uint8 image with the class colours blended over it."""
        return overlay(self.image, self.labels, self.palette)

    def area_shares(self) -> np.ndarray:
        """``(K,)`` fraction of the image each class covers (sums to 1)."""
        counts = np.bincount(self.labels.ravel(), minlength=len(self.class_names))
        return counts / max(1, self.labels.size)

    def grid_labels(self) -> np.ndarray:
        """``(h, w)`` labels on the patch grid (nearest), to compare with the plan."""
        h, w = self.score.shape[1:]
        labels = torch.from_numpy(self.labels)[None, None].float()
        return F.interpolate(labels, size=(h, w), mode="nearest")[0, 0].long().numpy()

    def prompt_shares(self, k: int) -> tuple[np.ndarray, bool]:
        """``(N,)`` share of class ``k``'s region that each of its prompts takes, and whether the region exists.

        Where the class covers no grid cell, the shares are over the whole image (``1/N`` each, the plan's column
        marginal).
        """
        region = self.grid_labels() == k
        plan = self.plan[k]
        found = bool(region.any())
        mass = plan[region].sum(0) if found else plan.reshape(-1, plan.shape[-1]).sum(0)
        return mass / max(float(mass.sum()), 1e-12), found


class SegmentationSession:
    """One model shared by every request: class embeddings kept while the class list stays the same.

    Requests are serialised by a lock (the page's queue already runs them one at a time by default).

    Args:
        model: The segmentor.
        meta: What the model file records (``class_names`` and ``unseen`` mark the classes of its split).
        settings: Resize and window settings of the segmentation (``otseg predict``'s).
        limits: Request limits.
        device: Torch device (default: the model's).
    """

    def __init__(
        self,
        model: OTSeg,
        meta: Mapping[str, Any],
        settings: InferenceSettings | None = None,
        limits: ServeLimits | None = None,
        device: str | None = None,
    ) -> None:
        self.predictor = OTSegPredictor(model, settings, device=device)
        self.limits = limits or ServeLimits()
        self.model_classes = tuple(meta.get("class_names") or ())
        unseen = set(meta.get("unseen") or ())
        self.unseen_classes = tuple(n for i, n in enumerate(self.model_classes) if i in unseen)
        self.seen_classes = tuple(n for i, n in enumerate(self.model_classes) if i not in unseen)
        self._kinds = {n.lower(): "seen" for n in self.seen_classes}
        self._kinds |= {n.lower(): "unseen" for n in self.unseen_classes}
        self._lock = threading.Lock()
        self._classes_key: tuple[Any, ...] | None = None

    @property
    def model(self) -> OTSeg:
        """The shared segmentor."""
        return self.predictor.model

    @property
    def prompts(self) -> tuple[str, ...]:
        """The ``N`` prompt texts of each class (``{}`` is the name); learned contexts are named by number."""
        n = self.model.config.num_prompts if self.model.config is not None else 0
        if self.model.learnable_context is not None or self.model.text_encoder is None:
            return tuple(f"learned prompt {i + 1} {{}}" for i in range(n))
        return tuple(self.model.text_encoder.templates)

    def kind(self, name: str) -> str:
        """``"seen"`` or ``"unseen"`` for a class of the model's training split, ``""`` for any other name."""
        return self._kinds.get(name.strip().lower(), "")

    def unknown_words(self, names: Sequence[str]) -> list[str]:
        """Words of ``names`` outside a word-level tokenizer's vocabulary (empty for CLIP's BPE)."""
        tokenizer = getattr(self.model.text_encoder, "tokenizer", None)
        index = getattr(tokenizer, "index", None)
        if not isinstance(index, dict):
            return []
        words = dict.fromkeys(w for name in names for w in name.lower().replace("-", " ").split())
        return [w for w in words if w.isalpha() and w not in index]

    def segment(self, image: np.ndarray, class_names: Sequence[str], calibrate: bool = True) -> Segmentation:
        """Segment an ``(H, W, 3)`` uint8 image with the class names, and transport each class onto its prompts.

        Args:
            image: The image (already within the limits, see :func:`read_upload`).
            class_names: Checked names (see :meth:`ServeLimits.parse_classes`).
            calibrate: Lower the probabilities of the classes the model saw in training (the paper's
                calibration), when the request also holds other classes.

        Returns:
            The :class:`Segmentation`.
        """
        names = tuple(class_names)
        kinds = tuple(self.kind(n) for n in names)
        seen = [n for n, kind in zip(names, kinds, strict=True) if kind == "seen"] if calibrate else []
        pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
        with self._lock, torch.no_grad():
            start = time.perf_counter()
            key = (names, tuple(seen))
            if key != self._classes_key:
                self._classes_key = None
                self.predictor.set_classes(names, seen=seen or None)
                self._classes_key = key
            labels = self.predictor.predict_torch(pixels).argmax(1)[0].cpu().numpy()
            mps = self.model.transport(self._transport_input(pixels).to(self.predictor.device), self.predictor.text)
            seconds = time.perf_counter() - start
        (h, w), m = mps.grid, mps.plan.shape[-2]
        plan = (mps.plan[0] * m).reshape(len(names), h, w, -1).float().cpu().numpy()
        score = torch.sigmoid(mps.score[0]).float().cpu().numpy()
        return Segmentation(image, labels, names, kinds, plan, score, self.prompts, seconds)

    def _transport_input(self, pixels: Tensor) -> Tensor:
        """The image as the model sees it, shrunk so one window covers it: the transport is one problem per class."""
        settings = self.predictor.settings
        x = resize_short_side(pixels, settings.short_side, settings.long_side_max)
        scale = settings.crop / max(x.shape[-2:])
        if scale < 1:
            size = (max(1, round(x.shape[-2] * scale)), max(1, round(x.shape[-1] * scale)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x
