"""Class names of the benchmark datasets, in label-index order, and their zero-shot splits.

Index ``k`` of each tuple is the training id ``k`` of the dataset after its label convention is applied (VOC,
Context and ADE20K drop their background/"other" label 0 with ``reduce_zero_label``; COCO-Stuff uses its
``labelTrainIds`` as they are). Label 255 is "ignore" everywhere.

The unseen classes of each split are those of the OTSeg paper (arXiv 2403.14183, Table 1) and of ZegCLIP before it:
VOC's last five classes, ten PASCAL Context classes and fifteen COCO-Stuff classes, listed in ``_SPLITS`` below.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "ADE_CLASSES",
    "COCO_STUFF_CLASSES",
    "CONTEXT_CLASSES",
    "IGNORE_INDEX",
    "VOC_CLASSES",
    "ZeroShotSplit",
    "check_class_names",
    "get_split",
    "list_splits",
    "normalize_name",
    "parse_class_names",
]

IGNORE_INDEX = 255
"""Label value of pixels that are not scored and not supervised."""

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
"""PASCAL VOC 2012, 20 object classes (background removed)."""

CONTEXT_CLASSES: tuple[str, ...] = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle", "building", "bus",
    "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup", "curtain", "dog", "door", "fence",
    "floor", "flower", "food", "grass", "ground", "horse", "keyboard", "light", "motorbike", "mountain", "mouse",
    "person", "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk", "sign", "sky",
    "snow", "sofa", "table", "track", "train", "tree", "truck", "tvmonitor", "wall", "water", "window", "wood",
)  # fmt: skip
"""PASCAL Context, the 59 most frequent classes (background removed)."""

COCO_STUFF_CLASSES: tuple[str, ...] = (
    # 80 things
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant",
    "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard",
    "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli",
    "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "dining table", "toilet",
    "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
    # 91 stuff
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage", "cardboard", "carpet",
    "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard", "curtain", "desk-stuff",
    "dirt", "door-stuff", "fence", "floor-marble", "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower",
    "fog", "food-other", "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves",
    "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper", "pavement",
    "pillow", "plant-other", "plastic", "platform", "playingfield", "railing", "railroad", "river", "road", "rock",
    "roof", "rug", "salad", "sand", "sea", "shelf", "sky-other", "skyscraper", "snow", "solid-other", "stairs",
    "stone", "straw", "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable",
    "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile", "wall-wood", "water-other",
    "waterdrops", "window-blind", "window-other", "wood",
)  # fmt: skip
"""COCO-Stuff 164K, 171 classes in ``labelTrainIds`` order (80 things then 91 stuff)."""

ADE_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path",
    "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel",
    "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television", "airplane",
    "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool",
    "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture",
    "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip
"""ADE20K SceneParsing, 150 classes: the first synonym of each row of the toolkit's ``objectInfo150.csv``.

That file writes spaces inside a name as ``;`` too, so multi-word names ("chest of drawers", "screen door",
"crt screen") are restored here; splitting on the first ``;`` alone would give "chest", "screen" twice, ...
"""


@dataclass(frozen=True)
class ZeroShotSplit:
    """A class list and which of its classes are unseen during inductive training.

    Attributes:
        name: Short identifier, e.g. ``"voc"``.
        class_names: All ``K`` class names in label-index order.
        unseen: Indices of the unseen classes, in the order given (may be empty: every class is seen).
    """

    name: str
    class_names: tuple[str, ...]
    unseen: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "unseen", tuple(int(i) for i in self.unseen))
        k = len(self.class_names)
        if k == 0:
            raise ValueError(f"ZeroShotSplit {self.name!r}: class_names is empty; give at least one class name.")
        if k > IGNORE_INDEX:
            raise ValueError(
                f"ZeroShotSplit {self.name!r}: {k} classes do not fit 8-bit labels with {IGNORE_INDEX} = ignore; "
                f"use at most {IGNORE_INDEX} classes."
            )
        check_class_names(self.class_names, f"ZeroShotSplit {self.name!r} class_names")
        bad = [i for i in self.unseen if not 0 <= i < k]
        if bad:
            raise ValueError(f"ZeroShotSplit {self.name!r}: unseen indices {bad} are outside [0, {k}).")
        if len(set(self.unseen)) != len(self.unseen):
            raise ValueError(f"ZeroShotSplit {self.name!r}: unseen indices {list(self.unseen)} contain duplicates.")

    @property
    def num_classes(self) -> int:
        """Number of classes ``K``."""
        return len(self.class_names)

    @property
    def seen(self) -> tuple[int, ...]:
        """Indices of the seen classes, ascending."""
        unseen = set(self.unseen)
        return tuple(i for i in range(self.num_classes) if i not in unseen)

    @property
    def seen_names(self) -> tuple[str, ...]:
        """Names of the seen classes, in the order of :attr:`seen`."""
        return tuple(self.class_names[i] for i in self.seen)

    @property
    def unseen_names(self) -> tuple[str, ...]:
        """Names of the unseen classes, in the order of :attr:`unseen`."""
        return tuple(self.class_names[i] for i in self.unseen)

    def unseen_mask(self) -> Tensor:
        """Boolean mask ``(K,)``, ``True`` at the unseen classes."""
        mask = torch.zeros(self.num_classes, dtype=torch.bool)
        mask[list(self.unseen)] = True
        return mask

    def inductive_label_map(self) -> Tensor:
        """Lookup table ``(256,)`` int64 mapping full labels to inductive training labels.

        Seen class ``c`` maps to its position in :attr:`seen` (so labels index ``seen_names``), every unseen class
        and every value ``>= K`` (255 included) maps to 255. Apply it with :meth:`to_inductive` or ``lut[label]``.
        """
        lut = torch.full((256,), IGNORE_INDEX, dtype=torch.int64)
        seen = torch.tensor(self.seen, dtype=torch.int64)
        lut[seen] = torch.arange(len(seen), dtype=torch.int64)
        return lut

    def to_inductive(self, label: Tensor) -> Tensor:
        """Remap a label map for inductive training (see :meth:`inductive_label_map`).

        Args:
            label: Integer labels of any shape with values in ``[0, K)`` or 255.

        Returns:
            int64 labels of the same shape, seen classes renumbered ``0..len(seen)-1``, all else 255.
        """
        if label.dtype.is_floating_point or label.dtype == torch.bool:
            raise TypeError(f"label must be an integer tensor, got dtype {label.dtype}.")
        label = label.long()
        if label.numel() and (int(label.min()) < 0 or int(label.max()) > IGNORE_INDEX):
            raise ValueError(
                f"label values must lie in [0, {self.num_classes}) or be {IGNORE_INDEX}; "
                f"got min {int(label.min())}, max {int(label.max())}."
            )
        return self.inductive_label_map().to(label.device)[label]

    @classmethod
    def from_names(cls, all_names: Sequence[str], unseen_names: Iterable[str], name: str = "custom") -> ZeroShotSplit:
        """Build a split from class names.

        Args:
            all_names: All class names in label-index order.
            unseen_names: The names of the unseen classes, each one of ``all_names``.
            name: Identifier of the split.

        Raises:
            ValueError: A name is unknown or given twice.
        """
        all_names = check_class_names(all_names, "all_names")
        unseen_names = list(unseen_names)
        if unseen_names:
            unseen_names = list(check_class_names(unseen_names, "unseen_names"))
        index = {n: i for i, n in enumerate(all_names)}
        unknown = [n for n in unseen_names if n not in index]
        if unknown:
            raise ValueError(
                f"unseen_names {unknown} are not in the class list; choose among {list(all_names)} "
                "(names are case- and space-sensitive)."
            )
        return cls(name, all_names, tuple(index[n] for n in unseen_names))


def check_class_names(names: Sequence[str], what: str = "class_names") -> tuple[str, ...]:
    """The one validator of class-name lists: names stripped of surrounding spaces, checked, returned.

    Raises:
        ValueError: naming ``what``, when the list is empty, an entry is empty or not a string, or two names are
            equal up to case and surrounding spaces (they would get the same text embedding).
    """
    names = list(names)
    if not names:
        raise ValueError(f"{what} is empty; give at least one class name.")
    empty = [i for i, n in enumerate(names) if not isinstance(n, str) or not n.strip()]
    if empty:
        raise ValueError(
            f"{what}: entries at positions {empty} are empty or not strings; every class needs a name (check for "
            "doubled commas or blank lines)."
        )
    stripped = tuple(n.strip() for n in names)
    counts = Counter(n.lower() for n in stripped)
    dup = sorted({n for n in stripped if counts[n.lower()] > 1})
    if dup:
        raise ValueError(
            f"{what}: names {dup} appear more than once (ignoring case); remove the duplicates, class names must "
            "be unique."
        )
    return stripped


def parse_class_names(text: str, what: str = "class names") -> tuple[str, ...]:
    """Class names from free text, separated by commas and/or new lines, checked by :func:`check_class_names`."""
    parts = [p for line in text.splitlines() for p in line.split(",")]
    while parts and not parts[-1].strip():  # a trailing comma or newline
        parts.pop()
    return check_class_names(parts, what)


_SPLITS: dict[str, ZeroShotSplit] = {
    "voc": ZeroShotSplit("voc", VOC_CLASSES, (15, 16, 17, 18, 19)),
    "context": ZeroShotSplit("context", CONTEXT_CLASSES, (19, 33, 48, 14, 7, 24, 6, 54, 31, 0)),
    "coco-stuff": ZeroShotSplit(
        "coco-stuff", COCO_STUFF_CLASSES, (19, 23, 28, 29, 36, 51, 76, 88, 94, 112, 133, 136, 137, 157, 160)
    ),
    "ade": ZeroShotSplit("ade", ADE_CLASSES, ()),  # cross-dataset evaluation only: every class counts as seen
}

_ALIASES = {"voc12": "voc", "voc2012": "voc", "pascal-context": "context", "context59": "context",
            "cocostuff": "coco-stuff", "coco": "coco-stuff", "ade20k": "ade"}  # fmt: skip


def normalize_name(name: str) -> str:
    """Canonical dataset name: lower case, ``_`` as ``-``, common aliases resolved (``"ade20k"`` -> ``"ade"``)."""
    key = name.strip().lower().replace("_", "-")
    return _ALIASES.get(key, key)


def list_splits() -> tuple[str, ...]:
    """Names accepted by :func:`get_split`."""
    return tuple(_SPLITS)


def get_split(name: str) -> ZeroShotSplit:
    """The zero-shot split of a benchmark dataset.

    Args:
        name: ``"voc"``, ``"context"``, ``"coco-stuff"`` or ``"ade"`` (case-insensitive; ``_`` works for ``-``;
            aliases such as ``"ade20k"``, ``"coco_stuff"`` are accepted). ADE20K has no unseen classes: it is
            used for cross-dataset evaluation.

    Raises:
        ValueError: Unknown name; the message lists the valid ones.
    """
    key = normalize_name(name)
    if key not in _SPLITS:
        raise ValueError(f"unknown dataset split {name!r}; valid names are {list(_SPLITS)}.")
    return _SPLITS[key]
