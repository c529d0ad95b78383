"""Datasets in their real on-disk layouts (tiny fake trees), label conventions, class lists and zero-shot splits."""

from __future__ import annotations

import csv
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from otseg.data import (
    ADE_CLASSES,
    COCO_STUFF_CLASSES,
    CONTEXT_CLASSES,
    VOC_CLASSES,
    ADE20KDataset,
    COCOStuffDataset,
    ContextDataset,
    FolderDataset,
    SegmentationDataset,
    VOCDataset,
    ZeroShotSplit,
    build_dataset,
    get_split,
    list_splits,
    load_image,
    load_label,
    read_class_names,
)

H, W = 12, 16


# ---------------------------------------------------------------------------------------------------------------
# Writers of fake trees


def _rgb(path, h=H, w=W, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)


def _label(path, values, mode="L", h=H, w=W):
    """A label PNG whose pixels cycle through ``values`` (row-major)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.resize(np.asarray(values, dtype=np.uint8), h * w).reshape(h, w)
    img = Image.fromarray(arr)
    if mode == "P":  # palette indices == values, with a colourful palette (as VOC's SegmentationClass)
        img.putpalette([c for i in range(256) for c in (i, 255 - i, (7 * i) % 256)])
        assert img.mode == "P"
    img.save(path)
    return arr


def _voc_tree(root, aug=True):
    base = root / "VOCdevkit" / "VOC2012"
    sets = base / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    ids = {"train": ["2007_000001", "2007_000002"], "val": ["2007_000003"], "aug": ["2007_000001", "2008_000010"]}
    for i in sorted({x for v in ids.values() for x in v}):
        _rgb(base / "JPEGImages" / f"{i}.jpg")
        _label(base / "SegmentationClass" / f"{i}.png", [0, 1, 20, 255], mode="P")
        if aug:
            _label(base / "SegmentationClassAug" / f"{i}.png", [0, 5, 6])
    (sets / "train.txt").write_text("\n".join(ids["train"]) + "\n")
    (sets / "val.txt").write_text("\n".join(ids["val"]) + "\n")
    if aug:
        (sets / "trainaug.txt").write_text("\n".join(ids["aug"]) + "\n")
    return base


def _context_tree(root, values=(0, 1, 59, 255)):
    base = root / "VOCdevkit" / "VOC2010"
    sets = base / "ImageSets" / "SegmentationContext"
    sets.mkdir(parents=True)
    for i in ("2008_000002", "2008_000003"):
        _rgb(base / "JPEGImages" / f"{i}.jpg")
        _label(base / "SegmentationClassContext" / f"{i}.png", values)
    (sets / "train.txt").write_text("2008_000002\n")
    (sets / "val.txt").write_text("2008_000003\n")
    return base


def _coco_tree(root, values=(0, 170, 255)):
    base = root / "coco_stuff164k"
    for sub, ids in (("train2017", ["000000000009", "000000000025"]), ("val2017", ["000000000139"])):
        for i in ids:
            _rgb(base / "images" / sub / f"{i}.jpg")
            _label(base / "annotations" / sub / f"{i}_labelTrainIds.png", values)
            _label(base / "annotations" / sub / f"{i}_labelIds.png", [0, 1])  # the raw ids sit beside them
    return base


def _ade_tree(root):
    base = root / "ADEChallengeData2016"
    for sub, ids in (("training", ["ADE_train_00000001", "ADE_train_00000002"]), ("validation", ["ADE_val_00000001"])):
        for i in ids:
            _rgb(base / "images" / sub / f"{i}.jpg")
            _label(base / "annotations" / sub / f"{i}.png", [0, 1, 150])
    return base


# ---------------------------------------------------------------------------------------------------------------
# Class lists and zero-shot splits


def test_class_lists_have_the_benchmark_sizes_and_unique_names():
    for names, k in ((VOC_CLASSES, 20), (CONTEXT_CLASSES, 59), (COCO_STUFF_CLASSES, 171), (ADE_CLASSES, 150)):
        assert len(names) == k
        assert len(set(names)) == k


@pytest.mark.parametrize(
    ("name", "unseen_names"),
    [
        ("voc", ["pottedplant", "sheep", "sofa", "train", "tvmonitor"]),
        (
            "context",
            ["cow", "motorbike", "sofa", "cat", "boat", "fence", "bird", "tvmonitor", "keyboard", "aeroplane"],
        ),
        (
            "coco-stuff",
            "cow giraffe suitcase frisbee skateboard carrot scissors cardboard clouds grass playingfield river road "
            "tree wall-concrete".split(),
        ),
        ("ade", []),
    ],
)
def test_paper_splits_name_the_paper_unseen_classes(name, unseen_names):
    split = get_split(name)
    assert list(split.unseen_names) == unseen_names
    assert len(split.seen) + len(split.unseen) == split.num_classes
    assert set(split.seen).isdisjoint(split.unseen)
    assert list(split.seen) == sorted(split.seen)


def test_get_split_accepts_aliases_and_lists_valid_names_on_error():
    assert get_split("COCO_STUFF") is get_split("coco-stuff")
    assert get_split("ade20k").name == "ade"
    assert set(list_splits()) == {"voc", "context", "coco-stuff", "ade"}
    with pytest.raises(ValueError, match=r"valid names are \['voc', 'context', 'coco-stuff', 'ade'\]"):
        get_split("cityscapes")


def test_ade_names_agree_with_object_info_csv(fixtures_dir):
    path = fixtures_dir / "ade20k_sample" / "objectInfo150.csv"
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["Idx"]) for r in rows] == list(range(1, 151))
    for row, name in zip(rows, ADE_CLASSES, strict=True):
        # The CSV writes both spaces and synonym separators as ";": our name is its first words.
        words = name.split()
        assert row["Name"].split(";")[: len(words)] == words, (row["Name"], name)


def test_inductive_label_map_renumbers_seen_and_ignores_unseen():
    split = ZeroShotSplit("toy", ("a", "b", "c", "d", "e"), (1, 3))
    assert split.seen == (0, 2, 4)
    assert split.seen_names == ("a", "c", "e")
    assert split.unseen_names == ("b", "d")
    assert split.unseen_mask().tolist() == [False, True, False, True, False]
    lut = split.inductive_label_map()
    assert lut.shape == (256,)
    assert lut.dtype == torch.int64
    assert lut[:6].tolist() == [0, 255, 1, 255, 2, 255]
    assert bool((lut[5:] == 255).all())
    label = torch.tensor([[0, 1, 2], [3, 4, 255]])
    assert split.to_inductive(label).tolist() == [[0, 255, 1], [255, 2, 255]]


def test_voc_inductive_map_keeps_the_first_fifteen():
    lut = get_split("voc").inductive_label_map()
    assert lut[:20].tolist() == list(range(15)) + [255] * 5
    assert int(lut[255]) == 255


def test_from_names_builds_custom_splits_and_rejects_bad_names():
    split = ZeroShotSplit.from_names(["cat", "dog", "car"], ["car"], name="pets")
    assert split.unseen == (2,)
    assert split.seen_names == ("cat", "dog")
    with pytest.raises(ValueError, match=r"unseen_names \['horse'\] are not in the class list"):
        ZeroShotSplit.from_names(["cat", "dog"], ["horse"])
    with pytest.raises(ValueError, match=r"names \['dog'\] appear more than once"):
        ZeroShotSplit.from_names(["cat", "dog", "dog"], [])
    with pytest.raises(ValueError, match="unseen_names: names"):
        ZeroShotSplit.from_names(["cat", "dog"], ["dog", "dog"])
    with pytest.raises(ValueError, match="outside"):
        ZeroShotSplit("x", ("a", "b"), (2,))
    with pytest.raises(ValueError, match="empty"):
        ZeroShotSplit("x", ("a", " "), ())


# ---------------------------------------------------------------------------------------------------------------
# Real layouts


@pytest.mark.parametrize("where", ["root", "devkit", "voc2012"])
def test_voc_train_uses_aug_and_reduces_zero_label(tmp_path, where):
    base = _voc_tree(tmp_path)
    root = {"root": tmp_path, "devkit": tmp_path / "VOCdevkit", "voc2012": base}[where]
    ds = VOCDataset(root, "train")
    assert len(ds) == 2
    assert [p.name for p, _ in ds.samples] == ["2007_000001.jpg", "2008_000010.jpg"]
    assert all(lab.parent.name == "SegmentationClassAug" for _, lab in ds.samples)
    item = ds[0]
    assert item["name"] == "2007_000001"
    assert item["image"].dtype == torch.uint8
    assert item["image"].shape == (3, H, W)
    assert item["label"].dtype == torch.int64
    assert item["label"].shape == (H, W)
    assert sorted(item["label"].unique().tolist()) == [4, 5, 255]  # file 0 -> 255, 5 -> 4, 6 -> 5
    assert ds.class_names == VOC_CLASSES
    assert ds.zero_shot_split is get_split("voc")
    assert ds.split == "train"


def test_voc_val_reads_palette_labels(tmp_path):
    _voc_tree(tmp_path)
    ds = VOCDataset(tmp_path, "val")
    assert len(ds) == 1
    raw = load_label(ds.samples[0][1])
    assert sorted(np.unique(raw).tolist()) == [0, 1, 20, 255]  # palette indices, not colours
    assert sorted(ds[0]["label"].unique().tolist()) == [0, 19, 255]


def test_voc_without_aug_falls_back_to_train_txt_with_a_warning(tmp_path):
    _voc_tree(tmp_path, aug=False)
    with pytest.warns(UserWarning, match="SegmentationClassAug"):
        ds = VOCDataset(tmp_path, "train", aug=True)
    assert len(ds) == 2
    assert all(lab.parent.name == "SegmentationClass" for _, lab in ds.samples)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(VOCDataset(tmp_path, "train", aug=False)) == 2
    assert sorted(ds[1]["label"].unique().tolist()) == [0, 19, 255]


def test_voc_aug_false_ignores_the_aug_set(tmp_path):
    _voc_tree(tmp_path)
    ds = VOCDataset(tmp_path, "train", aug=False)
    assert [p.stem for p, _ in ds.samples] == ["2007_000001", "2007_000002"]
    assert all(lab.parent.name == "SegmentationClass" for _, lab in ds.samples)


def test_context_reduces_zero_label_and_uses_the_context_split(tmp_path):
    _context_tree(tmp_path)
    train, val = ContextDataset(tmp_path, "train"), ContextDataset(tmp_path / "VOCdevkit" / "VOC2010", "val")
    assert [p.stem for p, _ in train.samples] == ["2008_000002"]
    assert [p.stem for p, _ in val.samples] == ["2008_000003"]
    assert sorted(train[0]["label"].unique().tolist()) == [0, 58, 255]
    assert train.class_names == CONTEXT_CLASSES
    assert train.zero_shot_split.name == "context"


def test_coco_stuff_keeps_train_ids(tmp_path):
    _coco_tree(tmp_path)
    train = COCOStuffDataset(tmp_path, "train")
    val = COCOStuffDataset(tmp_path / "coco_stuff164k", "val")
    assert len(train) == 2
    assert len(val) == 1
    assert val.samples[0][1].name == "000000000139_labelTrainIds.png"
    assert sorted(val[0]["label"].unique().tolist()) == [0, 170, 255]
    assert val.class_names == COCO_STUFF_CLASSES
    assert len(val.zero_shot_split.unseen) == 15


def test_ade_standard_layout_reads_the_requested_split(tmp_path):
    _ade_tree(tmp_path)
    train, val = ADE20KDataset(tmp_path, "train"), ADE20KDataset(tmp_path, "val")
    assert len(train) == 2
    assert len(val) == 1
    assert val[0]["name"] == "ADE_val_00000001"
    assert sorted(val[0]["label"].unique().tolist()) == [0, 149, 255]
    assert val.zero_shot_split.unseen == ()


def test_ade_fixture_loads_in_its_flat_layout(fixtures_dir):
    root = fixtures_dir / "ade20k_sample"
    ds = build_dataset("ade", root, "val")
    assert isinstance(ds, ADE20KDataset)
    assert [item["name"] for item in ds] == [f"ADE_val_0000000{i}" for i in (1, 2, 3)]
    sizes = [tuple(item["image"].shape) for item in ds]
    assert sizes == [(3, 512, 683), (3, 364, 500), (3, 300, 400)]
    for (_, label_path), item in zip(ds.samples, ds, strict=True):
        raw = torch.from_numpy(load_label(label_path).astype(np.int64))
        label = item["label"]
        assert label.shape == raw.shape
        assert bool((label[raw == 0] == 255).all())
        assert torch.equal(label[raw > 0], raw[raw > 0] - 1)


def test_folder_dataset_reads_any_pairs_and_a_class_file(tmp_path):
    (tmp_path / "classes.txt").write_text("cat\ndog\nsky\n\n")
    for i in ("a", "b"):
        _rgb(tmp_path / "images" / f"{i}.jpg")
        _label(tmp_path / "labels" / f"{i}.png", [0, 2, 255])
    ds = FolderDataset(tmp_path / "images", tmp_path / "labels", tmp_path / "classes.txt", unseen_names=["dog"])
    assert ds.class_names == ("cat", "dog", "sky")
    assert ds.zero_shot_split.unseen == (1,)
    assert sorted(ds[1]["label"].unique().tolist()) == [0, 2, 255]
    assert ds[1]["name"] == "b"


def test_folder_from_root_picks_the_split_folder_and_unseen_file(tmp_path):
    base = tmp_path / "val"
    (base).mkdir()
    (base / "classes.txt").write_text("cat\ndog\n")
    (base / "unseen.txt").write_text("dog\n")
    _rgb(base / "images" / "x.png")
    _label(base / "labels" / "x.png", [0, 1])
    ds = build_dataset("folder", tmp_path, "val")
    assert isinstance(ds, FolderDataset)
    assert ds.zero_shot_split.unseen_names == ("dog",)
    assert ds.split == "val"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("cat\ndog\ncat\n", r"\['cat'\] appear more than once"),
        ("cat\n\ndog\n", r"lines \[2\] are empty"),
        ("", "no names"),
    ],
)
def test_class_name_file_is_validated(tmp_path, text, match):
    (tmp_path / "classes.txt").write_text(text)
    with pytest.raises(ValueError, match=match):
        read_class_names(tmp_path / "classes.txt")


def test_build_dataset_rejects_unknown_names(tmp_path):
    with pytest.raises(ValueError, match=r"valid names are \['voc', 'context', 'coco-stuff', 'ade', 'folder'\]"):
        build_dataset("cityscapes", tmp_path)


def test_transform_is_applied_jointly(tmp_path):
    _ade_tree(tmp_path)
    calls = []

    def flip(image, label):
        calls.append((image.shape, label.shape))
        return image.flip(-1), label.flip(-1)

    plain, flipped = ADE20KDataset(tmp_path, "val"), build_dataset("ade", tmp_path, "val", transform=flip)
    item = flipped[0]
    assert calls == [((3, H, W), (H, W))]
    assert torch.equal(item["label"], plain[0]["label"].flip(-1))
    assert torch.equal(item["image"], plain[0]["image"].flip(-1))


# ---------------------------------------------------------------------------------------------------------------
# Errors that say what to do


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda r: VOCDataset(r, "val"), "VOCdevkit/VOC2012/JPEGImages"),
        (lambda r: ContextDataset(r, "val"), "VOCdevkit/VOC2010/JPEGImages"),
        (lambda r: COCOStuffDataset(r, "val"), "coco_stuff164k/images/val2017"),
        (lambda r: ADE20KDataset(r, "val"), "ADEChallengeData2016/images"),
    ],
)
def test_missing_dataset_names_the_expected_path_and_how_to_prepare_it(tmp_path, make, expected):
    with pytest.raises(FileNotFoundError) as err:
        make(tmp_path)
    message = str(err.value)
    assert str(tmp_path / expected) in message
    assert "mmsegmentation" in message


def test_missing_split_file_and_listed_files_are_named(tmp_path):
    base = _voc_tree(tmp_path)
    (base / "ImageSets" / "Segmentation" / "val.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"val\.txt not found"):
        VOCDataset(tmp_path, "val")
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000003\n2099_999999\n")
    with pytest.raises(FileNotFoundError, match="2099_999999"):
        VOCDataset(tmp_path, "val")


def test_missing_coco_labels_are_reported(tmp_path):
    base = _coco_tree(tmp_path)
    (base / "annotations" / "val2017" / "000000000139_labelTrainIds.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"_labelTrainIds\.png"):
        COCOStuffDataset(tmp_path, "val")


def test_bad_split_name(tmp_path):
    _voc_tree(tmp_path)
    with pytest.raises(ValueError, match=r"split must be one of \['train', 'val'\]"):
        VOCDataset(tmp_path, "test")


# ---------------------------------------------------------------------------------------------------------------
# Reading images and labels


def test_images_of_any_mode_load_as_rgb_uint8(tmp_path):
    gray = np.arange(H * W, dtype=np.uint8).reshape(H, W)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    rgba = np.dstack([gray, 255 - gray, gray // 2, np.full_like(gray, 7)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    deep = (gray.astype(np.uint16) * 257).astype(np.uint16)  # 16-bit spanning the full range
    Image.fromarray(deep).save(tmp_path / "deep.png")
    Image.fromarray(gray).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(np.dstack([gray, gray])).save(tmp_path / "la.png")
    for name in ("gray", "rgba", "deep", "palette", "la"):
        img = load_image(tmp_path / f"{name}.png")
        assert img.dtype == torch.uint8, name
        assert img.shape == (3, H, W), name
    expected_gray = torch.from_numpy(gray).expand(3, H, W)
    assert torch.equal(load_image(tmp_path / "gray.png"), expected_gray)
    assert torch.equal(load_image(tmp_path / "deep.png"), expected_gray)
    assert torch.equal(load_image(tmp_path / "la.png"), expected_gray)
    assert torch.equal(load_image(tmp_path / "rgba.png"), torch.from_numpy(rgba[:, :, :3]).permute(2, 0, 1))


def test_sixteen_bit_image_is_scaled_not_clipped(tmp_path):
    deep = np.full((4, 4), 65535, dtype=np.uint16)
    deep[0, 0] = 257 * 100
    Image.fromarray(deep).save(tmp_path / "deep.png")
    img = load_image(tmp_path / "deep.png")
    assert int(img[0, 0, 0]) == 100
    assert int(img[:, 1:, 1:].min()) == 255


def test_out_of_range_labels_raise_unless_lenient(tmp_path):
    _context_tree(tmp_path, values=(0, 1, 60, 77, 255))
    strict = ContextDataset(tmp_path, "train")
    with pytest.raises(ValueError) as err:
        strict[0]
    assert "2008_000002.png" in str(err.value)
    assert "[60, 77]" in str(err.value)
    assert "strict_labels=False" in str(err.value)
    lenient = ContextDataset(tmp_path, "train", strict_labels=False)
    assert sorted(lenient[0]["label"].unique().tolist()) == [0, 255]


def test_out_of_range_labels_without_reduction(tmp_path):
    _coco_tree(tmp_path, values=(0, 171, 254, 255))
    with pytest.raises(ValueError, match=r"\[171, 254\]"):
        COCOStuffDataset(tmp_path, "val")[0]


def test_colour_labels_and_size_mismatch_are_rejected(tmp_path):
    _rgb(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="mode 'RGB'"):
        load_label(tmp_path / "rgb.png")
    _rgb(tmp_path / "img.png", h=H + 1)
    _label(tmp_path / "lab.png", [0])
    ds = SegmentationDataset([(tmp_path / "img.png", tmp_path / "lab.png")], get_split("voc"))
    with pytest.raises(ValueError, match="labels must have the size of their image"):
        ds[0]
