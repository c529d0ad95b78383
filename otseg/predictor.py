"""Inference: test-time resizing, sliding-window averaging, and a predictor that caches class embeddings."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from otseg.config import settings_from_dict, spec
from otseg.modeling.segmentor import OTSeg

__all__ = ["InferenceSettings", "OTSegPredictor", "predict_probabilities", "resize_short_side", "slide_windows"]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class InferenceSettings:
    """How an image is resized and cut into windows (the paper's test pipeline).

    Attributes:
        short_side: Resize so the short side has this length, keeping the aspect ratio. The paper's pipelines use
            ``Resize(img_scale, keep_ratio=True, min_size=512)`` of mmsegmentation 0.24, which sets the short side
            to ``max(min(img_scale), 512)``: 512 for VOC and COCO-Stuff (2048, 512), 520 for Context (520, 520).
            ``None`` keeps the image size.
        long_side_max: Upper bound of the long side after resizing (a memory guard for panoramas; the paper's
            pipeline has none, so this only matters for aspect ratios beyond 4).
        mode: ``"slide"`` (crop windows averaged) or ``"whole"`` (one pass on the whole image).
        crop: Window size (512; Context 480).
        stride: Window stride (426; Context 80).
        precision: ``"fp32"`` (the reference) or ``"bf16"``: the model runs under bfloat16 autocast (Sinkhorn costs,
            potentials and the final maps stay float32). Faster on GPUs and CPUs with bf16 matrix units (AMX); on
            CPUs without them it is slower. See the README for its accuracy against fp32.
        compile: ``torch.compile`` the image encoder, the bulk of the work. :class:`OTSegPredictor` compiles once
            per window size and reuses the compiled encoder: the first window pays the compilation, and whole-image
            mode on images of many sizes would compile again and again (leave it off there).

    Example:
        >>> import otseg
        >>> settings = otseg.InferenceSettings(short_side=520, crop=480, stride=80)  # Pascal Context's test pipeline
        >>> settings.mode, settings.precision
        ('slide', 'fp32')
        >>> otseg.InferenceSettings(mode="tiles")
        Traceback (most recent call last):
        ...
        ValueError: ...
    """

    short_side: int | None = spec(512, "test resize of the short side (null: keep the image size)")
    long_side_max: int = spec(2048, "upper bound of the long side after resizing")
    mode: str = spec("slide", "'slide' (crop windows averaged) or 'whole' (one pass on the whole image)")
    crop: int = spec(512, "sliding-window size")
    stride: int = spec(426, "sliding-window stride")
    precision: str = spec("fp32", "'fp32', or 'bf16' (autocast; faster only where bf16 matrix units are)")
    compile: bool = spec(False, "torch.compile the image encoder (OTSegPredictor; the first window compiles)")

    def __post_init__(self) -> None:
        if self.short_side is not None and not 16 <= self.short_side <= self.long_side_max:
            raise ValueError(
                f"short_side must be None or in [16, long_side_max={self.long_side_max}], got {self.short_side}."
            )
        if self.mode not in ("slide", "whole"):
            raise ValueError(f"mode must be 'slide' or 'whole', got {self.mode!r}.")
        if self.crop < 1 or self.stride < 1 or self.stride > self.crop:
            raise ValueError(f"need 1 <= stride <= crop, got crop={self.crop}, stride={self.stride}.")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {self.precision!r}.")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> InferenceSettings:
        """Build from a dict (an evaluation preset, a model file's record), rejecting unknown keys."""
        return settings_from_dict(cls, values, "inference settings")


def resize_short_side(images: Tensor, short_side: int | None, long_side_max: int = 2048) -> Tensor:
    """Bilinearly resize ``(B, 3, H, W)`` float images so the short side is ``short_side`` (ratio kept)."""
    if short_side is None:
        return images
    h, w = images.shape[-2:]
    scale = min(short_side / min(h, w), long_side_max / max(h, w))
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    if size == (h, w):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False)


def slide_windows(height: int, width: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """Windows ``(y0, y1, x0, x1)`` of at most ``crop`` pixels covering the image; the last ones end at the border."""
    windows = []
    rows = max(height - crop + stride - 1, 0) // stride + 1
    cols = max(width - crop + stride - 1, 0) // stride + 1
    for r in range(rows):
        for c in range(cols):
            y1, x1 = min(r * stride + crop, height), min(c * stride + crop, width)
            windows.append((max(y1 - crop, 0), y1, max(x1 - crop, 0), x1))
    return windows


def _autocast(settings: InferenceSettings, device: torch.device) -> AbstractContextManager:
    dtype = PRECISIONS[settings.precision]
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def predict_probabilities(
    model: OTSeg,
    images: Tensor,
    text: Tensor,
    settings: InferenceSettings | None = None,
    seen: Tensor | None = None,
    output_size: tuple[int, int] | None = None,
    *,
    image_encoder: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None,
) -> Tensor:
    """Per-class probabilities of OTSeg+ for a batch of same-size images, at ``output_size``.

    Args:
        model: The segmentor (put in eval mode here).
        images: ``(B, 3, H, W)`` RGB 0-255.
        text: ``(K, N, C)`` class embeddings.
        settings: Resize, window and precision settings (``compile`` is :class:`OTSegPredictor`'s to apply).
        seen: ``(K,)`` bool, classes seen in training (calibration), or ``None``.
        output_size: Size of the returned maps (default: the input's ``(H, W)``).
        image_encoder: Stands in for ``model.image_encoder`` (its compiled version), see :meth:`OTSeg.infer`.

    Returns:
        ``(B, K, *output_size)`` float32 probabilities (sigmoid, seen classes lowered), averaged over windows.
    """
    settings = settings or InferenceSettings()
    model.eval()
    out_size = tuple(output_size or images.shape[-2:])
    x = resize_short_side(images.float(), settings.short_side, settings.long_side_max)
    h, w = x.shape[-2:]
    windows = [(0, h, 0, w)] if settings.mode == "whole" else slide_windows(h, w, settings.crop, settings.stride)
    with _autocast(settings, x.device):
        if len(windows) == 1:
            probs = model.infer(x, text, seen, image_encoder=image_encoder)
        else:
            probs = x.new_zeros(x.shape[0], text.shape[0], h, w)
            count = x.new_zeros(1, 1, h, w)
            for y0, y1, x0, x1 in windows:
                probs[..., y0:y1, x0:x1] += model.infer(x[..., y0:y1, x0:x1], text, seen, image_encoder=image_encoder)
                count[..., y0:y1, x0:x1] += 1
            probs.div_(count)
    if probs.shape[-2:] != out_size:
        probs = F.interpolate(probs, size=out_size, mode="bilinear", align_corners=False)
    return probs


def _to_tensor(image: Image.Image | np.ndarray | Tensor) -> Tensor:
    """An RGB image as ``(3, H, W)`` float 0-255 from PIL, HWC uint8 numpy, or a CHW tensor."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        if image.ndim != 3 or image.shape[-1] not in (3, 4):
            raise ValueError(f"numpy images must be (H, W, 3) RGB, got shape {image.shape}.")
        image = torch.from_numpy(np.ascontiguousarray(image[..., :3])).permute(2, 0, 1)
    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
        raise ValueError("images must be PIL images, (H, W, 3) arrays or (3, H, W) tensors.")
    return image.float()


class OTSegPredictor:
    """Segment images against any list of class names, with the class embeddings computed once.

    The one place inference runs (``otseg predict``, ``otseg eval`` and :func:`otseg.engine.evaluate`): its
    ``settings`` carry the windows, the precision and whether the image encoder is compiled.

    Example:
        >>> import numpy as np, otseg
        >>> model, meta = otseg.load_otseg("otseg-tiny", allow_random_clip=True)  # a tiny random model
        >>> predictor = otseg.OTSegPredictor(model, otseg.InferenceSettings(short_side=64, crop=64, stride=48))
        >>> predictor.set_classes(["sky", "tree", "zebra"], seen=["sky", "tree"])
        >>> labels = predictor.predict([np.zeros((80, 100, 3), dtype=np.uint8)])  # PIL images or arrays
        >>> labels[0].shape, labels[0].dtype  # class indices, one (H, W) array per image
        ((80, 100), dtype('int64'))

    Args:
        model: The segmentor.
        settings: Resize, window and precision settings.
        device: Device to run on (default: the model's).
    """

    def __init__(self, model: OTSeg, settings: InferenceSettings | None = None, device: str | None = None) -> None:
        self.model = model.eval()
        self.settings = settings or InferenceSettings()
        self.device = torch.device(device) if device else next(model.parameters()).device
        self.model.to(self.device)
        # A compiled wrapper shares the encoder's parameters (read at run time), so it stays valid as they change.
        self.image_encoder = torch.compile(model.image_encoder, dynamic=False) if self.settings.compile else None
        self.class_names: list[str] | None = None
        self.text: Tensor | None = None
        self.seen: Tensor | None = None

    def set_classes(self, class_names: Sequence[str], seen: Sequence[str] | None = None) -> None:
        """Compute (or read from the cache) the embeddings of ``class_names``; ``seen`` names get calibrated."""
        self.class_names = list(class_names)
        self.text = self.model.class_embeddings(self.class_names).to(self.device)
        if seen is None:
            self.seen = None
        else:
            unknown = sorted(set(seen) - set(self.class_names))
            if unknown:
                raise ValueError(f"seen classes {unknown} are not among the class names.")
            self.seen = torch.tensor([n in set(seen) for n in self.class_names], device=self.device)

    def predict_torch(self, images: Tensor, output_size: tuple[int, int] | None = None) -> Tensor:
        """Probabilities ``(B, K, H, W)`` for ``(B, 3, H, W)`` RGB 0-255 tensors of one size (or at ``output_size``)."""
        if self.text is None:
            raise RuntimeError("call set_classes(class_names) before predict.")
        return predict_probabilities(
            self.model,
            images.to(self.device),
            self.text,
            self.settings,
            self.seen,
            output_size,
            image_encoder=self.image_encoder,
        )

    def predict(self, images: Sequence[Image.Image | np.ndarray | Tensor], batch_size: int = 1) -> list[np.ndarray]:
        """Label maps (indices into the class names), one ``(H, W)`` int64 array per image, any sizes.

        Consecutive images of one size run ``batch_size`` at a time: for GPUs; on a CPU a batch gains nothing
        (the README has the measurement).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        tensors = [_to_tensor(im) for im in images]
        labels: list[np.ndarray] = []
        start = 0
        while start < len(tensors):
            size = tensors[start].shape
            stop = start + 1
            while stop < min(start + batch_size, len(tensors)) and tensors[stop].shape == size:
                stop += 1
            batch = torch.stack(tensors[start:stop])
            labels += list(self.predict_torch(batch).argmax(1).cpu().numpy())
            start = stop
        return labels
