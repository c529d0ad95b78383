"""``otseg``: train, evaluate, predict, embed class names, model statistics, run the demo, serve a web page.

The group lives here with ``train``; the inference commands are in :mod:`cli.inference_cmds`, the demo in
:mod:`cli.demo_cmds`, the web page in :mod:`cli.serve_cmds`. Options that have a setting default to ``None`` and
defer to the settings objects (:class:`~otseg.engine.config.TrainConfig`, :class:`~otseg.predictor.InferenceSettings`),
the one source of defaults.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import click

from cli.common import console, debug_option, deep_merge, parse_overrides, print_table, reported_errors
from cli.demo_cmds import demo
from cli.inference_cmds import embed_classes, evaluate_command, predict, stats
from cli.serve_cmds import serve


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})
def main() -> None:
    """OTSeg: zero-shot semantic segmentation with multi-prompt Sinkhorn attention."""


def _print_keys() -> None:
    from otseg.config import ModelConfig, describe_settings
    from otseg.engine.config import TrainConfig

    for cls, title in (
        (TrainConfig, "training keys (--set KEY=VALUE; objects also as KEY.FIELD=VALUE)"),
        (ModelConfig, "model keys (--set model_overrides.KEY=VALUE)"),
    ):
        rows = [[key, kind, _shown(default), meaning] for key, kind, default, meaning in describe_settings(cls)]
        print_table(title, ["key", "type", "default", "meaning"], rows, text=True)


def _shown(value: Any) -> str:
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    return json.dumps(value, default=str)


@main.command()
@click.option("--preset", default=None, help="A training preset, e.g. voc-inductive (see --list-presets).")
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), default=None, help="A JSON file of training keys."
)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Change a training key (repeatable).")
@click.option("--out-dir", default=None, help="Output folder (checkpoints, logs, curves) [default: the preset's].")
@click.option("--resume", is_flag=True, help="Continue the run in --out-dir from its checkpoint, bit for bit.")
@click.option("--overwrite", is_flag=True, help="Delete an earlier run in --out-dir and start a new one.")
@click.option("--list-presets", is_flag=True, help="List the training presets and exit.")
@click.option("--list-keys", is_flag=True, help="List every --set key with its type, default and meaning, and exit.")
@debug_option
@click.pass_context
def train(ctx, preset, config_path, sets, out_dir, resume, overwrite, list_presets, list_keys, debug) -> None:
    """Train OTSeg (inductive, transductive or fully supervised); single process or under torchrun.

    Exit status: 0 when done, 130 when stopped by Ctrl-C (a checkpoint that --resume continues is written).
    """
    from otseg.engine import TrainConfig
    from otseg.engine import train as run_training
    from otseg.presets import list_presets as presets
    from otseg.presets import load_preset, read_json_file

    if list_presets:
        console.print("\n".join(presets("train")))
        return
    if list_keys:
        _print_keys()
        return
    if preset and config_path:
        raise click.UsageError("give either --preset or --config, not both.")
    if not preset and not config_path:
        raise click.UsageError(
            "give --preset NAME or --config FILE. Presets: " + ", ".join(presets("train")) + " (--list-keys shows "
            "the keys a --config file or --set may hold)."
        )
    with reported_errors(debug):
        values = load_preset("train", preset) if preset else read_json_file(config_path, "training config")
        values = deep_merge(values, parse_overrides(sets))
        if out_dir:
            values["out_dir"] = out_dir
        cfg = TrainConfig.from_dict(values)
        summary = run_training(cfg, resume=resume, overwrite=overwrite)
    if summary.get("interrupted"):
        ctx.exit(130)
    metrics = summary["metrics"]
    line = f"done: step {summary['step']}, mIoU {metrics['miou']:.2f}"
    if metrics.get("miou_seen") is not None:
        line += f", mIoU(S) {metrics['miou_seen']:.2f}"
    if metrics.get("hiou") is not None:
        line += f", mIoU(U) {metrics['miou_unseen']:.2f}, hIoU {metrics['hiou']:.2f}"
    console.print(line)
    if "model" in summary:
        console.print(f"model: {summary['model']}\ncurves: {summary['curves']}")


main.add_command(evaluate_command)
main.add_command(predict)
main.add_command(embed_classes)
main.add_command(stats)
main.add_command(demo)
main.add_command(serve)


if __name__ == "__main__":
    main()
