"""Pictures: training curves from the metrics log, and prediction overlays with a legend."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

__all__ = ["colour_palette", "overlay", "plot_training_curves", "save_prediction_figure"]


def plot_training_curves(log_path: str | Path, out_path: str | Path) -> Path:
    """Plot loss and learning rate (and mIoU(S), mIoU(U), hIoU when evaluated) from a metrics JSONL file."""
    entries = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    train = [e for e in entries if "loss" in e]
    evals = [e for e in entries if "eval" in e]
    fig, axes = plt.subplots(1, 3 if evals else 2, figsize=(15 if evals else 10, 3.6))
    steps = [e["step"] for e in train]
    axes[0].plot(steps, [e["loss"] for e in train], label="total")
    for key in ("decoder.focal", "score.focal", "decoder.dice", "score.dice"):
        if train and key in train[0]:
            axes[0].plot(steps, [e[key] for e in train], label=key, alpha=0.6)
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("loss")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7)
    axes[1].plot(steps, [e["lr"] for e in train])
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("learning rate")
    if evals:
        for key, label in (("miou_seen", "mIoU(S)"), ("miou_unseen", "mIoU(U)"), ("hiou", "hIoU"), ("miou", "mIoU")):
            values = [(e["step"], e["eval"].get(key)) for e in evals if e["eval"].get(key) is not None]
            if values:
                axes[2].plot(*zip(*values, strict=True), "o-", label=label)
        axes[2].set_xlabel("step")
        axes[2].set_ylabel("%")
        axes[2].legend()
    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


def colour_palette(num_classes: int) -> np.ndarray:
    """Distinct RGB colours ``(K, 3)`` uint8 (tab20 cycled with varying lightness)."""
    base = plt.get_cmap("tab20")(np.arange(20))[:, :3]
    colours = [base[k % 20] * (1.0 - 0.25 * ((k // 20) % 3)) for k in range(num_classes)]
    return (np.array(colours) * 255).astype(np.uint8)


def overlay(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Blend class colours over an ``(H, W, 3)`` uint8 image; label 255 stays uncoloured."""
    out = image.astype(np.float32).copy()
    valid = labels != 255
    out[valid] = (1 - alpha) * out[valid] + alpha * palette[labels[valid]]
    return out.clip(0, 255).astype(np.uint8)


def save_prediction_figure(
    path: str | Path,
    panels: Sequence[tuple[str, np.ndarray]],
    class_names: Sequence[str],
    present: Sequence[int],
    marked: Sequence[int] = (),
    rows: int = 1,
) -> Path:
    """Save image panels side by side with a legend of the ``present`` classes (``marked`` ones flagged).

    Args:
        path: Output PNG.
        panels: ``(title, (H, W, 3) uint8)`` images, filled row by row.
        class_names: All class names.
        present: Classes shown in the legend.
        marked: Classes flagged in the legend (e.g. unseen in training), drawn in bold with "(unseen)".
        rows: Rows of panels.
    """
    palette = colour_palette(len(class_names))
    cols = int(np.ceil(len(panels) / rows))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols + 2.2, 3.3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, image) in zip(axes.ravel(), panels, strict=False):
        ax.imshow(image)
        ax.set_title(title, fontsize=9)
    handles = [
        matplotlib.patches.Patch(
            color=palette[k] / 255, label=class_names[k] + (" (unseen)" if k in set(marked) else "")
        )
        for k in sorted(set(present))
    ]
    if handles:
        legend = fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
        for text in legend.get_texts():
            if text.get_text().endswith("(unseen)"):
                text.set_fontweight("bold")
    fig.tight_layout(rect=(0, 0, 0.82 if handles else 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
