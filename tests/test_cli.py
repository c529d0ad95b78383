"""The otseg and otkit commands end to end on tiny settings (click's CliRunner)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cli.otseg_cli import main as otseg_main

TINY_TRAIN = [
    "--preset", "synthetic-tiny",
    "--set", "iters=3", "--set", "batch_size=2", "--set", "warmup_iters=1",
    "--set", 'synthetic={"image_size": 64, "train_images": 8, "val_images": 3}',
    "--set", "progress=false",
]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    result = CliRunner().invoke(otseg_main, ["train", *TINY_TRAIN, "--out-dir", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_train_command(trained):
    assert (trained / "model.safetensors").is_file() and (trained / "checkpoint.pt").is_file()
    assert json.loads((trained / "config.json").read_text())["iters"] == 3


def test_train_resume_continues(trained):
    args = ["train", *TINY_TRAIN, "--set", "iters=4", "--out-dir", str(trained), "--resume"]
    with pytest.warns(UserWarning, match="learning-rate schedule changes"):
        result = CliRunner().invoke(otseg_main, args)
    assert result.exit_code == 0, result.output
    assert "step 4" in result.output


def test_eval_command_on_a_folder_dataset(trained, tmp_path):
    from otseg.data.synthetic import SyntheticWorld, diagonal_split
    from otseg.data.synthetic_dataset import SyntheticSegmentationDataset, write_folder_dataset

    world = SyntheticWorld(image_size=64)
    split = diagonal_split(world)
    root = write_folder_dataset(SyntheticSegmentationDataset.for_split(world, split, "val", 3), tmp_path / "folder")
    out = tmp_path / "metrics.json"
    args = ["eval", "--model", str(trained / "model.safetensors"), "--dataset", "folder", "--data-root", str(root)]
    result = CliRunner().invoke(otseg_main, [*args, "--mode", "whole", "--short-side", "64", "--json", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert {"miou", "miou_seen", "miou_unseen", "hiou", "pacc", "macc", "per_class"} <= set(metrics)
    assert "mIoU(U)" in result.output


def test_eval_command_on_the_synthetic_world_of_the_model(trained):
    args = ["eval", "--model", str(trained / "model.safetensors"), "--dataset", "synthetic", "--mode", "whole"]
    result = CliRunner().invoke(otseg_main, [*args, "--short-side", "64", "--no-per-class"])
    assert result.exit_code == 0, result.output
    assert "mIoU(U)" in result.output and "3 images" in result.output


def test_predict_command_on_real_images(trained, fixtures_dir, tmp_path):
    images = sorted(str(p) for p in (fixtures_dir / "ade20k_sample" / "images").glob("*.jpg"))[:2]
    args = ["predict", *images, "--model", str(trained / "model.safetensors"), "--classes", "wall,floor,person"]
    result = CliRunner().invoke(
        otseg_main, [*args, "--crop", "64", "--stride", "48", "--short-side", "64", "--out-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    for image in images:
        stem = Path(image).stem
        labels = np.asarray(Image.open(tmp_path / f"{stem}_labels.png"))
        assert labels.shape == np.asarray(Image.open(image)).shape[:2] and labels.max() < 3
        assert (tmp_path / f"{stem}_overlay.png").is_file()


def test_predict_command_batches_a_folder(trained, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    sizes = [(40, 56), (40, 56), (40, 56), (48, 48)]
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    args = ["predict", str(folder), "--model", str(trained / "model.safetensors"), "--classes", "a,b,c"]
    args += ["--mode", "whole", "--short-side", "32", "--batch-size", "2", "--precision", "bf16"]
    result = CliRunner().invoke(otseg_main, [*args, "--out-dir", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "images/s" in result.output
    for i, size in enumerate(sizes):
        assert np.asarray(Image.open(tmp_path / "out" / f"im{i}_labels.png")).shape == size


def test_stats_command(trained, tmp_path):
    result = CliRunner().invoke(otseg_main, ["stats", "otseg-tiny", "--json", str(tmp_path / "stats.json")])
    assert result.exit_code == 0, result.output
    assert "paper's convention" in result.output and "all operations" in result.output
    numbers = json.loads((tmp_path / "stats.json").read_text())
    assert numbers["image_size"] == 64 and numbers["paper_gflops"] > 0 and numbers["gflops"] > numbers["paper_gflops"]
    result = CliRunner().invoke(otseg_main, ["stats", str(trained / "model.safetensors"), "--classes", "3"])
    assert result.exit_code == 0, result.output
    assert "K=3" in result.output


def test_predict_reports_an_unreadable_image(trained, tmp_path):
    bad = tmp_path / "not_an_image.png"
    bad.write_bytes(b"this is not a png")
    args = ["predict", str(bad), "--model", str(trained / "model.safetensors"), "--classes", "a,b"]
    result = CliRunner().invoke(otseg_main, [*args, "--out-dir", str(tmp_path / "out")])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert str(bad) in result.output


def test_embed_classes_command(tmp_path):
    out = tmp_path / "emb.npy"
    args = ["embed-classes", "--classes", "cat,dog", "--model-config", "otseg-tiny", "--allow-random-clip"]
    args += ["--out", str(out)]
    result = CliRunner().invoke(otseg_main, args)
    assert result.exit_code == 0, result.output
    assert np.load(out).shape == (2, 3, 32)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--preset", "nope"], "unknown train preset"),
        (["train", "--preset", "voc-transductive"], "init_from"),
        (["train", "--preset", "synthetic-tiny", "--set", "iters"], "expected key=value"),
        (["train", "--preset", "synthetic-tiny", "--set", "no_such_key=1"], "unknown training config keys"),
        (["predict", "missing.png", "--classes", "a"], "does not exist"),
        (["eval", "--dataset", "voc"], "exactly one of --model"),
        (["embed-classes", "--out", "x.npy"], "exactly one of --classes"),
        (["embed-classes", "--classes", "a,,b", "--out", "x.npy"], "empty"),
        (["eval", "--max-images", "0"], "0 is not in the range"),
    ],
)
def test_bad_options_give_usage_errors_not_tracebacks(args, message):
    result = CliRunner().invoke(otseg_main, args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["train", "eval", "predict", "embed-classes", "stats", "demo", "serve"])
def test_help_of_every_command(command):
    result = CliRunner().invoke(otseg_main, [command, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output
