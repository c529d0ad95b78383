"""``otseg eval``, ``otseg predict`` and ``otseg embed-classes``: using a trained model."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from cli.common import console, debug_option, print_table, reported_errors, write_json


def _setting_default(name: str) -> Any:
    from otseg.predictor import InferenceSettings

    return getattr(InferenceSettings(), name)


def model_options(command: Callable) -> Callable:
    """The options that say which model to use (shared by eval, predict and serve)."""
    options = [
        click.option(
            "--model",
            "model_file",
            type=click.Path(exists=True, dir_okay=False),
            default=None,
            help="Our model file (.safetensors), e.g. runs/demo/otseg/model.safetensors.",
        ),
        click.option(
            "--paper-checkpoint",
            type=click.Path(exists=True, dir_okay=False),
            default=None,
            help="One of the paper's released checkpoints (.pth).",
        ),
        click.option(
            "--model-config",
            default="otseg-vit-b16",
            show_default=True,
            help="Architecture of --paper-checkpoint: otseg-vit-b16, otseg-vit-b16-context or otseg-vit-b16-coco.",
        ),
        click.option(
            "--clip-weights",
            default=None,
            help="CLIP weights (file or local-dir:FOLDER) for model files that hold only the trained weights "
            "[default: where the model file records them].",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


_WINDOW_OPTIONS = (  # (flag, type, meaning, setting): defaults come from InferenceSettings
    ("--mode", click.Choice(["slide", "whole"]), "Sliding window or one pass on the whole image", "mode"),
    ("--crop", click.IntRange(16), "Window size in pixels", "crop"),
    ("--stride", click.IntRange(1), "Window stride in pixels", "stride"),
    ("--short-side", click.IntRange(16), "Resize the short side to this length", "short_side"),
    ("--precision", click.Choice(["fp32", "bf16"]), "bf16 autocast: faster on GPUs and AMX CPUs only", "precision"),
    ("--compile/--no-compile", None, "torch.compile the image encoder (the first window compiles)", "compile"),
)


def window_options(command: Callable) -> Callable:
    """Test-time resize, window and speed options, and ``--device``.

    The command receives the settings' flags as one dict, ``inference_flags`` (``None`` where not given: those
    come from the preset, the model file or the defaults, see :func:`inference_settings`), and ``device``.
    """

    @functools.wraps(command)
    def collect(*args: Any, **kwargs: Any) -> Any:
        flags = {name: kwargs.pop(name) for *_, name in _WINDOW_OPTIONS}
        return command(*args, inference_flags=flags, **kwargs)

    wrapped = click.option("--device", default="cpu", show_default=True, help="Torch device: cpu, cuda, cuda:1, ...")(
        collect
    )
    for flag, kind, meaning, name in reversed(_WINDOW_OPTIONS):
        help_text = f"{meaning} [default: the model file's, else {_setting_default(name)}]."
        wrapped = click.option(flag, name, type=kind, default=None, help=help_text)(wrapped)
    return wrapped


def max_megapixels_option(command: Callable) -> Callable:
    """``--max-megapixels``: the largest image read (the command receives ``max_pixels``, in pixels)."""
    from otseg.data.readers import MAX_PIXELS

    def to_pixels(ctx: click.Context, param: click.Parameter, value: float) -> int:
        return round(value * 1e6)

    return click.option(
        "--max-megapixels",
        "max_pixels",
        type=click.FloatRange(min=0.001),
        default=MAX_PIXELS / 1e6,
        show_default=True,
        callback=to_pixels,
        help="Refuse images over this many megapixels, from their header, before decoding them (a guard against "
        "decompression bombs); raise it for genuine larger images.",
    )(command)


def load_for_inference(model_file: str | None, paper_checkpoint: str | None, model_config: str, clip_weights):
    """``(model, meta)`` from our model file or the paper's checkpoint (exactly one of them)."""
    from otseg.build import load_otseg

    if bool(model_file) == bool(paper_checkpoint):
        raise click.UsageError("give exactly one of --model (our .safetensors) or --paper-checkpoint (.pth).")
    model, meta = load_otseg(model_file or paper_checkpoint, clip_weights=clip_weights, paper_config=model_config)
    if paper_checkpoint:
        report = meta["paper_checkpoint"]
        console.print(f"loaded {report['loaded']} tensors from {paper_checkpoint} ({len(report['ignored'])} unused)")
    return model, meta


def inference_settings(meta: dict[str, Any], preset: dict[str, Any] | None, **flags: Any):
    """Settings from the flags given, else the evaluation preset, else what the model file records, else defaults."""
    from otseg.predictor import InferenceSettings

    values = {**meta.get("inference", {}), **(preset or {})}
    values.update({k: v for k, v in flags.items() if v is not None})
    return InferenceSettings.from_dict(values)


@click.command("eval")
@model_options
@click.option("--preset", default=None, help="Evaluation preset: voc, context, coco-stuff, ade (dataset and windows).")
@click.option("--dataset", default=None, help="voc, context, coco-stuff, ade, folder, synthetic [default: preset's]")
@click.option("--data-root", type=click.Path(file_okay=False), default=None, help="Dataset root folder.")
@click.option("--unseen", default=None, help="Comma-separated unseen class names [default: the paper's split].")
@click.option(
    "--setting",
    type=click.Choice(["inductive", "transductive", "fully"]),
    default="inductive",
    show_default=True,
    help="Inductive lowers seen classes by the model's seen_bias (calibration).",
)
@window_options
@max_megapixels_option
@click.option("--max-images", type=click.IntRange(1), default=None, help="Evaluate the first images only.")
@click.option(
    "--lenient-labels", is_flag=True, help="Ignore label values outside the classes instead of stopping on them."
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write the metrics as JSON.")
@click.option("--per-class/--no-per-class", default=True, show_default=True, help="Print the per-class table.")
@debug_option
def evaluate_command(
    model_file, paper_checkpoint, model_config, clip_weights, preset, dataset, data_root, unseen, setting,
    inference_flags, device, max_pixels, max_images, lenient_labels, json_out, per_class, debug,
) -> None:  # fmt: skip
    """Evaluate a model: mIoU(S), mIoU(U), hIoU, pAcc, mAcc and per-class IoU (confusion matrix, ignore 255)."""
    from otseg.data.classes import ZeroShotSplit, parse_class_names
    from otseg.data.datasets import build_dataset
    from otseg.data.sources import synthetic_sources
    from otseg.engine import evaluate, print_metrics
    from otseg.presets import load_preset

    with reported_errors(debug):
        values = load_preset("eval", preset) if preset else {}
        dataset = dataset or values.get("dataset")
        if dataset is None:
            raise click.UsageError("give --dataset (or --preset).")
        model, meta = load_for_inference(model_file, paper_checkpoint, model_config, clip_weights)
        settings = inference_settings(meta, values.get("inference"), **inference_flags)
        if dataset == "synthetic":
            data = synthetic_sources(meta.get("synthetic", {}))
            data_set, split = data.val, data.split
        else:
            if data_root is None:
                raise click.UsageError("give --data-root for this dataset.")
            data_set = build_dataset(dataset, data_root, "val", strict_labels=not lenient_labels, max_pixels=max_pixels)
            split = data_set.zero_shot_split
        if unseen is not None:
            split = ZeroShotSplit.from_names(split.class_names, parse_class_names(unseen, "--unseen"), name="custom")
        count = len(data_set) if max_images is None else min(max_images, len(data_set))
        metrics = evaluate(
            model,
            data_set,
            split,
            settings=settings,
            calibrate_seen=setting == "inductive",
            max_images=max_images,
            device=device,
        )
    print_metrics(metrics, per_class=per_class, title=f"{dataset}: {count} images", console=console)
    if json_out:
        console.print(f"wrote {write_json(json_out, metrics.as_dict())}")


def class_list(classes: str | None, classes_file: str | None) -> list[str]:
    """Class names from ``--classes`` or ``--classes-file`` (exactly one)."""
    from otseg.data.classes import parse_class_names
    from otseg.data.readers import read_class_names

    if bool(classes) == bool(classes_file):
        raise click.UsageError("give exactly one of --classes 'a,b,c' or --classes-file FILE.")
    try:
        return list(parse_class_names(classes, "--classes") if classes else read_class_names(classes_file))
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--classes") from None


def _image_paths(inputs: tuple[str, ...]) -> list[Path]:
    from otseg.data.readers import IMAGE_SUFFIXES

    paths = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise click.BadParameter(f"{item} holds no images ({', '.join(IMAGE_SUFFIXES)}).", param_hint="IMAGES")
            paths += found
        else:
            paths.append(item)
    return paths


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True))
@model_options
@click.option("--classes", default=None, help="Class names, separated by commas.")
@click.option("--classes-file", type=click.Path(exists=True, dir_okay=False), default=None, help="One name per line.")
@click.option("--seen", default=None, help="Comma-separated classes seen in training (calibrated) [default: none].")
@window_options
@max_megapixels_option
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Segment this many same-size images at once (for GPUs; on a CPU it gains nothing).",
)
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False),
    default="predictions",
    show_default=True,
    help="Where the label maps (<stem>_labels.png) and overlays (<stem>_overlay.png) go.",
)
@debug_option
def predict(
    images, model_file, paper_checkpoint, model_config, clip_weights, classes, classes_file, seen, inference_flags,
    device, max_pixels, batch_size, out_dir, debug,
) -> None:  # fmt: skip
    """Segment IMAGES (files or folders of images) with any class names: a label map and an overlay per image."""
    import numpy as np

    from otseg.data.classes import parse_class_names
    from otseg.data.readers import load_image, open_image, save_label_map
    from otseg.predictor import OTSegPredictor
    from otseg.utils.plots import colour_palette, overlay, save_prediction_figure
    from otseg.utils.progress import make_progress

    names = class_list(classes, classes_file)
    paths = _image_paths(images)
    with reported_errors(debug):
        for path in paths:  # every header first: a file that cannot be read stops the run before the model loads
            open_image(path, max_pixels=max_pixels).close()
        seen_names = list(parse_class_names(seen, "--seen")) if seen else None
        model, meta = load_for_inference(model_file, paper_checkpoint, model_config, clip_weights)
        settings = inference_settings(meta, None, **inference_flags)
        predictor = OTSegPredictor(model, settings, device=device)
        predictor.set_classes(names, seen=seen_names)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        palette = colour_palette(len(names))
        start = time.perf_counter()
        done = 0
        with make_progress() as progress:
            task = progress.add_task("segmenting", total=len(paths), info="")
            for first in range(0, len(paths), batch_size):
                chunk = paths[first : first + batch_size]
                loaded = [load_image(path, max_pixels) for path in chunk]
                for path, image, labels in zip(chunk, loaded, predictor.predict(loaded, batch_size), strict=True):
                    rgb = image.permute(1, 2, 0).numpy()
                    save_label_map(out / f"{path.stem}_labels.png", labels, len(names))
                    areas = np.bincount(labels.ravel(), minlength=len(names))
                    present = [int(k) for k in np.argsort(-areas, kind="stable") if areas[k]]  # largest first
                    figure = save_prediction_figure(
                        out / f"{path.stem}_overlay.png",
                        [("image", rgb), ("prediction", overlay(rgb, labels, palette, ignore_index=None))],
                        names,
                        present,
                    )
                    progress.console.print(f"{path}: {', '.join(names[k] for k in present[:12])} -> {figure}")
                done += len(chunk)
                rate = done / (time.perf_counter() - start)
                progress.update(task, completed=done, info=f"{rate:.2f} images/s")


@click.command("embed-classes")
@click.option("--classes", default=None, help="Class names, separated by commas.")
@click.option("--classes-file", type=click.Path(exists=True, dir_okay=False), default=None, help="One name per line.")
@click.option("--model-config", default="otseg-vit-b16", show_default=True, help="Model config (CLIP and templates).")
@click.option("--clip-weights", default=None, help="CLIP weights file or local-dir:FOLDER.")
@click.option("--allow-random-clip", is_flag=True, help="Without --clip-weights, use a random CLIP (tests only).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output .safetensors or .npy file.")
@debug_option
def embed_classes(classes, classes_file, model_config, clip_weights, allow_random_clip, out, debug) -> None:
    """Write the (K, N, C) text embeddings of class names x the config's prompt templates."""
    import numpy as np

    from otseg.build import load_otseg

    names = class_list(classes, classes_file)
    out_path = Path(out)
    if out_path.suffix not in (".npy", ".safetensors"):
        raise click.BadParameter("use a .npy or .safetensors file name.", param_hint="--out")
    with reported_errors(debug):
        model, _ = load_otseg(model_config, clip_weights=clip_weights, allow_random_clip=allow_random_clip)
        emb = model.class_embeddings(names)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        if out_path.suffix == ".npy":
            np.save(out_path, emb.numpy())
        else:
            from safetensors.torch import save_file

            save_file({"embeddings": emb.contiguous()}, str(out_path), metadata={"classes": json.dumps(names)})
    console.print(f"wrote {tuple(emb.shape)} embeddings of {len(names)} classes to {out_path}")


@click.command()
@click.argument("source", default="otseg-vit-b16")
@click.option("--model-config", default="otseg-vit-b16", show_default=True, help="Architecture of a paper .pth.")
@click.option("--clip-weights", default=None, help="CLIP weights for model files that hold only the trained weights.")
@click.option("--image-size", type=click.IntRange(16), default=None, help="Input side [default: the model's].")
@click.option("--classes", "num_classes", type=click.IntRange(1), default=20, show_default=True, help="Classes K.")
@click.option("--prompts", "num_prompts", type=click.IntRange(1), default=None, help="Prompts N [default: model's].")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write the numbers as JSON.")
@debug_option
def stats(source, model_config, clip_weights, image_size, num_classes, num_prompts, json_out, debug) -> None:
    """Parameters and FLOPs of one forward of SOURCE (a preset name with random weights, or a model file).

    FLOPs in two conventions: all operations (2 per multiply-add, attention included) and the paper's (mmcv's
    counter: multiply-accumulates of nn.Linear and nn.Conv2d modules only), beside the paper's figures.
    """
    from otseg.build import load_otseg
    from otseg.engine.stats import PAPER_FIGURES, model_stats

    with reported_errors(debug):
        is_file = Path(source).is_file()
        model, _ = load_otseg(
            source, clip_weights=clip_weights, allow_random_clip=not is_file, paper_config=model_config
        )
        numbers = model_stats(model, image_size, num_classes, num_prompts)
    paper = PAPER_FIGURES.get(model.config.name, {})
    setting = f"{numbers.image_size}x{numbers.image_size}, K={numbers.num_classes}, N={numbers.num_prompts}"
    paper_flops = paper.get("gflops") if (numbers.image_size, numbers.num_classes) == (512, 20) else None
    rows = [
        ["parameters (M)", numbers.total_params / 1e6, None],
        ["trainable (M)", numbers.trainable_params / 1e6, None],
        ["trainable, paper's count (M) [1]", numbers.paper_trainable_params / 1e6, paper.get("trainable_params_m")],
        ["GFLOPs, all operations", numbers.gflops, None],
        ["  image encoder", numbers.image_encoder_gflops, None],
        ["  head", numbers.head_gflops, None],
        ["GFLOPs, paper's convention [2]", numbers.paper_gflops, paper_flops],
    ]
    print_table(f"{source}: one forward at {setting}", ["", "ours", "paper"], rows)
    console.print(
        "[1] + each decoder layer's self-attention, which the public model holds but never runs\n"
        "[2] mmcv's counter: multiply-adds of nn.Linear and nn.Conv2d modules only; all operations: 2 per "
        "multiply-add, attention included"
    )
    if json_out:
        console.print(f"wrote {write_json(json_out, numbers.as_dict() | {'paper': paper})}")
