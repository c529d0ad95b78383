"""What the page shows of a :class:`~otseg.serve.session.Segmentation`: legend, area table, score and plan maps."""

from __future__ import annotations

from html import escape
from typing import NamedTuple

import matplotlib
import numpy as np
from PIL import Image

from otseg.serve.session import Segmentation

__all__ = ["ClassView", "area_rows", "class_view", "enlarge", "largest_class", "legend_html", "status_line"]

DISPLAY_SIDE = 384
"""Small images (the synthetic world's 64 pixels) are enlarged by a whole factor to about this size for display."""

THUMBNAIL_SIDE = 256
"""Longer side of the score and plan maps."""


def enlarge(image: np.ndarray) -> np.ndarray:
    """Repeat the pixels of a small ``(H, W, ...)`` image by a whole factor so its longer side nears DISPLAY_SIDE."""
    factor = max(1, DISPLAY_SIDE // max(image.shape[:2]))
    return image if factor == 1 else image.repeat(factor, axis=0).repeat(factor, axis=1)


def _hex(colour: np.ndarray) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in colour)


def legend_html(seg: Segmentation) -> str:
    """Every class of the request with its colour, its split mark and the share of the image it covers."""
    shares = seg.area_shares()
    items = []
    for k, name in enumerate(seg.class_names):
        mark = f' <em class="otseg-kind">({seg.kinds[k]})</em>' if seg.kinds[k] else ""
        items.append(
            f'<li class="otseg-item"><span class="otseg-swatch" style="background:{_hex(seg.palette[k])}"></span>'
            f'<span class="otseg-name">{escape(name)}</span>{mark} <span class="otseg-share">{shares[k]:.1%}</span>'
            "</li>"
        )
    return f'<ul class="otseg-legend">{"".join(items)}</ul>'


def area_rows(seg: Segmentation) -> list[list[str | float]]:
    """``[class, in training, area %]`` rows, the largest class first (``in training``: seen, unseen or new)."""
    shares = seg.area_shares()
    order = np.argsort(-shares, kind="stable")
    return [[seg.class_names[k], seg.kinds[k] or "new", round(100 * float(shares[k]), 2)] for k in order]


def largest_class(seg: Segmentation) -> str:
    """Name of the class that covers most of the image."""
    return seg.class_names[int(np.argmax(seg.area_shares()))]


def status_line(seg: Segmentation) -> str:
    """One line on the request: time, image and grid sizes, classes and prompts."""
    k, h, w, n = seg.plan.shape
    height, width = seg.labels.shape
    return (
        f"Segmented in **{seg.seconds:.2f} s**: {width}x{height} image, {k} classes x {n} prompts, "
        f"transport on a {w}x{h} patch grid."
    )


def _heat(values: np.ndarray, vmax: float, image: np.ndarray) -> np.ndarray:
    """Colour a ``(h, w)`` map over ``[0, vmax]`` (viridis), resized to the image and blended with its grey."""
    height, width = image.shape[:2]
    scale = THUMBNAIL_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    smooth = Image.fromarray(np.clip(values / max(vmax, 1e-12), 0, 1).astype(np.float32)).resize(
        size, Image.Resampling.BILINEAR
    )
    colours = matplotlib.colormaps["viridis"](np.asarray(smooth))[..., :3] * 255
    grey = np.asarray(Image.fromarray(image).convert("L").resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
    return (0.8 * colours + 0.2 * grey[..., None]).clip(0, 255).astype(np.uint8)


class ClassView(NamedTuple):
    """What the page shows of one class: its maps, a table of its prompts, a line that reads them."""

    maps: list[tuple[np.ndarray, str]]
    prompts: list[list[str | float]]
    note: str


def class_view(seg: Segmentation, name: str | None) -> ClassView:
    """The score map of class ``name`` and, for each of its prompts, the share of each patch that the prompt takes.

    Args:
        seg: A request's result.
        name: One of its class names (anything else gives an empty view).

    Returns:
        :class:`ClassView`: ``maps`` are ``(image, caption)`` pairs, first the sigmoid of the MPS score map (scale
        0-1), then one map per prompt (the plan ``M T[m, n]`` on the patch grid, one colour scale for all prompts
        of the class); ``prompts`` rows ``[prompt, text, share %]`` give the share of the class's region (of the
        whole image where the class was not found) that each prompt takes.
    """
    if name not in seg.class_names:
        return ClassView([], [], "")
    k = seg.class_names.index(name)
    plan = seg.plan[k]  # (h, w, N)
    shares, found = seg.prompt_shares(k)
    maps = [(_heat(seg.score[k], 1.0, seg.image), "score map")]
    vmax = float(plan.max())
    maps += [(_heat(plan[..., n], vmax, seg.image), f"prompt {n + 1}") for n in range(len(seg.prompts))]
    rows = [
        [f"prompt {n + 1}", template.format(name), round(100 * float(shares[n]), 1)]
        for n, template in enumerate(seg.prompts)
    ]
    where = (
        f"the {seg.area_shares()[k]:.1%} of the image labelled {name}"
        if found
        else f"the whole image ({name} was not found in it)"
    )
    note = (
        f"**{escape(name)}**: the score map (sigmoid of the MPS score, 0 to 1), then where each prompt puts its mass: "
        f"the share of each patch it takes (one colour scale for all prompts; each takes 1/{len(seg.prompts)} of "
        f"the image). The table gives each prompt's share of {escape(where)}."
    )
    return ClassView(maps, rows, note)
