"""Training and test transforms: sizes, padding values, label integrity, cat_max_ratio, flip consistency."""

from __future__ import annotations

import pytest
import torch

from otseg.data import ADE20KDataset, TrainTransform
from otseg.data.transforms import photometric_distortion, random_crop_box, rescale_size

# Colours that encode labels 0..5: every channel differs between classes, so any mismatch shows.
PALETTE = torch.tensor([[10, 200, 30], [60, 150, 80], [110, 100, 130], [160, 50, 180], [210, 0, 230], [250, 30, 5]])


def _blocks(h, w, classes=6, block=8, seed=0):
    """A label map of random ``block x block`` tiles and the image whose colour encodes it."""
    gen = torch.Generator().manual_seed(seed)
    tiles = torch.randint(0, classes, ((h + block - 1) // block, (w + block - 1) // block), generator=gen)
    label = tiles.repeat_interleave(block, 0).repeat_interleave(block, 1)[:h, :w]
    image = PALETTE[label].permute(2, 0, 1).to(torch.uint8)
    return image, label


def _no_geometry(crop, h, w, **kwargs):
    """A TrainTransform that never rescales (scale = image size, ratio 1) and never distorts colours."""
    return TrainTransform(crop, scale=(max(h, w), min(h, w)), ratio_range=(1.0, 1.0), photometric=False, **kwargs)


@pytest.mark.parametrize(("h", "w"), [(40, 60), (200, 130), (512, 683), (7, 300)])
def test_train_output_has_the_crop_size_and_dtypes(h, w):
    image, label = _blocks(h, w)
    out_image, out_label = TrainTransform(crop_size=64, scale=(256, 64))(image, label)
    assert out_image.shape == (3, 64, 64)
    assert out_image.dtype == torch.uint8
    assert out_label.shape == (64, 64)
    assert out_label.dtype == torch.int64
    assert type(out_image) is torch.Tensor
    assert type(out_label) is torch.Tensor


def test_train_rectangular_crop():
    image, label = _blocks(100, 100)
    out_image, out_label = TrainTransform(crop_size=(48, 80), scale=(200, 100))(image, label)
    assert out_image.shape == (3, 48, 80)
    assert out_label.shape == (48, 80)


def test_padding_is_zero_for_the_image_and_ignore_for_the_label():
    image = torch.full((3, 20, 30), 255, dtype=torch.uint8)
    label = torch.full((20, 30), 3)
    for seed in range(5):
        torch.manual_seed(seed)
        out_image, out_label = TrainTransform(64, scale=(32, 16), photometric=False)(image, label)
        pad = out_label == 255
        assert bool(pad.any())  # the rescaled image (short side <= 32) is smaller than the crop
        assert bool((out_image[:, pad] == 0).all())
        assert bool((out_image[:, ~pad] == 255).all())
        assert bool((out_label[~pad] == 3).all())
        # padding sits at the bottom and the right
        rows, cols = torch.nonzero(~pad, as_tuple=True)
        assert int(rows.min()) == 0
        assert int(cols.min()) == 0


def test_label_values_survive_the_transform():
    image, label = _blocks(97, 131, classes=4)
    label = torch.tensor([3, 7, 11, 40])[label]
    label[:10] = 255
    allowed = {3, 7, 11, 40, 255}
    for seed in range(20):
        torch.manual_seed(seed)
        _, out_label = TrainTransform(64, scale=(256, 64))(image, label)
        assert set(out_label.unique().tolist()) <= allowed


def test_random_crop_box_respects_cat_max_ratio_where_possible():
    label = torch.zeros(100, 100, dtype=torch.long)
    label[:, 70:] = 1  # a 40-wide window holds >= 25% of class 1 only when it starts at column >= 40
    label[:5] = 255  # ignored rows never count

    def share(top, left, h, w):
        counts = torch.bincount(label[top : top + h, left : left + w].flatten(), minlength=256)[:255]
        return float(counts.max() / counts.sum())

    ok_strict = ok_loose = 0
    for seed in range(50):
        torch.manual_seed(seed)
        ok_strict += share(*random_crop_box(label, (40, 40), cat_max_ratio=0.75)) <= 0.75
        torch.manual_seed(seed)
        ok_loose += share(*random_crop_box(label, (40, 40), cat_max_ratio=1.0)) <= 0.75
    assert ok_strict >= 45  # fails only when 10 tries in a row miss (probability ~0.016 each)
    assert ok_loose <= 30  # a single window succeeds with probability ~0.34


def test_random_crop_box_falls_back_when_no_window_qualifies():
    label = torch.zeros(50, 60, dtype=torch.long)
    top, left, h, w = random_crop_box(label, (32, 32), cat_max_ratio=0.75)
    assert (h, w) == (32, 32)
    assert 0 <= top <= 18
    assert 0 <= left <= 28
    assert random_crop_box(label, (80, 90), cat_max_ratio=0.75) == (0, 0, 50, 60)


def test_train_transform_applies_cat_max_ratio():
    image, _ = _blocks(100, 100)
    label = torch.zeros(100, 100, dtype=torch.long)
    label[:, 70:] = 1
    ok = 0
    for seed in range(30):
        torch.manual_seed(seed)
        _, out = _no_geometry(40, 100, 100, flip_prob=0.0)(image, label)
        counts = torch.bincount(out.flatten())
        ok += float(counts.max() / counts.sum()) <= 0.75
    assert ok >= 26


@pytest.mark.parametrize("flip_prob", [0.0, 0.5, 1.0])
def test_image_and_label_stay_aligned(flip_prob):
    image, label = _blocks(72, 96)
    for seed in range(10):
        torch.manual_seed(seed)
        out_image, out_label = _no_geometry(48, 72, 96, flip_prob=flip_prob)(image, label)
        assert out_image.shape == (3, 48, 48)
        assert torch.equal(out_image, PALETTE[out_label].permute(2, 0, 1).to(torch.uint8))


def test_flip_mirrors_image_and_label_together():
    image, label = _blocks(24, 40)
    out_image, out_label = _no_geometry(48, 24, 40, flip_prob=1.0)(image, label)  # crop >= image: no crop
    assert torch.equal(out_image[:, :24, :40], image.flip(-1))
    assert torch.equal(out_label[:24, :40], label.flip(-1))
    assert bool((out_label[24:] == 255).all())
    assert bool((out_label[:, 40:] == 255).all())
    kept_image, kept_label = _no_geometry(48, 24, 40, flip_prob=0.0)(image, label)
    assert torch.equal(kept_image[:, :24, :40], image)
    assert torch.equal(kept_label[:24, :40], label)


def test_train_transform_is_deterministic_under_manual_seed():
    image, label = _blocks(120, 90)
    t = TrainTransform(64, scale=(256, 64))
    torch.manual_seed(123)
    a = t(image, label)
    torch.manual_seed(123)
    b = t(image, label)
    torch.manual_seed(124)
    c = t(image, label)
    assert torch.equal(a[0], b[0])
    assert torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_photometric_distortion_keeps_gray_gray_and_changes_colours():
    gray = torch.arange(0, 256, dtype=torch.uint8).repeat(3, 16, 1)  # (3, 16, 256), equal channels
    colour, _ = _blocks(16, 32)
    changed = 0
    for seed in range(20):
        torch.manual_seed(seed)
        out = photometric_distortion(gray)
        assert out.dtype == torch.uint8
        assert out.shape == gray.shape
        assert torch.equal(out[0], out[1])
        assert torch.equal(out[1], out[2])
        torch.manual_seed(seed)
        changed += not torch.equal(photometric_distortion(colour), colour)
    assert changed >= 15  # each of 4 steps fires with probability 1/2: unchanged ~1/16 of the time


def test_photometric_distortion_leaves_the_label_alone():
    image, label = _blocks(64, 64)
    for seed in range(10):
        torch.manual_seed(seed)
        _, with_photo = TrainTransform(48, scale=(64, 64), ratio_range=(1.0, 1.0), flip_prob=0.0)(image, label)
        torch.manual_seed(seed)
        _, without = _no_geometry(48, 64, 64, flip_prob=0.0)(image, label)
        assert torch.equal(with_photo, without)


@pytest.mark.parametrize(
    ("h", "w", "scale", "expected"),
    [
        (512, 683, (2048, 512), (512, 683)),
        (364, 500, (2048, 512), (512, 703)),
        (300, 400, (2048, 512), (512, 683)),
        (500, 3000, (2048, 512), (341, 2048)),  # aspect > 4: the long side binds
        (375, 500, (520, 520), (390, 520)),  # Context's test scale bounds the long side
        (30, 40, (512, 2048), (512, 683)),  # order of the scale pair does not matter; small images grow
    ],
)
def test_rescale_size_follows_keep_ratio(h, w, scale, expected):
    assert rescale_size(h, w, scale) == expected


def test_train_transform_on_real_images(fixtures_dir):
    ds = ADE20KDataset(fixtures_dir / "ade20k_sample", transform=TrainTransform(crop_size=128, scale=(512, 128)))
    raw = ADE20KDataset(fixtures_dir / "ade20k_sample")
    for item, plain in zip(ds, raw, strict=True):
        assert item["image"].shape == (3, 128, 128)
        assert set(item["label"].unique().tolist()) <= set(plain["label"].unique().tolist()) | {255}


def test_bad_inputs_are_rejected():
    image, label = _blocks(20, 20)
    with pytest.raises(ValueError, match="uint8 tensor"):
        TrainTransform(16)(image.float(), label)
    with pytest.raises(ValueError, match="label must be"):
        TrainTransform(16)(image, label[:10])
    with pytest.raises(ValueError, match="ratio_range"):
        TrainTransform(16, ratio_range=(2.0, 0.5))
    with pytest.raises(ValueError, match="crop_size must be positive"):
        TrainTransform(0)
    with pytest.raises(ValueError, match=r"integers in 0\.\.255"):
        TrainTransform(16)(image, label + 300)
