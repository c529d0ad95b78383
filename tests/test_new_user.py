"""What a new user meets at the command line: run folders, many classes, reusable model files, messages instead of
tracebacks, logs without a terminal, help texts, and pictures."""

from __future__ import annotations

import colorsys
import json
import os
import shutil
import signal
import warnings

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cli.otseg_cli import main as otseg_main
from otseg.build import load_otseg
from otseg.clip import build_clip, save_local_dir
from otseg.config import get_model_config
from otseg.data.readers import load_label, save_label_map
from otseg.utils import plots
from otseg.utils.progress import make_progress

TINY_TRAIN = [
    "--preset", "synthetic-tiny",
    "--set", "iters=2", "--set", "batch_size=2", "--set", "warmup_iters=1",
    "--set", 'synthetic={"image_size": 64, "train_images": 6, "val_images": 3}',
]  # fmt: skip


def _train(out, *extra):
    args = ["train", *TINY_TRAIN, "--set", "progress=false", "--out-dir", str(out), *extra]
    return CliRunner().invoke(otseg_main, args)


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    """A run trained with CLIP weights from a folder: its model file holds only the trained weights."""
    root = tmp_path_factory.mktemp("clip_run")
    cfg = get_model_config("otseg-tiny")
    clip = build_clip(cfg.clip, cfg.quick_gelu)
    folder = save_local_dir(clip, root / "clip", cfg.clip, cfg.quick_gelu)
    result = _train(root / "run", "--set", f"clip_weights=local-dir:{folder}", "--set", "inference.short_side=64")
    assert result.exit_code == 0, result.output
    return root


# --- 1. a run folder holds one run ------------------------------------------------------------------------------


def test_a_second_run_into_a_folder_is_refused_until_resume_or_overwrite(tmp_path):
    out = tmp_path / "run"
    assert _train(out, "--set", "iters=3", "--set", "checkpoint_interval=2").exit_code == 0
    assert (out / "model_step2.safetensors").is_file()
    again = _train(out)
    assert again.exit_code == 1 and "--resume" in again.output and "--overwrite" in again.output
    assert "Traceback" not in again.output
    replaced = _train(out, "--set", "iters=1", "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert not (out / "model_step2.safetensors").exists() and not (out / "model_step3.safetensors").exists()
    assert json.loads((out / "config.json").read_text())["iters"] == 1


def test_resume_with_nothing_to_resume_is_an_error(tmp_path):
    result = _train(tmp_path / "empty", "--resume")
    assert result.exit_code == 1 and "nothing to resume" in result.output


# --- 2. many classes, long names ---------------------------------------------------------------------------------


def test_label_maps_of_more_than_255_classes_are_16_bit(tmp_path):
    labels = np.arange(300 * 4).reshape(40, 30) % 300
    save_label_map(tmp_path / "wide.png", labels, 300)
    assert Image.open(tmp_path / "wide.png").mode.startswith("I;16")
    assert np.array_equal(load_label(tmp_path / "wide.png", wide=True), labels)
    save_label_map(tmp_path / "narrow.png", labels % 200, 200)
    assert Image.open(tmp_path / "narrow.png").mode == "L"
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 200\)"):
        save_label_map(tmp_path / "bad.png", labels, 200)


def test_predict_with_300_names_writes_16_bit_labels_and_a_legend_that_fits(tmp_path):
    model, _ = load_otseg("otseg-tiny", allow_random_clip=True)
    from otseg.checkpoint import save_model

    path = save_model(model, tmp_path / "m.safetensors")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"thing {i}" for i in range(300)))
    args = ["predict", str(tmp_path / "a.png"), "--model", str(path), "--classes-file", str(names)]
    args += ["--mode", "whole", "--short-side", "64", "--out-dir", str(tmp_path)]
    result = CliRunner().invoke(otseg_main, args)
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "a_labels.png").mode.startswith("I;16")
    assert load_label(tmp_path / "a_labels.png", wide=True).shape == (48, 64)


def test_legend_lists_present_classes_in_columns_inside_the_figure(tmp_path, monkeypatch):
    figures = []
    real_close = plots.plt.close
    monkeypatch.setattr(plots.plt, "close", lambda fig: figures.append(fig))
    image = np.zeros((32, 48, 3), dtype=np.uint8)
    names = [f"a long class name {i}" for i in range(200)]
    plots.save_prediction_figure(tmp_path / "f.png", [("image", image), ("prediction", image)], names, range(200))
    fig = figures[0]
    fig.canvas.draw()
    legend = fig.legends[0]
    texts = [t.get_text() for t in legend.get_texts()]
    assert len(texts) == 41 and texts[-1] == "and 160 more" and legend._ncols > 1
    box, renderer = legend.get_window_extent(), fig.canvas.get_renderer()
    page = fig.bbox
    assert box.x0 >= page.x0 and box.x1 <= page.x1 and box.y0 >= page.y0 and box.y1 <= page.y1
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent(renderer)), "the legend covers a panel"
    real_close(fig)


def test_long_names_warn_and_names_equal_after_the_cut_are_an_error():
    model, _ = load_otseg("otseg-tiny", allow_random_clip=True)  # a 16-token text encoder
    long = "a " + " ".join(["very"] * 20) + " long name"
    with pytest.warns(UserWarning, match="longer than the text encoder's 16 tokens"):
        model.class_embeddings([long, "sky"])
    twins = [" ".join(["big"] * 20) + " cat", " ".join(["big"] * 20) + " dog"]
    with pytest.raises(ValueError, match="become identical once cut"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.class_embeddings(twins)


# --- 3. model files that say how to use them ----------------------------------------------------------------------


def test_model_file_records_its_clip_weights_and_inference_settings(clip_run):
    model_file = clip_run / "run" / "model.safetensors"
    _, meta = load_otseg(model_file)
    assert meta["clip_weights"].startswith("local-dir:") and meta["inference"]["short_side"] == 64
    summary = json.loads((clip_run / "run" / "metrics.jsonl").read_text().splitlines()[-1])["eval"]
    out = clip_run / "eval.json"
    result = CliRunner().invoke(
        otseg_main, ["eval", "--model", str(model_file), "--dataset", "synthetic", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["miou"] == pytest.approx(summary["miou"])


def test_a_moved_run_finds_its_clip_weights_and_missing_ones_name_the_option(clip_run, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(clip_run / "run", moved / "run")
    shutil.copytree(clip_run / "clip", moved / "clip")
    meta_path = moved / "run" / "model.safetensors"
    shutil.move(clip_run / "clip", clip_run / "clip-away")
    try:
        model, _ = load_otseg(meta_path)  # found relative to the model file
        assert model is not None
        image = tmp_path / "a.png"
        Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(image)
        args = ["predict", str(image), "--model", str(clip_run / "run" / "model.safetensors"), "--classes", "a,b"]
        result = CliRunner().invoke(otseg_main, args)
        assert result.exit_code == 1 and "--clip-weights" in result.output and "Traceback" not in result.output
    finally:
        shutil.move(clip_run / "clip-away", clip_run / "clip")


# --- 4. one error path for bad files and values ---------------------------------------------------------------


@pytest.fixture
def folder_dataset(tmp_path):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("cat\ndog\n")
    for name in ("a", "b"):
        Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(root / "images" / f"{name}.png")
        Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(root / "labels" / f"{name}.png")
    model, _ = load_otseg("otseg-tiny", allow_random_clip=True)
    from otseg.checkpoint import save_model

    return root, save_model(model, tmp_path / "m.safetensors")


@pytest.mark.parametrize("damage", ["text", "truncated"])
def test_a_bad_image_in_a_dataset_is_named_without_a_traceback(folder_dataset, damage):
    root, model = folder_dataset
    bad = root / "images" / "b.png"
    if damage == "text":
        bad.write_text("these are notes, not an image")
    else:
        bad.write_bytes(bad.read_bytes()[:60])
    args = ["eval", "--model", str(model), "--dataset", "folder", "--data-root", str(root), "--mode", "whole"]
    result = CliRunner().invoke(otseg_main, args)
    assert result.exit_code == 1 and str(bad) in result.output and "Traceback" not in result.output


def test_bad_config_files_and_values_are_explained(tmp_path):
    not_json = tmp_path / "not_json.txt"
    not_json.write_text("iters: 5\n")
    result = CliRunner().invoke(otseg_main, ["train", "--config", str(not_json)])
    assert result.exit_code == 1 and "not valid JSON" in result.output and str(not_json) in result.output
    result = CliRunner().invoke(otseg_main, ["train", "--preset", "synthetic-tiny", "--set", "iters=abc"])
    assert result.exit_code == 1 and "iters expects integer, got 'abc'" in result.output
    result = CliRunner().invoke(otseg_main, ["train", "--preset", "synthetic-tiny", "--set", "inference.crop=big"])
    assert result.exit_code == 1 and "crop expects integer" in result.output and "Traceback" not in result.output


def test_messages_name_only_flags_and_keys_that_exist(tmp_path):
    from otseg.data.classes import get_split
    from otseg.data.datasets import SegmentationDataset

    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(tmp_path / "i.png")
    Image.fromarray(np.full((4, 4), 77, dtype=np.uint8)).save(tmp_path / "l.png")
    with pytest.raises(ValueError) as err:
        SegmentationDataset([(tmp_path / "i.png", tmp_path / "l.png")], get_split("voc"))[0]
    assert "--lenient-labels" in str(err.value) and "--set strict_labels=false" in str(err.value)
    assert "--lenient-labels" in CliRunner().invoke(otseg_main, ["eval", "--help"]).output
    keys = CliRunner().invoke(otseg_main, ["train", "--list-keys"]).output
    assert "strict_labels" in keys and "voc_aug" in keys


# --- 5. unattended training ---------------------------------------------------------------------------------------


def test_without_a_terminal_training_logs_plain_lines(tmp_path):
    result = CliRunner().invoke(otseg_main, ["train", *TINY_TRAIN, "--out-dir", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("training: step")]
    assert lines[0].startswith("training: step 1/2") and lines[-1].startswith("training: step 2/2")
    assert all("loss" in ln and "img/s" in ln and "left" in ln for ln in lines)


def test_ctrl_c_exits_with_status_130(tmp_path, monkeypatch):
    from otseg.engine import trainer

    real = trainer.lr_at

    def interrupt(step, cfg):
        if step == 0:
            os.kill(os.getpid(), signal.SIGINT)
        return real(step, cfg)

    monkeypatch.setattr(trainer, "lr_at", interrupt)
    result = _train(tmp_path / "run")
    assert result.exit_code == 130 and "continue with --resume" in result.output


def test_train_without_a_preset_lists_them_and_list_keys_explains_every_key():
    result = CliRunner().invoke(otseg_main, ["train"])
    assert result.exit_code == 2 and "voc-inductive" in result.output and "--preset" in result.output
    keys = CliRunner().invoke(otseg_main, ["train", "--list-keys"])
    assert keys.exit_code == 0
    for expected in ("iters", "integer", "20000", "optimizer steps", "model_overrides", "sinkhorn", "inference"):
        assert expected in keys.output


# --- 6. help ------------------------------------------------------------------------------------------------------


def _commands(group):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command)
        else:
            yield name, command


def test_every_option_has_help_and_shows_its_default():
    for name, command in _commands(otseg_main):
        for param in command.params:
            if not isinstance(param, click.Option) or param.name == "help":
                continue
            assert param.help, f"{name} {param.opts[0]} has no help"
            if param.is_flag or param.multiple or param.required or param.default in (None, ()):
                continue
            assert param.show_default or "[default:" in param.help, f"{name} {param.opts[0]} hides its default"


def test_window_options_state_their_defaults_and_the_progress_bar_labels_its_times():
    help_text = CliRunner().invoke(otseg_main, ["eval", "--help"], terminal_width=200).output
    assert "[default: the model file's, else 426]" in help_text
    progress = make_progress()
    progress.console.record = True
    task = progress.add_task("work", total=4, info="")
    progress.update(task, completed=1)
    progress.console.print(progress.make_tasks_table(progress.tasks))
    rendered = progress.console.export_text()
    assert "elapsed" in rendered and "left" in rendered


def test_eval_table_title_counts_the_images_evaluated(folder_dataset):
    root, model = folder_dataset
    args = ["eval", "--model", str(model), "--dataset", "folder", "--data-root", str(root), "--mode", "whole"]
    result = CliRunner().invoke(otseg_main, [*args, "--max-images", "1", "--no-per-class"])
    assert result.exit_code == 0, result.output
    assert "folder: 1 images" in result.output


# --- 7. pictures --------------------------------------------------------------------------------------------------


def test_neighbouring_class_ids_get_distinct_hues():
    palette = plots.colour_palette(200).astype(float) / 255
    hues = np.array([colorsys.rgb_to_hsv(*c)[0] for c in palette])
    gaps = np.abs(hues[1:] - hues[:-1])
    assert np.minimum(gaps, 1 - gaps).min() > 0.3
    assert len({tuple(c) for c in plots.colour_palette(200)}) == 200


def test_names_in_scripts_no_font_has_warn_and_an_installed_font_is_used(monkeypatch):
    latin = frozenset(range(32, 127))
    monkeypatch.setattr(plots, "_font_coverage", lambda: {"DejaVu Sans": latin})
    with pytest.warns(UserWarning, match="no installed font can draw the characters '猫'"):
        assert plots.font_family_for(["猫", "sky"]) == ["DejaVu Sans"]
    monkeypatch.setattr(plots, "_font_coverage", lambda: {"DejaVu Sans": latin, "Noto Sans CJK": frozenset({0x732B})})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert plots.font_family_for(["猫", "sky"]) == ["DejaVu Sans", "Noto Sans CJK"]
