"""The synthetic world: exact masks, truthful captions, compositional zero-shot splits, determinism, disk layout."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from otseg.data import FolderDataset, SyntheticSegmentationDataset, SyntheticWorld, diagonal_split, write_folder_dataset
from otseg.data.synthetic import PALETTE, SHAPES, make_caption


@pytest.fixture
def world():
    return SyntheticWorld(seed=3)


def _caption_names(caption):
    match = re.fullmatch(r"a photo of (.+)\.", caption)
    assert match, caption
    parts = re.split(r", | and ", match.group(1))
    names = []
    for part in parts:
        article, name = part.split(" ", 1)
        assert article == ("an" if name[0] in "aeiou" else "a"), caption
        names.append(name)
    return names


def test_default_world_is_six_colours_by_six_shapes(world):
    assert world.num_classes == 36
    assert world.class_names[0] == "red circle"
    assert world.class_names[world.class_index("blue", "star")] == "blue star"
    assert world.colour_of(world.class_index("orange", "ring")) == "orange"
    assert world.shape_of(world.class_index("orange", "ring")) == "ring"
    assert len(set(world.class_names)) == 36


def test_masks_match_the_drawn_colours(world):
    palette = np.array([world.rgb(k) for k in range(world.num_classes)])
    for i in range(200):
        s = world.render(i)
        assert s.image.shape == (64, 64, 3)
        assert s.image.dtype == np.uint8
        assert s.label.shape == (64, 64)
        fg = s.label != 255
        assert bool(fg.any())
        assert np.array_equal(s.image[fg], palette[s.label[fg]])
        bg = s.image[~fg].astype(int)
        assert int((bg.max(1) - bg.min(1)).max(initial=0)) <= 50  # grey-ish: no object colour can appear
        assert not any((s.image[~fg] == c).all(1).any() for c in palette)


def test_later_objects_cover_earlier_ones():
    world = SyntheticWorld(min_objects=4, max_objects=4, seed=1)
    occluded = 0
    for i in range(100):
        s = world.render(i)
        occluded += len(s.classes) < 4  # four distinct classes drawn: one was fully covered by later ones
        assert set(np.unique(s.label).tolist()) - {255} == set(s.classes)
    assert occluded > 0


def test_captions_name_exactly_the_visible_classes(world):
    for i in range(200):
        s = world.render(i)
        present = sorted(set(np.unique(s.label).tolist()) - {255})
        names = _caption_names(s.caption)
        assert len(names) == len(set(names))
        assert sorted(world.class_names.index(n) for n in names) == present
        assert sorted(s.classes) == present


def test_make_caption_grammar():
    assert make_caption(["red circle"]) == "a photo of a red circle."
    assert make_caption(["red circle", "orange ring"]) == "a photo of a red circle and an orange ring."
    assert make_caption(["a b", "c d", "e f"]) == "a photo of an a b, a c d and an e f."


@pytest.mark.parametrize(("colours", "shapes", "num_unseen"), [(6, 6, None), (4, 5, None), (7, 3, None), (6, 6, 12)])
def test_diagonal_split_keeps_every_unseen_attribute_seen_elsewhere(colours, shapes, num_unseen):
    world = SyntheticWorld(list(PALETTE)[:colours], list(SHAPES)[:shapes])
    split = diagonal_split(world, num_unseen)
    assert len(split.unseen) == (num_unseen or min(colours, shapes))
    assert split.class_names == world.class_names
    seen_colours = {world.colour_of(k) for k in split.seen}
    seen_shapes = {world.shape_of(k) for k in split.seen}
    for k in split.unseen:
        assert world.colour_of(k) in seen_colours
        assert world.shape_of(k) in seen_shapes


def test_default_split_is_one_diagonal(world):
    split = diagonal_split(world)
    assert split.unseen_names == ("red circle", "green square", "blue triangle", "yellow star", "purple cross",
                                  "orange ring")  # fmt: skip


def test_objects_placed_apart_never_touch_and_the_required_one_is_shown():
    from scipy.ndimage import binary_dilation
    from scipy.ndimage import label as connected

    world = SyntheticWorld(min_objects=3, max_objects=3, seed=2, object_gap=3)
    split = diagonal_split(world)
    counts = []
    for i in range(100):
        s = world.render(i, require=split.unseen, stream=1)
        assert set(s.classes) & set(split.unseen), s.caption
        objects = connected(binary_dilation(s.label != 255, iterations=1))[1]  # touching objects would merge
        counts.append(len(s.classes))
        assert objects >= len(s.classes)
        assert np.array_equal(s.image, world.render(i, require=split.unseen, stream=1).image)
    assert np.mean(counts) > 2.5  # room is found for almost every object
    with pytest.raises(ValueError, match="object_gap"):
        SyntheticWorld(object_gap=-1)


def test_diagonal_split_refuses_to_orphan_an_attribute():
    world = SyntheticWorld(["red", "green"], ["circle", "square", "star"])
    with pytest.raises(ValueError, match="in no seen class"):
        diagonal_split(world, 4)
    with pytest.raises(ValueError, match="num_unseen"):
        diagonal_split(world, 6)
    with pytest.raises(ValueError, match=">= 2 colours"):
        diagonal_split(SyntheticWorld(["red"], ["circle", "ring"]))


def test_rendering_is_deterministic(world):
    a, b = world.render(17), SyntheticWorld(seed=3).render(17)
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.label, b.label)
    assert a.caption == b.caption
    assert not np.array_equal(world.render(18).image, a.image)
    assert not np.array_equal(SyntheticWorld(seed=4).render(17).image, a.image)
    assert not np.array_equal(world.render(17, stream=1).image, a.image)


def test_training_set_has_seen_classes_only_and_validation_shows_unseen(world):
    split = diagonal_split(world)
    train = SyntheticSegmentationDataset.for_split(world, split, "train", length=100)
    val = SyntheticSegmentationDataset.for_split(world, split, "val", length=100)
    allowed = set(split.seen) | {255}
    for i in range(len(train)):
        assert set(train[i]["label"].unique().tolist()) <= allowed
    for i in range(len(val)):
        assert set(val[i]["label"].unique().tolist()) & set(split.unseen)
    assert train.zero_shot_split is split
    assert train[0]["name"] != val[0]["name"]


def test_dataset_items_match_the_real_dataset_format(world):
    ds = SyntheticSegmentationDataset(world, 8, stream=5)
    item = ds[3]
    assert item["image"].dtype == torch.uint8
    assert item["image"].shape == (3, 64, 64)
    assert item["label"].dtype == torch.int64
    assert item["label"].shape == (64, 64)
    assert item["name"] == "synthetic_5_000003"
    assert torch.equal(ds[3]["image"], item["image"])
    assert torch.equal(ds[3]["label"], item["label"])
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 64, 64)
    assert batch["label"].shape == (4, 64, 64)
    assert len(batch["caption"]) == 4
    with pytest.raises(IndexError):
        ds[8]


def test_write_folder_dataset_round_trips(tmp_path, world):
    split = diagonal_split(world)
    ds = SyntheticSegmentationDataset.for_split(world, split, "val", length=6)
    root = write_folder_dataset(ds, tmp_path / "synth" / "val")
    assert (root / "classes.txt").read_text().splitlines() == list(world.class_names)
    assert len((root / "captions.tsv").read_text().splitlines()) == 6
    back = FolderDataset.from_root(tmp_path / "synth", "val")
    assert back.class_names == world.class_names
    assert back.zero_shot_split.unseen == split.unseen
    assert len(back) == 6
    for i in range(6):
        assert back[i]["name"] == ds[i]["name"]
        assert torch.equal(back[i]["image"], ds[i]["image"])
        assert torch.equal(back[i]["label"], ds[i]["label"])
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_folder_dataset(ds, root)


def test_world_arguments_are_validated():
    with pytest.raises(ValueError, match="unknown colours"):
        SyntheticWorld(["red", "mauve"])
    with pytest.raises(ValueError, match="max - min >= 100"):
        SyntheticWorld({"red": (220, 30, 30), "grey": (128, 128, 128)})
    with pytest.raises(ValueError, match="shapes must be distinct"):
        SyntheticWorld(shapes=["circle", "circle"])
    with pytest.raises(ValueError, match="min_objects"):
        SyntheticWorld(min_objects=3, max_objects=2)
    with pytest.raises(ValueError, match="classes must be"):
        SyntheticWorld().render(0, classes=[99])
