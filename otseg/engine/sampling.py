"""What a training step sees: a seeded stream of augmented batches, remapped labels and pseudo-labels.

Labels are remapped for the zero-shot setting; in the transductive one, unseen pixels get pseudo-labels.

Reproducibility: the sample order is a seeded permutation per epoch, cut into global batches that are split
across processes; every sample's augmentation is seeded by ``(seed, draw number)``. Resuming at a step therefore
continues the same stream.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import Dataset

from otseg.data.classes import IGNORE_INDEX, ZeroShotSplit
from otseg.data.transforms import TrainTransform

__all__ = ["UNSEEN_MARK", "AugmentedSamples", "GlobalBatches", "label_map", "pseudo_label"]

UNSEEN_MARK = 254  # transductive training: pixels of unseen classes, to be pseudo-labelled


class AugmentedSamples(Dataset):
    """A dataset whose item ``(index, draw)`` is augmented with the RNG seeded by ``(seed, draw)``.

    The label is then remapped for the training setting by ``lookup`` ``(256,)``.
    """

    def __init__(self, dataset: Dataset, transform: TrainTransform, lookup: Tensor, seed: int) -> None:
        self.dataset, self.transform, self.lookup, self.seed = dataset, transform, lookup, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, Tensor]:
        index, draw = key
        item = self.dataset[index]
        with torch.random.fork_rng(devices=[]):  # only the CPU generator: CUDA's (dropout) stays untouched
            torch.default_generator.manual_seed(self.seed * 1_000_003 + draw)
            image, label = self.transform(item["image"], item["label"])
        return image, self.lookup[label]


class GlobalBatches:
    """Batch sampler: epochs of seeded permutations cut into global batches, this process's share of each.

    Yields, for steps ``start .. iters - 1`` and each accumulation micro-step, a list of ``(index, draw)`` keys,
    where ``draw`` numbers the sample within the whole run (the augmentation seed).

    Args:
        length: Samples in the dataset.
        batch_size: Global batch of one optimizer step.
        grad_accum: Micro-steps per optimizer step.
        iters: Optimizer steps of the run.
        seed: Seed of the permutations.
        rank: This process.
        world: Number of processes.
        start: First step (resume).
    """

    def __init__(
        self, length: int, batch_size: int, grad_accum: int, iters: int, seed: int, rank: int, world: int, start: int
    ) -> None:
        if batch_size % (world * grad_accum):
            raise ValueError(
                f"batch_size {batch_size} must be divisible by processes x grad_accum = {world} x {grad_accum}."
            )
        if length == 0:
            raise ValueError("the training dataset is empty.")
        self.length, self.grad_accum, self.iters, self.seed = length, grad_accum, iters, seed
        self.rank, self.world, self.start = rank, world, start
        self.micro = batch_size // (world * grad_accum)

    def __len__(self) -> int:
        return (self.iters - self.start) * self.grad_accum

    def _order(self, epoch: int) -> Tensor:
        return torch.randperm(self.length, generator=torch.Generator().manual_seed(self.seed + 7919 * epoch))

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, order = -1, None
        for step in range(self.start, self.iters):
            for accum in range(self.grad_accum):
                keys = []
                for j in range(self.micro):
                    # position of this sample in the global stream: step, micro-step, process, slot
                    draw = (step * self.grad_accum + accum) * self.micro * self.world + self.rank * self.micro + j
                    if draw // self.length != epoch:
                        epoch = draw // self.length
                        order = self._order(epoch)
                    keys.append((int(order[draw % self.length]), draw))
                yield keys


def label_map(split: ZeroShotSplit, setting: str) -> Tensor:
    """Lookup table ``(256,)`` from dataset labels to training labels for the setting.

    Inductive: seen classes renumbered, unseen ones ignored; transductive: unseen pixels marked for
    pseudo-labelling; fully supervised: labels as they are.
    """
    if setting == "inductive":
        return split.inductive_label_map()
    lut = torch.arange(256, dtype=torch.int64)
    lut[split.num_classes :] = IGNORE_INDEX
    if setting == "transductive":
        lut[list(split.unseen)] = UNSEEN_MARK
    return lut


def pseudo_label(labels: Tensor, logits: Tensor, unseen: Tensor) -> Tensor:
    """Fill ``UNSEEN_MARK`` pixels with the argmax over unseen classes of the ensemble logits (no gradient).

    Args:
        labels: ``(B, H, W)`` training labels.
        logits: ``(B, K, h, w)`` OTSeg+ ensemble logits (:meth:`OTSeg.ensemble`), detached.
        unseen: ``(K,)`` bool.
    """
    with torch.no_grad():
        prob = torch.sigmoid(logits).masked_fill(~unseen.view(1, -1, 1, 1), -1.0)
        if prob.shape[-2:] != labels.shape[-2:]:
            prob = torch.nn.functional.interpolate(prob, size=labels.shape[-2:], mode="nearest")
        return torch.where(labels == UNSEEN_MARK, prob.argmax(1), labels)
