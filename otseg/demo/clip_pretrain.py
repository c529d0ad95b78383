"""Contrastive pre-training of a small open_clip CLIP on captioned synthetic images (seen classes only).

It gives the CPU demo a CLIP whose text side generalises to unseen colour x pattern names, so that zero-shot
segmentation can be shown without downloading real CLIP weights. Images show one or a few objects of seen classes;
every class in a batch gets a caption from the model's own prompt templates, and an image is a positive of the
caption of every class it shows. The loss is CLIP's symmetric cross-entropy with these (soft) targets.

Image-caption similarity comes from one of two poolings:

- ``"image"``: CLIP's own global image embedding (here the mean of the patch tokens) against the caption.
- ``"tokens"`` (the demo's): a soft maximum over the patch tokens of ``cos(token, caption)``, the late interaction
  of FILIP (Yao et al., 2021), ``tau * log mean_m exp(cos_m / tau)``. Only captions and images are used, no masks,
  yet every patch is pushed towards the caption of what it shows, so the patch embeddings a segmentor reads are
  aligned with the text. With the global embedding, a tiny CLIP matches the text on average over the image while
  its single patches do not match it at all (patch-level zero-shot below chance), and OTSeg, whose MPS score map
  and decoder compare patches with prompts, then learns seen classes slowly and transfers poorly.
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

__all__ = ["PretrainConfig", "patch_embeddings", "patch_zero_shot_accuracy", "pretrain_clip", "zero_shot_accuracy"]


@dataclass(frozen=True)
class PretrainConfig:
    """Contrastive pre-training settings."""

    steps: int = 700  # optimizer steps
    batch_size: int = 64  # images per step
    pooling: str = "tokens"  # image-caption similarity: "tokens" (soft max over patches) or "image" (global)
    token_temperature: float = 0.1  # tau of the soft maximum over patches
    min_objects: int = 1  # objects per pre-training image
    max_objects: int = 3
    lr: float = 1e-3  # peak learning rate (AdamW); needs the warm-up below
    warmup: int = 70  # linear warm-up steps (without it training can collapse to log(batch))
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # max gradient norm
    seed: int = 0
    stream: int = 7  # image stream of the world (independent of segmentation training and evaluation)

    def __post_init__(self) -> None:
        if self.pooling not in ("tokens", "image"):
            raise ValueError(f"pooling must be 'tokens' or 'image', got {self.pooling!r}.")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}.")
        if self.token_temperature <= 0:
            raise ValueError(f"token_temperature must be > 0, got {self.token_temperature}.")


def _normalise(images: Tensor) -> Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images.float() - mean) / std


def _batch(
    world: SyntheticWorld, classes: Sequence[int], start: int, size: int, stream: int
) -> tuple[Tensor, list[tuple[int, ...]]]:
    """``size`` images of ``classes`` (``(B, 3, H, W)`` uint8) and the classes each shows."""
    images, present = [], []
    for i in range(start, start + size):
        sample = world.render(i, classes=classes, stream=stream)
        images.append(torch.from_numpy(np.ascontiguousarray(sample.image.transpose(2, 0, 1))))
        present.append(sample.classes)
    return torch.stack(images), present


def _with_objects(world: SyntheticWorld, min_objects: int, max_objects: int) -> SyntheticWorld:
    """The same world with another number of objects per image."""
    return SyntheticWorld(
        dict(world.palette),
        world.shapes,
        image_size=world.image_size,
        min_objects=min_objects,
        max_objects=max_objects,
        seed=world.seed,
        patterns=world.patterns,
        object_gap=world.object_gap,
    )


def patch_embeddings(clip: CLIP, images: Tensor) -> Tensor:
    """Patch-token embeddings ``(B, M, C)`` of normalised images, as OTSeg's image encoder reads them.

    The tokens of CLIP's ViT after its last block, ``ln_post`` and the output projection (no prompts).
    """
    visual = clip.visual
    x = visual.conv1(images)  # (B, W, h, w)
    batch, width = x.shape[:2]
    x = x.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).view(1, 1, width).expand(batch, 1, width)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    x = visual.transformer(visual.ln_pre(x))
    return visual.ln_post(x[:, 1:]) @ visual.proj


def _similarity(clip: CLIP, images: Tensor, text: Tensor, pooling: str, temperature: float) -> Tensor:
    """Cosine image-caption similarity ``(B, S)`` for normalised images and L2-normalised captions ``(S, C)``."""
    if pooling == "image":
        return F.normalize(clip.encode_image(images), dim=-1) @ text.T
    tokens = F.normalize(patch_embeddings(clip, images), dim=-1)  # (B, M, C)
    sim = torch.einsum("bmc,sc->bsm", tokens, text)
    return temperature * (torch.logsumexp(sim / temperature, dim=-1) - math.log(sim.shape[-1]))


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

    Each step draws ``batch_size`` images of ``cfg.min_objects .. cfg.max_objects`` objects; every class present in
    the batch gets one caption from a random template. Image -> caption and caption -> image cross-entropies, with
    every (image, caption of a class it shows) pair a positive (soft targets spread over the positives), are
    averaged. AdamW with linear warm-up and cosine decay, gradient clipping.
    """
    torch.manual_seed(cfg.seed)
    scenes = _with_objects(world, cfg.min_objects, cfg.max_objects)
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
            images, present = _batch(scenes, classes, step * cfg.batch_size, cfg.batch_size, cfg.stream)
            batch_classes = sorted({k for shown in present for k in shown})
            captions = [templates[int(rng.integers(len(templates)))].format(names[k]) for k in batch_classes]
            target = torch.tensor([[float(k in shown) for k in batch_classes] for shown in present])  # (B, S)
            txt = F.normalize(clip.encode_text(tokenizer(captions)), dim=-1)
            sim = _similarity(clip, _normalise(images), txt, cfg.pooling, cfg.token_temperature)
            logits = clip.logit_scale.exp().clamp(max=100) * sim  # (B, classes in batch)
            loss_img = -(target / target.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
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


def _class_text(
    clip: CLIP, tokenizer: Callable[[list[str]], Tensor], names: Sequence[str], templates: Sequence[str]
) -> Tensor:
    """CLIP's zero-shot classifier: per class the L2-normalised mean of its template embeddings, ``(K, C)``."""
    rows = []
    for name in names:
        emb = F.normalize(clip.encode_text(tokenizer([t.format(name) for t in templates])), dim=-1).mean(0)
        rows.append(F.normalize(emb, dim=-1))
    return torch.stack(rows)


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
    pooling: str = "tokens",
    token_temperature: float = 0.1,
) -> float:
    """Share of single-object images of ``classes`` whose best-matching name among ``candidates`` is right.

    Class text embeddings average the templates (CLIP's zero-shot classifier); the image-caption similarity is
    the pooling the CLIP was pre-trained with.
    """
    clip.eval()
    images, present = _batch(_with_objects(world, 1, 1), classes, 0, num_images, stream)
    ids = torch.tensor([shown[0] for shown in present])
    txt = _class_text(clip, tokenizer, [world.class_names[k] for k in candidates], templates)
    sim = _similarity(clip, _normalise(images), txt, pooling, token_temperature)
    pred = torch.tensor(list(candidates))[sim.argmax(1)]
    return float((pred == ids).float().mean())


@torch.no_grad()
def patch_zero_shot_accuracy(
    clip: CLIP,
    tokenizer: Callable[[list[str]], Tensor],
    world: SyntheticWorld,
    classes: Sequence[int],
    candidates: Sequence[int],
    templates: Sequence[str],
    num_images: int = 100,
    stream: int = 11,
    require: Sequence[int] | None = None,
) -> float:
    """Share of object patches of ``classes`` whose best-matching name among ``candidates`` is right.

    Images of ``world`` (objects of any class, at least one of ``require`` each when given); a patch counts when
    more than half of its pixels show one class of ``classes``. Patch embeddings against the zero-shot classifier:
    how well the CLIP alone segments, before any OTSeg training.
    """
    clip.eval()
    patch = clip.visual.patch_size[0]
    txt = _class_text(clip, tokenizer, [world.class_names[k] for k in candidates], templates)
    names = torch.tensor(list(candidates))
    right = total = 0
    for start in range(0, num_images, 50):
        size = min(50, num_images - start)
        images, labels = [], []
        for i in range(start, start + size):
            sample = world.render(i, require=require, stream=stream)
            images.append(torch.from_numpy(np.ascontiguousarray(sample.image.transpose(2, 0, 1))))
            labels.append(torch.from_numpy(sample.label.astype(np.int64)))
        images_t, labels_t = torch.stack(images), torch.stack(labels)
        b, h, w = labels_t.shape
        cells = labels_t[:, : h - h % patch, : w - w % patch].reshape(b, h // patch, patch, w // patch, patch)
        cells = cells.permute(0, 1, 3, 2, 4).reshape(b, -1, patch * patch)  # (B, M, p*p)
        majority = cells.mode(-1).values  # (B, M)
        share = (cells == majority[..., None]).float().mean(-1)
        wanted = torch.isin(majority, torch.tensor(list(classes))) & (share > 0.5)
        tokens = F.normalize(patch_embeddings(clip, _normalise(images_t)), dim=-1)
        pred = names[(tokens @ txt.T).argmax(-1)]
        right += int((pred == majority)[wanted].sum())
        total += int(wanted.sum())
    return right / max(total, 1)
