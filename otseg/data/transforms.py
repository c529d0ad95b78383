"""Joint image/label transforms: the training augmentation of the paper and the test-time resize.

Both take and return ``(image uint8 (3, H, W), label int64 (H, W))``; the geometric steps run through
``torchvision.transforms.v2.functional`` on ``tv_tensors.Image`` / ``tv_tensors.Mask`` so the label always uses
nearest interpolation. Randomness comes from torch's global generator: results are reproducible after
``torch.manual_seed`` (and per DataLoader worker, which torch seeds itself).
"""

from __future__ import annotations

import torch
import torchvision.transforms.v2.functional as F
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms.v2 import InterpolationMode

from otseg.data.classes import IGNORE_INDEX

__all__ = [
    "TrainTransform",
    "photometric_distortion",
    "random_crop_box",
    "rescale_size",
]


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


def _coin(prob: float) -> bool:
    return prob > 0 and float(torch.rand(())) < prob


def _pair(size: int | tuple[int, int], what: str) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h <= 0 or w <= 0:
        raise ValueError(f"{what} must be positive, got {size!r}.")
    return int(h), int(w)


def _check_inputs(image: Tensor, label: Tensor | None) -> None:
    if image.ndim != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
        raise ValueError(f"image must be a uint8 tensor (3, H, W), got {image.dtype} {tuple(image.shape)}.")
    if label is None:
        return
    if tuple(label.shape) != tuple(image.shape[1:]):
        raise ValueError(f"label must be (H, W) = {tuple(image.shape[1:])}, got {tuple(label.shape)}.")
    if label.dtype.is_floating_point or (label.numel() and (int(label.min()) < 0 or int(label.max()) > 255)):
        raise ValueError(f"label must hold integers in 0..255 (255 = ignore), got dtype {label.dtype}.")


def rescale_size(height: int, width: int, scale: tuple[int, int]) -> tuple[int, int]:
    """The size that fits an image into ``scale`` keeping its aspect ratio (mmseg's ``keep_ratio`` rule).

    The scale factor is the largest that keeps the long side <= ``max(scale)`` and the short side
    <= ``min(scale)``; images smaller than that are enlarged. With ``scale = (2048, 512)`` the short side becomes
    512 unless the aspect ratio exceeds 4.

    Args:
        height: Input height.
        width: Input width.
        scale: ``(long, short)`` bounds, in either order.

    Returns:
        ``(new_height, new_width)``, each at least 1.
    """
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))


def random_crop_box(
    label: Tensor,
    crop_size: tuple[int, int],
    cat_max_ratio: float = 1.0,
    ignore_index: int = IGNORE_INDEX,
    max_tries: int = 10,
) -> tuple[int, int, int, int]:
    """A random crop window, re-drawn until no class dominates it.

    Up to ``max_tries`` windows are drawn; the first in which the most frequent class (``ignore_index`` not
    counted) covers at most ``cat_max_ratio`` of the labelled pixels is kept, else the last one drawn.
    ``cat_max_ratio >= 1`` keeps the first window.

    Args:
        label: Labels ``(H, W)``.
        crop_size: ``(crop_h, crop_w)``; a side longer than the image is cropped to the full side.
        cat_max_ratio: Largest share one class may take.
        ignore_index: Label value left out of the counts.
        max_tries: Number of windows to try.

    Returns:
        ``(top, left, height, width)``.
    """
    h, w = label.shape[-2:]
    ch, cw = min(crop_size[0], h), min(crop_size[1], w)
    for _ in range(max(1, max_tries)):
        top = int(torch.randint(0, h - ch + 1, ()))
        left = int(torch.randint(0, w - cw + 1, ()))
        if cat_max_ratio >= 1.0:
            break
        window = label[top : top + ch, left : left + cw]
        counts = torch.bincount(window[window != ignore_index].long().flatten())
        if counts.numel() and int(counts.max()) <= cat_max_ratio * int(counts.sum()):
            break
    return top, left, ch, cw


def photometric_distortion(
    image: Tensor,
    brightness_delta: float = 32.0,
    contrast_range: tuple[float, float] = (0.5, 1.5),
    saturation_range: tuple[float, float] = (0.5, 1.5),
    hue_delta: int = 18,
) -> Tensor:
    """Random brightness, contrast, saturation and hue changes, each applied with probability 1/2.

    The steps of mmseg's ``PhotoMetricDistortion``, in its order: brightness (add ``U(-delta, delta)``), then
    contrast (multiply by ``U(*contrast_range)``) either first or last (a coin flip), saturation (HSV saturation
    multiplied by ``U(*saturation_range)``, capped at 1) and hue (rotated by ``randint(-hue_delta, hue_delta)``
    in OpenCV's 0-180 hue units, i.e. up to +-36 degrees). Values are kept in float and clipped to 0..255 after
    each step, rounded once at the end.

    Args:
        image: uint8 ``(3, H, W)`` RGB.
        brightness_delta: Largest brightness shift.
        contrast_range: Range of the contrast factor.
        saturation_range: Range of the saturation factor.
        hue_delta: Largest hue shift, in units of 2 degrees.

    Returns:
        uint8 ``(3, H, W)``.
    """
    img = image.float()
    if _coin(0.5):
        img = (img + _uniform(-brightness_delta, brightness_delta)).clamp_(0, 255)
    contrast_last = _coin(0.5)
    if not contrast_last and _coin(0.5):
        img = (img * _uniform(*contrast_range)).clamp_(0, 255)
    if _coin(0.5):
        # Scaling HSV saturation with hue and value fixed moves each channel towards the pixel's max:
        # c' = max - (max - c) * f, with f capped where saturation would exceed 1 (the min channel reaching 0).
        factor = _uniform(*saturation_range)
        high, low = img.amax(0, keepdim=True), img.amin(0, keepdim=True)
        cap = high / (high - low).clamp_min(1e-6)
        img = (high - (high - img) * cap.clamp(max=factor)).clamp_(0, 255)
    if _coin(0.5):
        shift = int(torch.randint(-hue_delta, hue_delta + 1, ()))
        img = F.adjust_hue(img / 255.0, shift / 180.0).mul_(255.0).clamp_(0, 255)
    if contrast_last and _coin(0.5):
        img = (img * _uniform(*contrast_range)).clamp_(0, 255)
    return img.round_().to(torch.uint8)


class TrainTransform:
    """The paper's training augmentation (mmseg pipeline of ZegCLIP/OTSeg), as one callable.

    Steps: random rescale keeping the aspect ratio into ``scale * r`` with ``r ~ U(ratio_range)`` (see
    :func:`rescale_size`; bilinear with antialiasing for the image, nearest for the label), random crop of
    ``crop_size`` with ``cat_max_ratio`` (see :func:`random_crop_box`), horizontal flip with ``flip_prob``,
    photometric distortion of the image (see :func:`photometric_distortion`), then bottom/right padding to
    ``crop_size`` with 0 (image) and 255 (label). Normalisation is left to the model.

    Args:
        crop_size: Output size, an int or ``(height, width)``.
        scale: ``(long, short)`` base scale of the rescale.
        ratio_range: Range of the random scale ratio ``r``.
        cat_max_ratio: Largest share of the crop one class may take (1 disables the check).
        flip_prob: Probability of a horizontal flip.
        photometric: Apply the photometric distortion.
        ignore_index: Label value of padding and of pixels left out of the class counts.

    Example:
        >>> t = TrainTransform(crop_size=64, scale=(256, 64))
        >>> image, label = t(torch.zeros(3, 50, 80, dtype=torch.uint8), torch.zeros(50, 80, dtype=torch.long))
        >>> image.shape, image.dtype, label.shape, label.dtype
        (torch.Size([3, 64, 64]), torch.uint8, torch.Size([64, 64]), torch.int64)
    """

    def __init__(
        self,
        crop_size: int | tuple[int, int] = 512,
        scale: tuple[int, int] = (2048, 512),
        ratio_range: tuple[float, float] = (0.5, 2.0),
        cat_max_ratio: float = 0.75,
        flip_prob: float = 0.5,
        photometric: bool = True,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        self.crop_size = _pair(crop_size, "crop_size")
        self.scale = _pair(scale, "scale")
        if not 0 < ratio_range[0] <= ratio_range[1]:
            raise ValueError(f"ratio_range must be (low, high) with 0 < low <= high, got {ratio_range!r}.")
        if not 0 < cat_max_ratio:
            raise ValueError(f"cat_max_ratio must be > 0 (1 disables the check), got {cat_max_ratio!r}.")
        if not 0 <= flip_prob <= 1:
            raise ValueError(f"flip_prob must lie in [0, 1], got {flip_prob!r}.")
        self.ratio_range = (float(ratio_range[0]), float(ratio_range[1]))
        self.cat_max_ratio = float(cat_max_ratio)
        self.flip_prob = float(flip_prob)
        self.photometric = photometric
        self.ignore_index = ignore_index

    def __repr__(self) -> str:
        return (
            f"TrainTransform(crop_size={self.crop_size}, scale={self.scale}, ratio_range={self.ratio_range}, "
            f"cat_max_ratio={self.cat_max_ratio}, flip_prob={self.flip_prob}, photometric={self.photometric})"
        )

    def __call__(self, image: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
        """Augment one pair.

        Args:
            image: uint8 ``(3, H, W)`` RGB.
            label: Integer ``(H, W)`` with values in ``0..255``.

        Returns:
            ``(image uint8 (3, crop_h, crop_w), label int64 (crop_h, crop_w))``.
        """
        _check_inputs(image, label)
        img = tv_tensors.Image(image)
        mask = tv_tensors.Mask(label.to(torch.uint8))  # 8-bit inside: values are 0..255

        ratio = _uniform(*self.ratio_range)
        scale = (int(self.scale[0] * ratio), int(self.scale[1] * ratio))
        size = list(rescale_size(image.shape[1], image.shape[2], scale))
        img = F.resize(img, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
        mask = F.resize(mask, size, interpolation=InterpolationMode.NEAREST)

        top, left, ch, cw = random_crop_box(mask, self.crop_size, self.cat_max_ratio, self.ignore_index)
        img, mask = F.crop(img, top, left, ch, cw), F.crop(mask, top, left, ch, cw)

        if _coin(self.flip_prob):
            img, mask = F.horizontal_flip(img), F.horizontal_flip(mask)
        if self.photometric:
            img = tv_tensors.Image(photometric_distortion(img.as_subclass(Tensor)))

        pad_h, pad_w = self.crop_size[0] - ch, self.crop_size[1] - cw
        if pad_h or pad_w:
            img = F.pad(img, [0, 0, pad_w, pad_h], fill=0)
            mask = F.pad(mask, [0, 0, pad_w, pad_h], fill=self.ignore_index)
        return img.as_subclass(Tensor).contiguous(), mask.as_subclass(Tensor).long()
