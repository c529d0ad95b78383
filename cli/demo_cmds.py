"""``otseg demo``: the CPU zero-shot demo."""

from __future__ import annotations

from pathlib import Path

import click

from cli.common import console, debug_option, reported_errors

OUT_DIR_HELP = "Where the tiny CLIP, both OTSeg runs, the picture and demo.json go (an earlier demo is replaced)."


@click.command()
@click.option("--out-dir", type=click.Path(file_okay=False), default="runs/demo", show_default=True, help=OUT_DIR_HELP)
@click.option("--quick", is_flag=True, help="A much shorter run (for tests); its numbers mean nothing.")
@click.option(
    "--calibrate",
    is_flag=True,
    help="Instead of the demo, choose its seen bias by calibrated stacking on pseudo-unseen seen classes.",
)
@debug_option
def demo(out_dir, quick, calibrate, debug) -> None:
    """Zero-shot on a CPU in minutes: pre-train a tiny CLIP, train OTSeg on seen classes, segment unseen ones."""
    from otseg.demo import calibrate_seen_bias, run_demo

    with reported_errors(debug):
        if calibrate:
            calibrate_seen_bias(Path(out_dir), quick=quick, console=console)
        else:
            run_demo(Path(out_dir), quick=quick, console=console)
