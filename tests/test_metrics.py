"""Confusion-matrix metrics: hand-computed values, ignore handling, NaN conventions, zero-shot summary, merging."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch
import torch.distributed as dist
from rich.console import Console

from otseg.data import ADE20KDataset, ZeroShotSplit
from otseg.engine import ConfusionMatrix, SegmentationMetrics, harmonic_iou, print_metrics

# label / pred over 10 pixels, 3 classes, two ignored pixels (whose predictions must not count)
LABEL = torch.tensor([[0, 0, 0, 1, 1], [1, 2, 2, 255, 255]])
PRED = torch.tensor([[0, 0, 1, 1, 1], [2, 2, 0, 0, 2]])
# rows = label, columns = pred
EXPECTED = [[2, 1, 0], [0, 2, 1], [1, 0, 1]]


def _matrix(pred=PRED, label=LABEL, k=3):
    cm = ConfusionMatrix(k)
    cm.update(pred, label)
    return cm


def test_matrix_matches_hand_count():
    assert _matrix().matrix.tolist() == EXPECTED


def test_metrics_match_hand_computation():
    m = _matrix().compute()
    # IoU = TP / (row + col - TP): class 0: 2 / (3 + 3 - 2), class 1: 2 / (3 + 3 - 2), class 2: 1 / (2 + 2 - 1)
    iou = [100 * 2 / 4, 100 * 2 / 4, 100 * 1 / 3]
    acc = [100 * 2 / 3, 100 * 2 / 3, 100 * 1 / 2]
    torch.testing.assert_close(torch.tensor(m.iou), torch.tensor(iou))
    torch.testing.assert_close(torch.tensor(m.acc), torch.tensor(acc))
    assert m.pacc == pytest.approx(100 * 5 / 8)
    assert m.macc == pytest.approx(sum(acc) / 3)
    assert m.miou == pytest.approx(sum(iou) / 3)
    assert m.pixels == (3, 3, 2)
    assert m.miou_seen is None
    assert m.hiou is None


def test_ignored_pixels_do_not_count_whatever_is_predicted_there():
    pred = PRED.clone()
    pred[LABEL == 255] = 77  # out of range, but ignored
    assert _matrix(pred).matrix.tolist() == EXPECTED
    cm = ConfusionMatrix(3)
    cm.update(PRED, torch.full_like(LABEL, 255))
    assert int(cm.matrix.sum()) == 0
    cm = ConfusionMatrix(3)
    cm.update(PRED, torch.where((LABEL == 2) | (LABEL == 255), 9, LABEL), ignore_index=9)  # another ignore value
    assert cm.matrix.sum(1).tolist() == [3, 3, 0]


def test_any_shape_and_accumulation():
    cm = ConfusionMatrix(3)
    cm.update(PRED.reshape(1, 2, 5), LABEL.reshape(1, 2, 5))
    cm.update(PRED.flatten(), LABEL.flatten())
    assert cm.matrix.tolist() == [[2 * x for x in row] for row in EXPECTED]
    cm.reset()
    assert int(cm.matrix.sum()) == 0


@pytest.mark.parametrize(
    ("pred", "label", "match"),
    [
        (torch.tensor([0, 1]), torch.tensor([0, 3]), r"label values \[3\] are outside \[0, 3\) other than the ignore"),
        (torch.tensor([0, 1]), torch.tensor([0, -1]), r"label values \[-1\]"),
        (torch.tensor([0, 5]), torch.tensor([0, 1]), r"pred values \[5\] are outside"),
        (torch.tensor([0, 1, 2]), torch.tensor([0, 1]), "same shape"),
        (torch.tensor([0.0, 1.0]), torch.tensor([0, 1]), "integer class indices"),
    ],
)
def test_bad_updates_raise(pred, label, match):
    with pytest.raises(ValueError, match=match):
        ConfusionMatrix(3).update(pred, label)


def test_absent_classes_are_nan_and_left_out_of_the_means():
    # class 2 appears nowhere; class 3 is predicted but never labelled
    label = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 3, 1, 1])
    cm = _matrix(pred, label, k=4)
    m = cm.compute()
    assert math.isnan(m.iou[2])
    assert math.isnan(m.acc[2])
    assert m.iou[3] == 0.0
    assert math.isnan(m.acc[3])
    assert m.miou == pytest.approx((50 + 100) / 2)  # over the classes in the label
    assert m.macc == pytest.approx((50 + 100) / 2)
    union = cm.compute(average_over="union")  # mmseg's nanmean also counts the false-positive-only class
    assert union.miou == pytest.approx((50 + 100 + 0) / 3)
    torch.testing.assert_close(torch.tensor(union.iou), torch.tensor(m.iou), equal_nan=True)


def test_empty_matrix_gives_nan_not_an_error():
    m = ConfusionMatrix(2).compute()
    assert math.isnan(m.miou)
    assert math.isnan(m.pacc)
    assert math.isnan(m.macc)


def test_harmonic_iou_formula():
    assert harmonic_iou(80.0, 40.0) == pytest.approx(2 * 80 * 40 / 120)
    assert harmonic_iou(90.0, 90.0) == pytest.approx(90.0)
    assert harmonic_iou(0.0, 0.0) == 0.0
    assert harmonic_iou(70.0, 0.0) == 0.0
    assert math.isnan(harmonic_iou(70.0, math.nan))


def test_zero_shot_summary_uses_the_split():
    split = ZeroShotSplit("toy", ("a", "b", "c"), (2,))
    m = _matrix().compute(split)
    assert m.class_names == ("a", "b", "c")
    assert m.miou_seen == pytest.approx((50 + 50) / 2)
    assert m.miou_unseen == pytest.approx(100 / 3)
    assert m.hiou == pytest.approx(2 * 50 * (100 / 3) / (50 + 100 / 3))
    assert m.unseen == (2,)
    no_unseen = _matrix().compute(ZeroShotSplit("toy", ("a", "b", "c"), ()))
    assert no_unseen.miou_seen == pytest.approx(no_unseen.miou)
    assert no_unseen.miou_unseen is None
    assert no_unseen.hiou is None
    with pytest.raises(ValueError, match="has 3 classes, the matrix 4"):
        ConfusionMatrix(4).compute(split)


def test_ade_annotations_scored_against_themselves_give_100(fixtures_dir):
    ds = ADE20KDataset(fixtures_dir / "ade20k_sample")
    cm = ConfusionMatrix(ds.num_classes)
    present = set()
    for item in ds:
        label = item["label"]
        cm.update(label.clamp(max=ds.num_classes - 1), label)  # the prediction at ignored pixels is irrelevant
        present |= set(label.unique().tolist()) - {255}
    m = cm.compute(ds.zero_shot_split)
    assert m.miou == pytest.approx(100.0)
    assert m.pacc == pytest.approx(100.0)
    assert m.macc == pytest.approx(100.0)
    assert {k for k, v in enumerate(m.iou) if not math.isnan(v)} == present
    assert m.miou_seen == pytest.approx(100.0)
    assert m.miou_unseen is None
    assert sum(m.pixels) == sum(int((item["label"] != 255).sum()) for item in ds)


def test_as_dict_is_strict_json():
    split = ZeroShotSplit("toy", ("a", "b", "c", "d"), (3,))
    m = _matrix(k=4).compute(split)
    d = m.as_dict()
    text = json.dumps(d, allow_nan=False)
    assert json.loads(text)["per_class"][3] == {"name": "d", "iou": None, "acc": None, "pixels": 0, "unseen": True}
    assert d["miou_unseen"] is None  # class d is in no label
    assert d["hiou"] is None
    assert d["miou"] == pytest.approx(m.miou)


def test_merge_equals_one_pass():
    a, b = ConfusionMatrix(3), ConfusionMatrix(3)
    a.update(PRED[0], LABEL[0])
    b.update(PRED[1], LABEL[1])
    assert a.merge(b).matrix.tolist() == EXPECTED
    with pytest.raises(ValueError, match="cannot merge"):
        a.merge(ConfusionMatrix(4))


def test_all_reduce_is_a_no_op_without_distributed_and_sums_with_it(tmp_path):
    cm = _matrix()
    assert not dist.is_initialized()
    assert cm.all_reduce().matrix.tolist() == EXPECTED
    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this build")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert cm.all_reduce().matrix.tolist() == EXPECTED  # one process: the sum is itself
    finally:
        dist.destroy_process_group()


def test_print_metrics_shows_summary_and_classes():
    split = ZeroShotSplit("toy", ("cat", "dog", "cow"), (2,))
    m = _matrix().compute(split)
    buf = io.StringIO()
    print_metrics(m, console=Console(file=buf, width=120, color_system=None))
    out = buf.getvalue()
    for word in ("mIoU", "pAcc", "mAcc", "mIoU(S)", "mIoU(U)", "hIoU", "cat", "dog", "cow", "unseen", "50.00"):
        assert word in out
    buf = io.StringIO()
    print_metrics(_matrix().compute(), per_class=False, console=Console(file=buf, width=120, color_system=None))
    assert "hIoU" not in buf.getvalue()
    assert "Per class" not in buf.getvalue()


def test_metrics_dataclass_is_frozen():
    m = _matrix().compute()
    assert isinstance(m, SegmentationMetrics)
    with pytest.raises(AttributeError):
        m.miou = 0.0
