"""The model learns (overfits a handful of images), and the full ViT-B/16 configuration runs at 512x512."""

from __future__ import annotations

import torch

from otseg.build import build_otseg
from otseg.engine.stats import model_stats
from otseg.modeling.losses import OTSegLoss


def _squares(n, seed=0):
    """Images with a red, a green and a blue square on grey noise; squares are classes 0-2, the rest 255."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 64, 64, generator=gen) * 60 + 100
    labels = torch.full((n, 64, 64), 255)
    colours = torch.tensor([[230.0, 30, 30], [30, 230, 30], [30, 30, 230]])
    for i in range(n):
        for k in range(3):
            y, x = torch.randint(0, 44, (2,), generator=gen).tolist()
            size = 12 + int(torch.randint(0, 8, (1,), generator=gen))
            images[i, :, y : y + size, x : x + size] = colours[k, :, None, None]
            labels[i, y : y + size, x : x + size] = k
    return images, labels


def _miou(model, images, labels, text):
    model.eval()
    with torch.no_grad():
        pred = model.probabilities(model(images, text)).argmax(1)
    model.train()
    ious = []
    for k in range(3):
        p, t = (pred == k) & (labels != 255), labels == k
        ious.append(float((p & t).sum()) / max(float((p | t).sum()), 1.0))
    return 100 * sum(ious) / 3


def test_tiny_model_overfits_a_few_images():
    torch.manual_seed(0)
    model = build_otseg("otseg-tiny", allow_random_clip=True)
    images, labels = _squares(6)
    text = model.class_embeddings(["red", "green", "blue"])
    loss_fn = OTSegLoss()
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3, weight_decay=0.01)
    before = _miou(model, images, labels, text)
    losses = []
    for _ in range(200):
        loss = loss_fn(model(images, text), labels)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    after = _miou(model, images, labels, text)
    assert sum(losses[-10:]) / 10 < 0.3 * sum(losses[:10]) / 10
    assert after > before + 25 and after > 60


def test_full_vit_b16_forward_at_512():
    torch.manual_seed(0)
    model = build_otseg("otseg-vit-b16", allow_random_clip=True).eval()
    text = torch.nn.functional.normalize(torch.randn(20, 6, 512), dim=-1)
    with torch.no_grad():
        out = model(torch.rand(1, 3, 512, 512) * 255, text)
    assert out["decoder"].shape == out["score"].shape == (1, 20, 512, 512)
    assert bool(torch.isfinite(out["decoder"]).all() & torch.isfinite(out["score"]).all())
    assert model.image_encoder.positional_embedding.shape == (1 + 32 * 32, 768)
    stats = model_stats(model, image_size=512, num_classes=20)
    # prompts (10 + 11 x 10 tokens, shared 768x768 projection, norm) + descriptor + 3 decoder layers
    vpt = 10 * 768 + 11 * 10 * 768 + 768 * 768 + 768 + 2 * 768
    layer = 4 * (512 * 512 + 512) + 2 * 512 * 2048 + 2048 + 512 + 4 * 512
    assert stats.trainable_params == vpt + (1024 * 512 + 512) + 3 * layer
    assert stats.gflops > stats.image_encoder_gflops > 0.9 * stats.gflops
