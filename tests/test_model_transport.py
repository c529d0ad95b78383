"""OTSeg.transport: the MPS plan of an image, consistent with forward's score map and with its marginals."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from otseg.build import build_otseg
from otseg.config import get_model_config


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_otseg(get_model_config("otseg-tiny"), allow_random_clip=True).eval()


@pytest.fixture(scope="module")
def text(model):
    return model.class_embeddings(["cat", "dog", "red car", "sky"])


@pytest.fixture(scope="module")
def images():
    return torch.randint(0, 256, (2, 3, 72, 56), generator=torch.Generator().manual_seed(1)).float()


@torch.no_grad()
def test_plan_shape_and_marginals(model, text, images):
    out = model.transport(images, text)
    h, w = out.grid
    assert (h, w) == (72 // 8, 56 // 8)
    batch, k, n = images.shape[0], text.shape[0], text.shape[1]
    assert out.plan.shape == out.similarity.shape == (batch, k, h * w, n)
    assert out.score.shape == (batch, k, h, w)
    m = h * w
    torch.testing.assert_close(out.plan.sum(-1), torch.full((batch, k, m), 1 / m), atol=1e-6, rtol=1e-3)
    torch.testing.assert_close(out.plan.sum(-2), torch.full((batch, k, n), 1 / n), atol=1e-6, rtol=1e-3)


@torch.no_grad()
def test_score_is_forwards_score_before_upsampling(model, text, images):
    out = model.transport(images, text)
    dense, global_embedding = model.image_encoder(model.normalize(images))
    head = model.head(dense, global_embedding, text)
    torch.testing.assert_close(out.score, head.score)
    upsampled = F.interpolate(out.score, size=images.shape[-2:], mode="bilinear", align_corners=False)
    torch.testing.assert_close(upsampled, model(images, text)["score"])
    expected = (out.plan * out.similarity).sum(-1) * out.plan.shape[-2] * out.plan.shape[-1]
    torch.testing.assert_close(out.score.flatten(2), expected)


@torch.no_grad()
def test_forward_outputs_are_unchanged_by_a_transport_call(model, text, images):
    before = model(images, text)
    model.transport(images, text)
    after = model(images, text)
    assert set(before) == {"decoder", "score"}
    for key in before:
        torch.testing.assert_close(before[key], after[key])
