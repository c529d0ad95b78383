"""Pictures: training curves from the metrics log, and prediction overlays with a legend."""

from __future__ import annotations

import colorsys
import functools
import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import font_manager

__all__ = ["colour_palette", "font_family_for", "overlay", "plot_training_curves", "save_prediction_figure"]


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
    """Distinct RGB colours ``(K, 3)`` uint8; neighbouring class ids get far-apart hues.

    Hues step by the golden ratio of the circle (0.618...), so consecutive ids are about 0.38 of the hue circle
    apart and no two of the first few hundred ids share a hue; saturation and brightness cycle with a period
    prime to the hue sequence, which separates ids whose hues come close.
    """
    golden = (math.sqrt(5) - 1) / 2
    colours = []
    for k in range(num_classes):
        hue = (0.07 + k * golden) % 1.0
        saturation = (0.95, 0.6, 0.8)[k % 3]
        value = (0.95, 0.75, 0.55, 0.85, 0.65)[k % 5]
        colours.append(colorsys.hsv_to_rgb(hue, saturation, value))
    return np.round(np.array(colours).reshape(-1, 3) * 255).astype(np.uint8)


def overlay(
    image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.55, ignore_index: int | None = 255
) -> np.ndarray:
    """Blend class colours over an ``(H, W, 3)`` uint8 image; ``ignore_index`` pixels stay uncoloured.

    Predictions have no ignored pixels: pass ``ignore_index=None`` for them (with more than 255 classes, 255 is a
    class).
    """
    out = image.astype(np.float32).copy()
    valid = np.ones(labels.shape, dtype=bool) if ignore_index is None else labels != ignore_index
    out[valid] = (1 - alpha) * out[valid] + alpha * palette[labels[valid]]
    return out.clip(0, 255).astype(np.uint8)


@functools.cache
def _font_coverage() -> dict[str, frozenset[int]]:
    """The characters every installed font can draw, by font family name."""
    coverage: dict[str, set[int]] = {}
    for entry in font_manager.fontManager.ttflist:
        if entry.name.startswith("Last Resort"):  # draws a placeholder box for every character
            continue
        try:
            charmap = font_manager.get_font(entry.fname).get_charmap()
        except (OSError, RuntimeError):  # a font file matplotlib cannot open: it cannot draw anything either
            continue
        coverage.setdefault(entry.name, set()).update(charmap)
    return {name: frozenset(chars) for name, chars in coverage.items()}


def font_family_for(texts: Sequence[str]) -> list[str]:
    """Font families to draw ``texts`` with: the default font, then installed fonts covering what it lacks.

    Warns (naming the characters) when no installed font can draw some of them; they would show as boxes.
    """
    default = plt.rcParams["font.sans-serif"][0] if plt.rcParams["font.family"] == ["sans-serif"] else "DejaVu Sans"
    coverage = _font_coverage()
    needed = {ord(c) for text in texts for c in text if not c.isspace()}
    missing = needed - coverage.get(default, frozenset())
    families = [default]
    for name, chars in sorted(coverage.items(), key=lambda item: -len(item[1] & missing)):
        if not missing:
            break
        if chars & missing:
            families.append(name)
            missing -= chars
    if missing:
        shown = "".join(sorted(chr(c) for c in missing)[:20])
        warnings.warn(
            f"no installed font can draw the characters {shown!r} of the class names; they will show as boxes in "
            "the picture. Install a font that has them (e.g. Debian's fonts-noto-cjk for Chinese, Japanese and "
            "Korean) and remove matplotlib's font cache.",
            stacklevel=3,
        )
    return families


def save_prediction_figure(
    path: str | Path,
    panels: Sequence[tuple[str, np.ndarray]],
    class_names: Sequence[str],
    present: Sequence[int],
    marked: Sequence[int] = (),
    rows: int = 1,
    max_legend: int = 40,
    palette: np.ndarray | None = None,
) -> Path:
    """Save image panels side by side with a legend of the ``present`` classes (``marked`` ones flagged).

    The legend sits below the panels, in as many columns as fit their width; beyond ``max_legend`` entries it
    ends with "and N more". Class names in scripts the default font lacks are drawn with an installed font that
    has them (:func:`font_family_for`).

    Args:
        path: Output PNG.
        panels: ``(title, (H, W, 3) uint8)`` images, filled row by row.
        class_names: All class names.
        present: Classes shown in the legend, most important first (e.g. by area).
        marked: Classes flagged in the legend (e.g. unseen in training), drawn in bold with "(unseen)".
        rows: Rows of panels.
        max_legend: Most classes listed.
        palette: Class colours ``(K, 3)`` uint8 the panels were painted with (default :func:`colour_palette`).
    """
    palette = colour_palette(len(class_names)) if palette is None else palette
    shown = list(dict.fromkeys(present))
    hidden = len(shown) - max_legend
    shown = shown[:max_legend] if hidden > 0 else shown
    labels = [class_names[k] + (" (unseen)" if k in set(marked) else "") for k in shown]
    families = font_family_for(labels)
    cols = int(np.ceil(len(panels) / rows))
    width = 3.2 * cols + 0.4
    legend_cols = max(1, min(len(labels), int(width // 1.9)))
    entries = len(labels) + (hidden > 0)
    legend_rows = int(np.ceil(entries / legend_cols)) if labels else 0
    legend_height = 0.22 * legend_rows + (0.2 if labels else 0)
    with plt.rc_context({"font.family": families}), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")  # reported once, above
        fig, axes = plt.subplots(rows, cols, figsize=(width, 3.3 * rows + legend_height), squeeze=False)
        for ax in axes.ravel():
            ax.axis("off")
        for ax, (title, image) in zip(axes.ravel(), panels, strict=False):
            ax.imshow(image)
            ax.set_title(title, fontsize=9)
        handles = [
            matplotlib.patches.Patch(color=palette[k] / 255, label=text) for k, text in zip(shown, labels, strict=True)
        ]
        if hidden > 0:
            handles.append(matplotlib.patches.Patch(color="none", label=f"and {hidden} more"))
        bottom = legend_height / (3.3 * rows + legend_height)
        if handles:
            legend = fig.legend(
                handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0), ncol=legend_cols, fontsize=8
            )
            legend.set_frame_on(False)
            for text in legend.get_texts():
                if text.get_text().endswith("(unseen)"):
                    text.set_fontweight("bold")
        fig.tight_layout(rect=(0, bottom, 1, 1))
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return path
