"""A synthetic world of coloured shapes for tests and demos, with exact masks, captions and zero-shot splits.

Classes are compositions ``colour x shape`` (``"red circle"``, ``"blue star"``, ...), index
``colour_index * num_shapes + shape_index``; or, with ``patterns``, ``colour x pattern`` (``"red striped"``,
``"blue dotted"``, ...) drawn in random shapes: a pattern is visible inside every 8x8 patch, a shape only across
patches, so pattern worlds suit small backbones. An image holds a few flat-coloured objects, drawn in order
(later objects cover earlier ones, and the mask is exactly what is visible; with ``object_gap`` they are placed
apart instead), on a textured grey background (noise, stripes or a gradient with a faint tint). Background pixels
are labelled 255 (ignored), like VOC's background under ``reduce_zero_label``. Background pixels never take an
object colour: the background's channel spread is at most 50 while every object colour has a spread of at least
100.

Every image is a pure function of ``(world seed, stream, index)``, so datasets
(:mod:`otseg.data.synthetic_dataset`) are deterministic per index and need no storage. Zero-shot splits
(:func:`diagonal_split`) hold out classes whose colour and shape are both seen in other classes, so unseen
classes are new compositions of seen attributes.

Example:
    >>> world = SyntheticWorld(seed=0)
    >>> split = diagonal_split(world)
    >>> sample = world.render(0, classes=split.seen)  # image, label, caption
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from otseg.data.classes import IGNORE_INDEX, ZeroShotSplit

__all__ = [
    "DEFAULT_COLOURS",
    "DEFAULT_SHAPES",
    "PALETTE",
    "PATTERNS",
    "SHAPES",
    "SyntheticSample",
    "SyntheticWorld",
    "diagonal_split",
    "make_caption",
]

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 225),
    "yellow": (235, 215, 25),
    "purple": (140, 40, 200),
    "orange": (245, 130, 15),
    "cyan": (20, 200, 220),
    "pink": (240, 90, 180),
}
"""Named RGB colours, well separated from each other and from grey."""

MIN_COLOUR_SPREAD = 100  # max - min channel of an object colour; the background stays at or below 50
_BACKGROUND_TINT = 25  # largest per-channel tint of the background (spread <= 2 * tint)

ShapeFn = Callable[[np.ndarray, np.ndarray, float], np.ndarray]
PatternFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
_PLACEMENT_TRIES = 30  # random places tried for an object that must keep object_gap from the others
_BOUND = 0.8 * 2**0.5  # radius of the circle holding every shape, in units of r (the square's corners)
_PATTERN_SHADE = 0.55  # dark parts of a pattern: 0.55 x the colour, so the channel spread stays above 50


def _polar(dx: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.hypot(dx, dy), np.arctan2(dy, dx)


def _star(dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    rho, theta = _polar(dx, dy)
    spikes = ((np.cos(5 * (theta + np.pi / 2)) + 1) / 2) ** 2  # 1 at the 5 tips (one pointing up), 0 between
    return rho <= r * (0.4 + 0.6 * spikes)


def _cross(dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    ax, ay = np.abs(dx), np.abs(dy)
    return ((ax <= 0.3 * r) & (ay <= r)) | ((ay <= 0.3 * r) & (ax <= r))


SHAPES: dict[str, ShapeFn] = {
    "circle": lambda dx, dy, r: dx * dx + dy * dy <= r * r,
    "square": lambda dx, dy, r: np.maximum(np.abs(dx), np.abs(dy)) <= 0.8 * r,
    "triangle": lambda dx, dy, r: (dy >= -r) & (dy <= 0.75 * r) & (np.abs(dx) <= 0.62 * (dy + r)),
    "star": _star,
    "cross": _cross,
    "ring": lambda dx, dy, r: (dx * dx + dy * dy <= r * r) & (dx * dx + dy * dy >= (0.55 * r) ** 2),
    "diamond": lambda dx, dy, r: np.abs(dx) + np.abs(dy) <= r,
}
"""Shape masks: ``fn(dx, dy, r) -> bool array`` for pixel offsets from the centre and a radius in pixels."""

PATTERNS: dict[str, PatternFn] = {
    "solid": lambda yy, xx: np.ones_like(yy, dtype=bool),
    "striped": lambda yy, xx: (yy // 3) % 2 == 0,
    "dotted": lambda yy, xx: ((yy % 6) >= 3) | ((xx % 6) >= 3),
    "checkered": lambda yy, xx: ((yy // 4) + (xx // 4)) % 2 == 0,
}
"""Fill patterns: ``fn(row, col) -> bool`` (True: full colour, False: the darker shade), in image pixels."""

DEFAULT_COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
DEFAULT_SHAPES = ("circle", "square", "triangle", "star", "cross", "ring")


@dataclass(frozen=True)
class SyntheticSample:
    """One rendered image.

    Attributes:
        image: uint8 ``(H, W, 3)`` RGB.
        label: uint8 ``(H, W)`` class indices, 255 on the background.
        caption: ``"a photo of a red circle and a blue star."``, naming each visible class once.
        classes: The visible classes, in the order the caption names them (first drawn first).
    """

    image: np.ndarray
    label: np.ndarray
    caption: str
    classes: tuple[int, ...]


def _article(name: str) -> str:
    return "an" if name[0] in "aeiou" else "a"


def make_caption(names: Sequence[str]) -> str:
    """A caption naming each class once.

    ``["red circle", "blue star", "orange ring"]`` -> ``"a photo of a red circle, a blue star and an orange ring."``
    """
    parts = [f"{_article(n)} {n}" for n in names]
    if len(parts) <= 1:
        body = "".join(parts)
    else:
        body = ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"a photo of {body}."


class SyntheticWorld:
    """Generator of compositional ``colour x shape`` (or ``colour x pattern``) segmentation images.

    Args:
        colours: Colour names from :data:`PALETTE`, or a mapping name -> RGB (each with a channel spread of at
            least 100, so objects never match the grey background).
        shapes: Shape names from :data:`SHAPES`: the class attribute, or (with ``patterns``) the shapes objects
            are drawn in at random.
        image_size: Side of the square images.
        min_objects: Fewest objects drawn per image (at least 1).
        max_objects: Most objects drawn per image.
        seed: Seed of the world; images depend on ``(seed, stream, index)`` only.
        patterns: Pattern names from :data:`PATTERNS`; when given, classes are ``colour x pattern``.
        object_gap: ``None`` (default): objects are placed independently and may cover each other. A number of
            pixels: objects are placed apart, the circles holding their shapes at least this far from each other (an
            object that finds no free place in a few tries is left out, so an image can show fewer than
            ``min_objects``; a required object is placed first and always shown).

    Attributes:
        attributes: The second class attribute: the shapes, or the patterns.
        class_names: ``"<colour> <attribute>"`` for every class, colour-major.
        num_classes: ``len(colours) * len(attributes)``.
    """

    def __init__(
        self,
        colours: Sequence[str] | Mapping[str, tuple[int, int, int]] = DEFAULT_COLOURS,
        shapes: Sequence[str] = DEFAULT_SHAPES,
        image_size: int = 64,
        min_objects: int = 1,
        max_objects: int = 3,
        seed: int = 0,
        patterns: Sequence[str] | None = None,
        object_gap: float | None = None,
    ) -> None:
        if isinstance(colours, Mapping):
            palette = {str(k): tuple(int(c) for c in v) for k, v in colours.items()}
        else:
            unknown = [c for c in colours if c not in PALETTE]
            if unknown:
                raise ValueError(f"unknown colours {unknown}; use names from {list(PALETTE)} or a name -> RGB map.")
            palette = {c: PALETTE[c] for c in colours}
        if len(palette) < 1 or len(set(palette.values())) != len(palette):
            raise ValueError(f"colours must be non-empty with distinct RGB values, got {palette}.")
        for name, rgb in palette.items():
            if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb) or max(rgb) - min(rgb) < MIN_COLOUR_SPREAD:
                raise ValueError(
                    f"colour {name!r} = {rgb} must be 3 values in 0..255 with max - min >= {MIN_COLOUR_SPREAD}, "
                    "so that objects never share a colour with the grey background."
                )
        shapes = tuple(shapes)
        unknown = [s for s in shapes if s not in SHAPES]
        if unknown or not shapes or len(set(shapes)) != len(shapes):
            raise ValueError(f"shapes must be distinct names from {list(SHAPES)}, got {list(shapes)}.")
        if patterns is not None:
            patterns = tuple(patterns)
            unknown = [p for p in patterns if p not in PATTERNS]
            if unknown or not patterns or len(set(patterns)) != len(patterns):
                raise ValueError(f"patterns must be distinct names from {list(PATTERNS)}, got {list(patterns)}.")
        attributes = shapes if patterns is None else patterns
        if len(palette) * len(attributes) > IGNORE_INDEX:
            raise ValueError(f"{len(palette)} x {len(attributes)} classes exceed {IGNORE_INDEX}; use fewer.")
        if image_size < 16:
            raise ValueError(f"image_size must be >= 16 pixels, got {image_size}.")
        if not 1 <= min_objects <= max_objects:
            raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects} and {max_objects}.")
        if object_gap is not None and object_gap < 0:
            raise ValueError(f"object_gap must be None (objects may overlap) or >= 0 pixels, got {object_gap}.")
        self.colours = tuple(palette)
        self.palette = palette
        self.shapes = shapes
        self.patterns = patterns
        self.attributes = attributes
        self.image_size = int(image_size)
        self.min_objects = int(min_objects)
        self.max_objects = int(max_objects)
        self.seed = int(seed)
        self.object_gap = None if object_gap is None else float(object_gap)
        self.class_names = tuple(f"{c} {a}" for c in self.colours for a in self.attributes)
        self._rgb = np.array([palette[self.colour_of(k)] for k in range(self.num_classes)], dtype=np.uint8)
        yy, xx = np.mgrid[0 : self.image_size, 0 : self.image_size]
        self._shade = None  # (num_classes, H, W) multiplier of each class's colour in pattern worlds
        if patterns is not None:
            fills = np.stack([np.where(PATTERNS[p](yy, xx), 1.0, _PATTERN_SHADE) for p in patterns])
            self._shade = np.tile(fills, (len(self.colours), 1, 1)).astype(np.float32)
        self._grid = (yy.astype(np.float32) / self.image_size, xx.astype(np.float32) / self.image_size)

    def __repr__(self) -> str:
        return (
            f"SyntheticWorld({len(self.colours)} colours x {len(self.attributes)} "
            f"{'shapes' if self.patterns is None else 'patterns'}, image_size={self.image_size}, "
            f"objects {self.min_objects}..{self.max_objects}"
            + ("" if self.object_gap is None else f" apart by {self.object_gap:g}px")
            + f", seed={self.seed})"
        )

    @property
    def num_classes(self) -> int:
        """Number of classes ``len(colours) * len(attributes)``."""
        return len(self.colours) * len(self.attributes)

    def class_index(self, colour: str, attribute: str) -> int:
        """Index of the class ``"<colour> <attribute>"`` (attribute: a shape, or a pattern)."""
        if colour not in self.colours or attribute not in self.attributes:
            raise ValueError(
                f"no class {colour!r} {attribute!r}; colours are {self.colours}, attributes {self.attributes}."
            )
        return self.colours.index(colour) * len(self.attributes) + self.attributes.index(attribute)

    def colour_of(self, k: int) -> str:
        """Colour name of class ``k``."""
        return self.colours[k // len(self.attributes)]

    def attribute_of(self, k: int) -> str:
        """Second attribute of class ``k``: its shape, or its pattern."""
        return self.attributes[k % len(self.attributes)]

    def shape_of(self, k: int) -> str:
        """Shape name of class ``k`` (shape worlds only)."""
        if self.patterns is not None:
            raise ValueError("in a pattern world classes have no shape; use attribute_of.")
        return self.shapes[k % len(self.shapes)]

    def rgb(self, k: int) -> tuple[int, int, int]:
        """RGB colour objects of class ``k`` are drawn in."""
        return self.palette[self.colour_of(k)]

    def _classes(self, classes: Sequence[int] | None, what: str) -> np.ndarray:
        if classes is None:
            return np.arange(self.num_classes)
        arr = np.asarray(list(classes), dtype=np.int64)
        if arr.size == 0 or arr.min() < 0 or arr.max() >= self.num_classes:
            raise ValueError(f"{what} must be a non-empty list of class indices in [0, {self.num_classes}).")
        return arr

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        """Textured grey background ``(H, W, 3)`` float32, channel spread <= 2 * tint."""
        s = self.image_size
        yy, xx = self._grid
        kind = rng.integers(3)
        base, amp = rng.uniform(60, 190), rng.uniform(15, 50)
        if kind == 0:  # blocky low-frequency noise plus fine grain
            cells = int(rng.integers(4, 9))
            coarse = rng.uniform(-1, 1, size=(cells, cells)).astype(np.float32)
            idx = (np.arange(s) * cells) // s
            lum = coarse[idx][:, idx] + 0.3 * rng.uniform(-1, 1, size=(s, s)).astype(np.float32)
        elif kind == 1:  # stripes at a random angle and frequency
            theta, freq, phase = rng.uniform(0, np.pi), rng.uniform(2, 8), rng.uniform(0, 2 * np.pi)
            lum = np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)
        else:  # linear gradient in a random direction
            theta = rng.uniform(0, 2 * np.pi)
            lum = 2 * ((xx - 0.5) * np.cos(theta) + (yy - 0.5) * np.sin(theta))
        tint = rng.uniform(-_BACKGROUND_TINT, _BACKGROUND_TINT, size=3).astype(np.float32)
        return (base + amp * lum)[:, :, None] + tint

    def _object_place(self, rng: np.random.Generator) -> tuple[float, float, float]:
        """A random centre and radius ``(cy, cx, r)`` in pixels."""
        s = self.image_size
        r = rng.uniform(0.12, 0.26) * s
        cy, cx = rng.uniform(0.5 * r, s - 0.5 * r, size=2)
        return float(cy), float(cx), float(r)

    def _object_mask(
        self, rng: np.random.Generator, k: int, place: tuple[float, float, float] | None = None
    ) -> np.ndarray:
        """Boolean ``(H, W)`` mask of one object of class ``k`` at ``place`` (default: a random place and size)."""
        s = self.image_size
        cy, cx, r = self._object_place(rng) if place is None else place
        y0, y1 = max(0, int(cy - r) - 1), min(s, int(cy + r) + 2)
        x0, x1 = max(0, int(cx - r) - 1), min(s, int(cx + r) + 2)
        dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy)[:, None]
        dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :]
        mask = np.zeros((s, s), dtype=bool)
        shape = self.shape_of(k) if self.patterns is None else self.shapes[int(rng.integers(len(self.shapes)))]
        mask[y0:y1, x0:x1] = SHAPES[shape](dx, dy, r)
        return mask

    def _separated_masks(self, rng: np.random.Generator, objects: np.ndarray, first: int) -> list[np.ndarray | None]:
        """Masks of objects placed apart (``object_gap``), object ``first`` placed first; ``None``: no room."""
        placed: list[tuple[float, float, float]] = []
        masks: list[np.ndarray | None] = [None] * len(objects)
        for j in [first, *(i for i in range(len(objects)) if i != first)]:
            for _ in range(_PLACEMENT_TRIES):
                cy, cx, r = self._object_place(rng)
                if all(np.hypot(cy - y, cx - x) >= _BOUND * (r + q) + self.object_gap for y, x, q in placed):
                    placed.append((cy, cx, r))
                    masks[j] = self._object_mask(rng, int(objects[j]), (cy, cx, r))
                    break
        return masks

    def render(
        self,
        index: int,
        *,
        classes: Sequence[int] | None = None,
        require: Sequence[int] | None = None,
        stream: int = 0,
    ) -> SyntheticSample:
        """Render image ``index`` of a stream.

        Args:
            index: Image index (>= 0).
            classes: Classes objects are drawn from (all by default), e.g. the seen classes for training.
            require: If given, one object is drawn from these classes (e.g. the unseen classes for evaluation)
                and is guaranteed to stay visible (it is drawn again on top if others covered it fully).
            stream: Independent image streams of the same world (e.g. 0 for training, 1 for evaluation).

        Returns:
            The :class:`SyntheticSample`.
        """
        if index < 0:
            raise ValueError(f"index must be >= 0, got {index}.")
        rng = np.random.default_rng([self.seed, int(stream), int(index)])
        pool = self._classes(classes, "classes")
        n = int(rng.integers(self.min_objects, self.max_objects + 1))
        objects = rng.choice(pool, size=n, replace=len(pool) < n)
        required_at = -1
        if require is not None:
            required_at = int(rng.integers(n))
            objects[required_at] = rng.choice(self._classes(require, "require"))

        image = self._background(rng)
        label = np.full((self.image_size, self.image_size), IGNORE_INDEX, dtype=np.uint8)
        if self.object_gap is None:
            masks = [self._object_mask(rng, int(k)) for k in objects]
        else:
            masks = self._separated_masks(rng, objects, max(required_at, 0))
        for k, mask in zip(objects, masks, strict=True):
            if mask is not None:
                label[mask] = k
        if required_at >= 0 and not (label == objects[required_at]).any():
            label[masks[required_at]] = objects[required_at]  # fully covered: draw it again on top

        image = np.clip(image, 0, 255).round().astype(np.uint8)
        fg = label != IGNORE_INDEX
        colours = self._rgb[label[fg]].astype(np.float32)
        if self._shade is not None:
            rows, cols = np.nonzero(fg)
            colours = colours * self._shade[label[fg], rows, cols][:, None]
        image[fg] = colours.round().astype(np.uint8)
        present = [int(k) for k in dict.fromkeys(objects.tolist()) if (label == k).any()]
        caption = make_caption([self.class_names[k] for k in present])
        return SyntheticSample(image=image, label=label, caption=caption, classes=tuple(present))


def diagonal_split(world: SyntheticWorld, num_unseen: int | None = None, name: str = "synthetic") -> ZeroShotSplit:
    """Hold out classes along diagonals of the colour x shape grid.

    Cells ``(colour i, shape (i + d) mod S)`` are taken for ``d = 0, 1, ...`` and ``i = 0..C-1`` until
    ``num_unseen`` are chosen (default ``min(C, S)``: one diagonal), so every unseen class combines a colour and a
    shape that both appear in seen classes.

    Args:
        world: The synthetic world.
        num_unseen: Number of unseen classes.
        name: Name of the split.

    Raises:
        ValueError: The grid is too small, or so many classes are held out that some colour or shape is seen in
            no seen class.
    """
    n_colours, n_shapes = len(world.colours), len(world.attributes)
    if num_unseen is None:
        num_unseen = min(n_colours, n_shapes)
    if n_colours < 2 or n_shapes < 2:
        raise ValueError(f"a compositional split needs >= 2 colours and >= 2 shapes, got {n_colours} x {n_shapes}.")
    cells = [(i, (i + d) % n_shapes) for d in range(n_shapes) for i in range(n_colours)]
    cells = list(dict.fromkeys(cells))  # distinct cells (C > S revisits none, but keep it obvious)
    if not 1 <= num_unseen < len(cells):
        raise ValueError(f"num_unseen must be in [1, {len(cells)}), got {num_unseen}.")
    unseen = sorted(c * n_shapes + s for c, s in cells[:num_unseen])
    seen = sorted(set(range(world.num_classes)) - set(unseen))
    seen_colours = {world.colour_of(k) for k in seen}
    seen_shapes = {world.attribute_of(k) for k in seen}
    orphans = sorted({world.colour_of(k) for k in unseen} - seen_colours) + sorted(
        {world.attribute_of(k) for k in unseen} - seen_shapes
    )
    if orphans:
        raise ValueError(
            f"num_unseen={num_unseen} leaves {orphans} in no seen class; hold out fewer classes so every unseen "
            "colour and shape is learnt from some seen class."
        )
    return ZeroShotSplit(name, world.class_names, tuple(unseen))
