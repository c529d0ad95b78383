"""Inference: window layout, sliding window vs whole image, resizing, the predictor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from otseg.build import build_otseg
from otseg.predictor import (
    InferenceSettings,
    OTSegPredictor,
    predict_probabilities,
    resize_short_side,
    slide_windows,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_otseg("otseg-tiny", allow_random_clip=True).eval()


@pytest.mark.parametrize(("h", "w", "crop", "stride"), [(512, 683, 512, 426), (364, 500, 128, 100), (50, 50, 64, 32)])
def test_windows_cover_the_image_within_bounds(h, w, crop, stride):
    cover = torch.zeros(h, w, dtype=torch.int32)
    for y0, y1, x0, x1 in slide_windows(h, w, crop, stride):
        assert 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w
        assert y1 - y0 == min(crop, h) and x1 - x0 == min(crop, w)
        cover[y0:y1, x0:x1] += 1
    assert bool((cover > 0).all())


def test_sliding_window_equals_whole_image_when_the_crop_covers_it(model):
    text = model.class_embeddings(["a", "b", "c"])
    images = torch.rand(2, 3, 56, 64) * 255
    whole = predict_probabilities(model, images, text, InferenceSettings(short_side=None, mode="whole"))
    slide = predict_probabilities(model, images, text, InferenceSettings(short_side=None, crop=64, stride=32))
    torch.testing.assert_close(slide, whole)
    # overlapping windows: averaged, finite, in range
    small = predict_probabilities(model, images, text, InferenceSettings(short_side=None, crop=32, stride=16))
    assert small.shape == whole.shape and bool(torch.isfinite(small).all())


def test_resize_short_side_keeps_ratio_and_caps_the_long_side():
    assert resize_short_side(torch.zeros(1, 3, 300, 400), 512).shape[-2:] == (512, 683)
    assert resize_short_side(torch.zeros(1, 3, 100, 1000), 512, long_side_max=2048).shape[-2:] == (205, 2048)
    assert resize_short_side(torch.zeros(1, 3, 10, 20), None).shape[-2:] == (10, 20)


def test_predictor_any_sizes_and_calibration(model):
    predictor = OTSegPredictor(model, InferenceSettings(short_side=64, crop=64, stride=48))
    with pytest.raises(RuntimeError, match="set_classes"):
        predictor.predict([np.zeros((10, 10, 3), dtype=np.uint8)])
    predictor.set_classes(["sky", "tree", "zebra"], seen=["sky", "tree"])
    images = [
        np.random.default_rng(0).integers(0, 255, (40, 70, 3), dtype=np.uint8),
        torch.randint(0, 255, (3, 90, 60)),
    ]
    labels = predictor.predict(images)
    assert labels[0].shape == (40, 70) and labels[1].shape == (90, 60)
    assert all(lab.min() >= 0 and lab.max() < 3 for lab in labels)
    with pytest.raises(ValueError, match="not among the class names"):
        predictor.set_classes(["sky"], seen=["tree"])


def test_settings_are_validated():
    with pytest.raises(ValueError, match="stride"):
        InferenceSettings(crop=64, stride=128)
    with pytest.raises(ValueError, match="mode"):
        InferenceSettings(mode="tiles")
