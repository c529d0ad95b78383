"""``otseg``: train, evaluate, predict, embed class names, and the demo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from cli.common import console, write_json

CONFIG_DIR = Path(__file__).resolve().parents[1] / "otseg" / "configs"


def _parse_value(text: str) -> Any:
    """``--set`` values: JSON when it parses (numbers, true/false/null, lists, dicts), else the raw string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _overrides(pairs: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"expected key=value, got {pair!r}.", param_hint="--set")
        key, value = pair.split("=", 1)
        out[key.strip()] = _parse_value(value)
    return out


def _presets(kind: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / kind).glob("*.json"))


def _read_preset(kind: str, name: str | None, path: str | None) -> dict[str, Any]:
    if name and path:
        raise click.UsageError("give either --preset or --config, not both.")
    if path:
        return json.loads(Path(path).read_text())
    if name:
        file = CONFIG_DIR / kind / f"{name}.json"
        if not file.is_file():
            raise click.BadParameter(f"unknown preset {name!r}; choose from {_presets(kind)}.", param_hint="--preset")
        return json.loads(file.read_text())
    return {}


def _fail(err: Exception) -> None:
    raise click.ClickException(str(err)) from err


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """OTSeg: zero-shot semantic segmentation with multi-prompt Sinkhorn attention."""


@main.command()
@click.option("--preset", default=None, help="A training preset, e.g. voc-inductive (see --list-presets).")
@click.option(
    "--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None, help="A JSON config."
)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a config value (repeatable).")
@click.option("--out-dir", default=None, help="Output folder (checkpoints, logs, curves).")
@click.option("--resume", is_flag=True, help="Continue from <out-dir>/checkpoint.pt, bit for bit.")
@click.option("--list-presets", is_flag=True, help="List the training presets and exit.")
def train(preset, config_path, sets, out_dir, resume, list_presets) -> None:
    """Train OTSeg (inductive, transductive or fully supervised); single process or under torchrun."""
    from otseg.train import TrainConfig, TrainingDiverged
    from otseg.train import train as run_training

    if list_presets:
        console.print("\n".join(_presets("train")))
        return
    values = {**_read_preset("train", preset, config_path), **_overrides(sets)}
    if out_dir:
        values["out_dir"] = out_dir
    try:
        cfg = TrainConfig.from_dict(values)
    except (ValueError, TypeError) as err:
        _fail(err)
    try:
        summary = run_training(cfg, resume=resume)
    except (TrainingDiverged, RuntimeError, ValueError, FileNotFoundError) as err:
        _fail(err)
    if summary.get("interrupted"):
        return
    metrics = summary["metrics"]
    console.print(
        f"done: step {summary['step']}, mIoU {metrics['miou']:.2f}"
        + (f", mIoU(S) {metrics['miou_seen']:.2f}" if metrics.get("miou_seen") is not None else "")
        + (
            f", mIoU(U) {metrics['miou_unseen']:.2f}, hIoU {metrics['hiou']:.2f}"
            if metrics.get("hiou") is not None
            else ""
        )
    )
    if "model" in summary:
        console.print(f"model: {summary['model']}\ncurves: {summary['curves']}")


def _load_for_inference(model_file, paper_checkpoint, model_config, clip_weights, cache_dir):
    """A model from our file, or the paper's checkpoint into a model built from a config."""
    from otseg.build import build_otseg
    from otseg.checkpoint import load_model, load_paper_checkpoint

    if bool(model_file) == bool(paper_checkpoint):
        raise click.UsageError("give exactly one of --model (our .safetensors) or --paper-checkpoint (.pth).")
    if model_file:
        return load_model(model_file, clip_weights=clip_weights, cache_dir=cache_dir)
    import warnings

    from otseg.build import RandomWeightsWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)  # the checkpoint holds every CLIP weight
        model = build_otseg(model_config, cache_dir=cache_dir)
    report = load_paper_checkpoint(model, paper_checkpoint)
    console.print(
        f"loaded {report['loaded']} tensors from {paper_checkpoint} ({len(report['ignored'])} unused ignored)"
    )
    return model, {}


@main.command("eval")
@click.option(
    "--model", "model_file", type=click.Path(exists=True, dir_okay=False), default=None, help="Our model file."
)
@click.option("--paper-checkpoint", type=click.Path(exists=True, dir_okay=False), default=None, help="A released .pth.")
@click.option("--model-config", default="otseg-vit-b16", show_default=True, help="Architecture for --paper-checkpoint.")
@click.option("--clip-weights", default=None, help="CLIP weights, for model files that hold only trained weights.")
@click.option("--preset", default=None, help="Evaluation preset: voc, context, coco-stuff, ade.")
@click.option("--dataset", default=None, help="voc | context | coco-stuff | ade | folder | synthetic.")
@click.option("--data-root", type=click.Path(file_okay=False), default=None, help="Dataset root folder.")
@click.option("--unseen", default=None, help="Comma-separated unseen class names (default: the paper's split).")
@click.option(
    "--setting",
    type=click.Choice(["inductive", "transductive", "fully"]),
    default="inductive",
    show_default=True,
    help="Inductive lowers seen classes by the model's seen_bias (calibration).",
)
@click.option("--mode", type=click.Choice(["slide", "whole"]), default=None, help="Sliding window or whole image.")
@click.option("--crop", type=click.IntRange(16), default=None, help="Window size.")
@click.option("--stride", type=click.IntRange(1), default=None, help="Window stride.")
@click.option("--short-side", type=click.IntRange(16), default=None, help="Test resize of the short side.")
@click.option("--max-images", type=click.IntRange(1), default=None, help="Evaluate the first images only.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write the metrics as JSON.")
@click.option("--per-class/--no-per-class", default=True, show_default=True, help="Print the per-class table.")
def evaluate_command(
    model_file,
    paper_checkpoint,
    model_config,
    clip_weights,
    preset,
    dataset,
    data_root,
    unseen,
    setting,
    mode,
    crop,
    stride,
    short_side,
    max_images,
    device,
    json_out,
    per_class,
) -> None:
    """Evaluate a model: mIoU(S), mIoU(U), hIoU, pAcc, mAcc and per-class IoU (confusion matrix, ignore 255)."""
    from otseg.data.classes import ZeroShotSplit
    from otseg.data.datasets import build_dataset
    from otseg.evaluate import evaluate
    from otseg.evaluation.metrics import print_metrics
    from otseg.inference import InferenceSettings
    from otseg.run_data import synthetic_run_data

    values = _read_preset("eval", preset, None)
    dataset = dataset or values.get("dataset")
    if dataset is None:
        raise click.UsageError("give --dataset (or --preset).")
    try:
        settings = InferenceSettings(
            short_side=short_side or values.get("short_side", 512),
            mode=mode or values.get("mode", "slide"),
            crop=crop or values.get("crop", 512),
            stride=stride or values.get("stride", 426),
        )
        model, meta = _load_for_inference(model_file, paper_checkpoint, model_config, clip_weights, None)
        if dataset == "synthetic":
            data = synthetic_run_data(meta.get("synthetic", {}))
            data_set, split = data.val, data.split
        else:
            if data_root is None:
                raise click.UsageError("give --data-root for this dataset.")
            data_set = build_dataset(dataset, data_root, "val")
            split = data_set.zero_shot_split
        if unseen is not None:
            names = [n.strip() for n in unseen.split(",") if n.strip()]
            split = ZeroShotSplit.from_names(split.class_names, names, name="custom")
        metrics = evaluate(
            model,
            data_set,
            split,
            settings=settings,
            calibrate_seen=setting == "inductive",
            max_images=max_images,
            device=device,
        )
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        _fail(err)
    print_metrics(metrics, per_class=per_class, title=f"{dataset}: {len(data_set)} images", console=console)
    if json_out:
        console.print(f"wrote {write_json(json_out, metrics.as_dict())}")


def _class_list(classes: str | None, classes_file: str | None) -> list[str]:
    if bool(classes) == bool(classes_file):
        raise click.UsageError("give exactly one of --classes 'a,b,c' or --classes-file FILE.")
    if classes:
        names = [n.strip() for n in classes.split(",")]
    else:
        names = [n.strip() for n in Path(classes_file).read_text(encoding="utf-8").splitlines() if n.strip()]
    if any(not n for n in names):
        raise click.BadParameter("class names must not be empty (check for doubled commas).", param_hint="--classes")
    return names


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--model", "model_file", type=click.Path(exists=True, dir_okay=False), default=None, help="Our model file."
)
@click.option("--paper-checkpoint", type=click.Path(exists=True, dir_okay=False), default=None, help="A released .pth.")
@click.option("--model-config", default="otseg-vit-b16", show_default=True, help="Architecture for --paper-checkpoint.")
@click.option("--clip-weights", default=None, help="CLIP weights, for model files that hold only trained weights.")
@click.option("--classes", default=None, help="Comma-separated class names.")
@click.option("--classes-file", type=click.Path(exists=True, dir_okay=False), default=None, help="One name per line.")
@click.option("--seen", default=None, help="Comma-separated classes seen in training (calibrated).")
@click.option("--mode", type=click.Choice(["slide", "whole"]), default="slide", show_default=True)
@click.option("--crop", type=click.IntRange(16), default=512, show_default=True)
@click.option("--stride", type=click.IntRange(1), default=426, show_default=True)
@click.option("--short-side", type=click.IntRange(16), default=512, show_default=True)
@click.option("--out-dir", type=click.Path(file_okay=False), default="predictions", show_default=True)
@click.option("--device", default="cpu", show_default=True)
def predict(
    images, model_file, paper_checkpoint, model_config, clip_weights, classes, classes_file, seen, mode, crop, stride,
    short_side, out_dir, device,
) -> None:  # fmt: skip
    """Segment IMAGES with any class names: writes an overlay with a legend and the label PNG per image."""
    import numpy as np
    from PIL import Image

    from otseg.data.datasets import load_image
    from otseg.inference import InferenceSettings, OTSegPredictor
    from otseg.plots import colour_palette, overlay, save_prediction_figure

    names = _class_list(classes, classes_file)
    seen_names = [n.strip() for n in seen.split(",")] if seen else None
    try:
        settings = InferenceSettings(short_side=short_side, mode=mode, crop=crop, stride=stride)
        model, _ = _load_for_inference(model_file, paper_checkpoint, model_config, clip_weights, None)
        predictor = OTSegPredictor(model, settings, device=device)
        predictor.set_classes(names, seen=seen_names)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        _fail(err)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    palette = colour_palette(len(names))
    for path in images:
        try:
            image = load_image(path)
        except (ValueError, OSError) as err:
            _fail(err)
        labels = predictor.predict([image])[0].astype(np.uint8)
        rgb = image.permute(1, 2, 0).numpy()
        stem = Path(path).stem
        Image.fromarray(labels).save(out / f"{stem}_labels.png")
        present = np.unique(labels).tolist()
        figure = save_prediction_figure(
            out / f"{stem}_overlay.png",
            [("image", rgb), ("prediction", overlay(rgb, labels, palette))],
            names,
            present,
        )
        console.print(f"{path}: {', '.join(names[k] for k in present)} -> {figure}")


@main.command("embed-classes")
@click.option("--classes", default=None, help="Comma-separated class names.")
@click.option("--classes-file", type=click.Path(exists=True, dir_okay=False), default=None, help="One name per line.")
@click.option("--model-config", default="otseg-vit-b16", show_default=True, help="Model config (CLIP and templates).")
@click.option("--clip-weights", default=None, help="CLIP weights file or local-dir: (required for real embeddings).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output .safetensors or .npy file.")
def embed_classes(classes, classes_file, model_config, clip_weights, out) -> None:
    """Write the (K, N, C) text embeddings of class names x the config's prompt templates."""
    import numpy as np

    from otseg.build import build_otseg

    names = _class_list(classes, classes_file)
    try:
        model = build_otseg(model_config, clip_weights=clip_weights)
        emb = model.class_embeddings(names)
    except (ValueError, FileNotFoundError) as err:
        _fail(err)
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if out_path.suffix == ".npy":
        np.save(out_path, emb.numpy())
    elif out_path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({"embeddings": emb.contiguous()}, str(out_path), metadata={"classes": json.dumps(names)})
    else:
        raise click.BadParameter("use a .npy or .safetensors file name.", param_hint="--out")
    console.print(f"wrote {tuple(emb.shape)} embeddings of {len(names)} classes to {out_path}")


@main.command()
@click.option("--out-dir", type=click.Path(file_okay=False), default="runs/demo", show_default=True)
@click.option("--quick", is_flag=True, help="A much shorter run (for tests).")
def demo(out_dir, quick) -> None:
    """Zero-shot on a CPU in minutes: pre-train a tiny CLIP, train OTSeg on seen classes, segment unseen ones."""
    from otseg.demo import run_demo

    try:
        run_demo(Path(out_dir), quick=quick, console=console)
    except (RuntimeError, ValueError) as err:
        _fail(err)


if __name__ == "__main__":
    main()
