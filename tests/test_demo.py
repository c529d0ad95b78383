"""The CPU demo: tiny CLIP pre-training beats chance on unseen names (images and patches), its weights load, the
demo and its calibration run, and ``otseg eval`` on the demo's model file reproduces the demo's numbers."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from cli.otseg_cli import main as otseg_main
from otseg.build import build_otseg
from otseg.clip import WordTokenizer, build_clip, save_local_dir
from otseg.data.synthetic import SyntheticWorld, diagonal_split
from otseg.demo import demo_model_config, demo_world_options
from otseg.demo.clip_pretrain import PretrainConfig, patch_zero_shot_accuracy, pretrain_clip, zero_shot_accuracy
from otseg.modeling.text_encoder import templates_for


def _world():
    return SyntheticWorld(**demo_world_options())


def test_reduced_pretraining_beats_chance_on_unseen_names():
    torch.manual_seed(0)
    world = _world()
    split = diagonal_split(world)
    cfg = demo_model_config(world)
    tokenizer = WordTokenizer(cfg.tokenizer["vocab"], context_length=16)
    clip = build_clip(cfg.clip, cfg.quick_gelu)
    templates = templates_for(6)
    losses = pretrain_clip(
        clip, tokenizer, world, split.seen, templates, PretrainConfig(steps=80, warmup=8), show_progress=False
    )
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10
    chance = 1 / len(split.unseen)
    accuracy = zero_shot_accuracy(clip, tokenizer, world, split.unseen, split.unseen, templates, num_images=200)
    assert accuracy > chance + 0.2, accuracy
    # token pooling aligns single patches with the text: what OTSeg's score map and decoder compare
    patches = patch_zero_shot_accuracy(
        clip, tokenizer, world, split.unseen, split.unseen, templates, num_images=50, require=split.unseen
    )
    assert patches > chance + 0.2, patches


def test_pretraining_config_is_checked():
    with pytest.raises(ValueError, match="pooling"):
        PretrainConfig(pooling="max")
    with pytest.raises(ValueError, match="min_objects"):
        PretrainConfig(min_objects=3, max_objects=2)


def test_tiny_clip_round_trips_through_the_weight_loader(tmp_path):
    torch.manual_seed(0)
    world = _world()
    cfg = demo_model_config(world)
    clip = build_clip(cfg.clip, cfg.quick_gelu)
    folder = save_local_dir(clip, tmp_path / "clip", cfg.clip, cfg.quick_gelu)
    model = build_otseg(cfg, clip_weights=f"local-dir:{folder}")
    torch.testing.assert_close(model.image_encoder.conv1.weight, clip.visual.conv1.weight)
    torch.testing.assert_close(model.text_encoder.token_embedding.weight, clip.token_embedding.weight)
    emb = model.class_embeddings(world.class_names)
    assert emb.shape == (world.num_classes, 6, 64)


def test_quick_demo_runs_end_to_end(tmp_path):
    result = CliRunner().invoke(otseg_main, ["demo", "--quick", "--out-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "demo.json").read_text())
    assert set(report["results"]) == {"pre-trained tiny CLIP", "random CLIP (ablation)"}
    for numbers in report["results"].values():
        assert {"miou_seen", "miou_unseen", "hiou"} <= set(numbers)
    assert (tmp_path / "prediction.png").is_file()
    assert all((tmp_path / sub / "training_curves.png").is_file() for sub in ("otseg", "otseg-random-clip"))
    assert report["calibration"]["seen_bias"] >= 0
    assert 0 <= report["picture_object_pixels_right"] <= 1
    phases = report["phase_seconds"]
    assert set(phases) == {"clip_pretraining", "otseg_training", "ablation_training"}
    assert all(0 < t < report["seconds"] for t in phases.values())
    assert report["threads_per_process"] >= 1
    per_class = report["per_class"]["pre-trained tiny CLIP"]
    assert [c["name"] for c in per_class if c["unseen"]] == ["red solid", "green striped", "blue dotted",
                                                             "yellow checkered"]  # fmt: skip
    assert "IoU per class" in result.output

    # the model file records its CLIP weights, world and inference settings: eval needs no other option
    scored = tmp_path / "eval.json"
    model = tmp_path / "otseg" / "model.safetensors"
    result = CliRunner().invoke(
        otseg_main, ["eval", "--model", str(model), "--dataset", "synthetic", "--json", str(scored)]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(scored.read_text())
    for key in ("miou_seen", "miou_unseen", "hiou"):
        assert metrics[key] == pytest.approx(report["results"]["pre-trained tiny CLIP"][key], abs=1e-6)


def test_quick_calibration_runs(tmp_path):
    result = CliRunner().invoke(otseg_main, ["demo", "--quick", "--calibrate", "--out-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "calibration.json").read_text())
    assert len(report["pseudo_unseen"]) == 4
    assert str(report["seen_bias"]) in report["sweep"]
