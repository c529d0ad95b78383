"""OTSeg's loss: per-class sigmoid masks, focal (x100) + dice (x1) on the decoder output and the score map."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["OTSegLoss", "dice_loss", "sigmoid_focal_loss"]


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Element-wise focal loss of sigmoid logits against binary targets (same shape, any)."""
    prob = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    weight = alpha * targets + (1 - alpha) * (1 - targets)
    return weight * ce * (1 - p_t) ** gamma


def dice_loss(logits: Tensor, targets: Tensor, valid: Tensor | None = None) -> Tensor:
    """``1 - (2 sum(p t) + 1) / (sum p + sum t + 1)`` per mask: ``(S, P) -> (S,)``; ``valid`` masks pixels out."""
    prob = torch.sigmoid(logits)
    if valid is not None:
        prob = prob * valid
    return 1 - (2 * (prob * targets).sum(-1) + 1) / (prob.sum(-1) + targets.sum(-1) + 1)


class OTSegLoss(nn.Module):
    """``focal_weight * focal + dice_weight * dice`` on each output map, summed over the maps.

    For every image ``b`` and class ``k`` the target mask is ``label == k``. Focal: over all K maps (absent
    classes are negatives), mean over pixels, summed over (image, class) and divided by the number of (image,
    class) pairs present in the batch (averaged over processes, at least 1). Dice: over present pairs only, same
    divisor. Logits are bilinearly resized to the label size first.

    Args:
        focal_weight: Weight of the focal term (100).
        dice_weight: Weight of the dice term (1).
        ignore_as_negative: ``True`` (OTSeg's public code): ignored pixels are negatives of every class.
            ``False``: they are left out of both terms.
        ignore_index: The label of ignored pixels (255).
    """

    def __init__(
        self,
        focal_weight: float = 100.0,
        dice_weight: float = 1.0,
        ignore_as_negative: bool = True,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        self.focal_weight, self.dice_weight = focal_weight, dice_weight
        self.ignore_as_negative, self.ignore_index = ignore_as_negative, ignore_index

    def _num_masks(self, present: Tensor) -> Tensor:
        count = present.sum().float()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(count)
            count = count / dist.get_world_size()
        return count.clamp_min(1.0)

    def forward(self, outputs: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        """Compute the loss.

        Args:
            outputs: Named logit maps, each ``(B, K, h, w)`` (OTSeg: ``decoder`` and ``score``).
            labels: ``(B, H, W)`` int64 in ``[0, K)`` or ``ignore_index``.

        Returns:
            ``{"loss": total, "<name>.focal": ..., "<name>.dice": ...}`` (weighted terms).
        """
        num_classes = next(iter(outputs.values())).shape[1]
        valid = labels != self.ignore_index
        bad = valid & ((labels < 0) | (labels >= num_classes))
        if bool(bad.any()):
            found = torch.unique(labels[bad]).tolist()
            raise ValueError(
                f"labels contain {found}, outside [0, {num_classes}) and not ignore_index={self.ignore_index}; "
                "remap labels to the class list the model is given."
            )
        classes = torch.arange(num_classes, device=labels.device)
        targets = (labels.unsqueeze(1) == classes[None, :, None, None]).flatten(2).float()  # (B, K, P)
        present = targets.amax(-1) > 0  # (B, K)
        num_masks = self._num_masks(present)
        pixel_mask = None if self.ignore_as_negative else valid.flatten(1).unsqueeze(1).float()  # (B, 1, P)
        losses = {}
        total = labels.new_zeros((), dtype=torch.float32)
        for name, logits in outputs.items():
            logits = F.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False)
            logits = logits.flatten(2)  # (B, K, P)
            focal = sigmoid_focal_loss(logits, targets)
            if pixel_mask is None:
                focal = focal.mean(-1)
            else:
                focal = (focal * pixel_mask).sum(-1) / pixel_mask.sum(-1).clamp_min(1.0)
            focal = self.focal_weight * focal.sum() / num_masks
            mask = None if pixel_mask is None else pixel_mask.expand_as(logits)[present]
            dice = dice_loss(logits[present], targets[present], mask)
            dice = self.dice_weight * dice.sum() / num_masks
            losses[f"{name}.focal"], losses[f"{name}.dice"] = focal, dice
            total = total + focal + dice
        losses["loss"] = total
        return losses
