"""Contrastive pre-training of a small open_clip CLIP on captioned synthetic images (seen classes only).

It gives the CPU demo a CLIP whose text side generalises to unseen colour x shape names, so that zero-shot
segmentation can be shown without downloading real CLIP weights. Images show one object of a seen class; the
captions use the model's own prompt templates. The loss is CLIP's symmetric cross-entropy, with every image of
a class a positive of that class's caption (a batch holds several images per class).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from torch import Tensor

from otseg.data.synthetic import SyntheticWorld
from otseg.modeling.segmentor import IMAGENET_MEAN, IMAGENET_STD
from otseg.utils.progress import make_progress

__all__ = ["PretrainConfig", "pretrain_clip", "zero_shot_accuracy"]


@dataclass(frozen=True)
class PretrainConfig:
    """Contrastive pre-training settings."""

    steps: int = 700  # optimizer steps
    batch_size: int = 64  # images per step
    lr: float = 1e-3  # peak learning rate (AdamW); needs the warm-up below
    warmup: int = 70  # linear warm-up steps (without it training can collapse to log(batch))
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # max gradient norm
    seed: int = 0
    stream: int = 7  # image stream of the world (independent of segmentation training and evaluation)


def _normalise(images: Tensor) -> Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images.float() - mean) / std


def _batch(world: SyntheticWorld, classes: Sequence[int], start: int, size: int, stream: int) -> tuple[Tensor, Tensor]:
    """``size`` single-object images of ``classes`` (``(B, 3, H, W)`` uint8) and their class ids ``(B,)``."""
    images, ids = [], []
    for i in range(start, start + size):
        sample = world.render(i, classes=classes, stream=stream)
        images.append(torch.from_numpy(np.ascontiguousarray(sample.image.transpose(2, 0, 1))))
        ids.append(sample.classes[0])
    return torch.stack(images), torch.tensor(ids)


def _single_object(world: SyntheticWorld) -> SyntheticWorld:
    return SyntheticWorld(
        dict(world.palette),
        world.shapes,
        image_size=world.image_size,
        min_objects=1,
        max_objects=1,
        seed=world.seed,
        patterns=world.patterns,
    )


def pretrain_clip(
    clip: CLIP,
    tokenizer: Callable[[list[str]], Tensor],
    world: SyntheticWorld,
    classes: Sequence[int],
    templates: Sequence[str],
    cfg: PretrainConfig = PretrainConfig(),
    show_progress: bool = True,
) -> list[float]:
    """Train ``clip`` in place on images of ``classes``; returns the loss of every step.

    Each step draws ``batch_size`` single-object images; every class present in the batch gets one caption from a
    random template. Image -> caption and caption -> image cross-entropies (soft targets over the images of a
    class) are averaged. AdamW with linear warm-up and cosine decay, gradient clipping.
    """
    torch.manual_seed(cfg.seed)
    single = _single_object(world)
    names = world.class_names
    optimizer = torch.optim.AdamW(clip.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    losses = []
    clip.train()
    progress = make_progress(transient=True) if show_progress else None
    task = progress.add_task("pre-training CLIP", total=cfg.steps, info="") if progress else None
    if progress:
        progress.start()
    try:
        for step in range(cfg.steps):
            if step < cfg.warmup:
                lr = cfg.lr * (step + 1) / cfg.warmup
            else:
                lr = 0.5 * cfg.lr * (1 + math.cos(math.pi * (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)))
            for group in optimizer.param_groups:
                group["lr"] = lr
            images, ids = _batch(single, classes, step * cfg.batch_size, cfg.batch_size, cfg.stream)
            present = torch.unique(ids)
            captions = [templates[int(rng.integers(len(templates)))].format(names[int(k)]) for k in present]
            img = F.normalize(clip.encode_image(_normalise(images)), dim=-1)
            txt = F.normalize(clip.encode_text(tokenizer(captions)), dim=-1)
            logits = clip.logit_scale.exp().clamp(max=100) * img @ txt.T  # (B, classes in batch)
            target = (ids[:, None] == present[None, :]).float()  # one positive caption per image
            loss_img = F.cross_entropy(logits, target.argmax(1))
            loss_txt = -(target.T / target.T.sum(1, keepdim=True) * logits.T.log_softmax(1)).sum(1).mean()
            loss = 0.5 * (loss_img + loss_txt)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(clip.parameters(), cfg.grad_clip)
            optimizer.step()
            losses.append(float(loss.detach()))
            if progress:
                progress.update(task, completed=step + 1, info=f"loss {losses[-1]:.3f}")
    finally:
        if progress:
            progress.stop()
    clip.eval()
    return losses


@torch.no_grad()
def zero_shot_accuracy(
    clip: CLIP,
    tokenizer: Callable[[list[str]], Tensor],
    world: SyntheticWorld,
    classes: Sequence[int],
    candidates: Sequence[int],
    templates: Sequence[str],
    num_images: int = 300,
    stream: int = 11,
) -> float:
    """Share of single-object images of ``classes`` whose best-matching name among ``candidates`` is right.

    Class text embeddings average the templates (CLIP's zero-shot classifier).
    """
    clip.eval()
    images, ids = _batch(_single_object(world), classes, 0, num_images, stream)
    names = world.class_names
    txt = []
    for k in candidates:
        emb = F.normalize(clip.encode_text(tokenizer([t.format(names[k]) for t in templates])), dim=-1).mean(0)
        txt.append(F.normalize(emb, dim=-1))
    img = F.normalize(clip.encode_image(_normalise(images)), dim=-1)
    pred = torch.tensor(list(candidates))[(img @ torch.stack(txt).T).argmax(1)]
    return float((pred == ids).float().mean())
