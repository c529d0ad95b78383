"""``otseg serve``: segment any image with any class names in a web page (needs the ``app`` extra, Gradio)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from cli.common import console, debug_option, reported_errors
from cli.inference_cmds import inference_settings, load_for_inference, model_options, window_options

DEMO_MODEL = Path("runs") / "demo" / "otseg" / "model.safetensors"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_SIDE_HELP = "Longer images are resized to this side before segmentation."
EXAMPLES_HELP = (
    "A folder of your own example images (or its images/ subfolder), offered beside the synthetic world's. Each "
    "comes with the names of classes.txt in the folder (one per line), the ADE20K classes of "
    "annotations/<stem>.png (ADE20K's layout), or the model's classes."
)


def _default_model() -> str:
    if not DEMO_MODEL.is_file():
        raise click.UsageError(
            f"no --model given and no demo model at {DEMO_MODEL}: run `make demo` first (or `otseg demo`), or "
            "give --model FILE (or --paper-checkpoint FILE)."
        )
    return str(DEMO_MODEL)


@click.command()
@model_options
@window_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; 0.0.0.0 opens it to others.")
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True, help="Port of the page.")
@click.option("--max-classes", type=click.IntRange(1, 254), default=64, show_default=True, help="Class names/request.")
@click.option("--max-upload-mb", type=click.FloatRange(0.01), default=20.0, show_default=True, help="Upload limit.")
@click.option(
    "--max-megapixels", type=click.FloatRange(0.01), default=40.0, show_default=True, help="Largest image accepted."
)
@click.option("--max-side", type=click.IntRange(16), default=1024, show_default=True, help=MAX_SIDE_HELP)
@click.option("--max-queue", type=click.IntRange(1), default=16, show_default=True, help="Requests that may wait.")
@click.option("--examples", "examples_dir", type=click.Path(exists=True, file_okay=False), help=EXAMPLES_HELP)
@click.option(
    "--threads",
    type=click.IntRange(1),
    default=None,
    help="CPU threads of the model [default: torch's, one per core].",
)
@debug_option
def serve(
    model_file, paper_checkpoint, model_config, clip_weights, inference_flags, device, host, port, max_classes,
    max_upload_mb, max_megapixels, max_side, max_queue, examples_dir, threads, debug,
) -> None:  # fmt: skip
    """Serve a web page that segments an uploaded image with any class names and shows the transport plan.

    Without --model it serves the model `make demo` trains. The page runs one request at a time from a queue;
    uploads, pixels and class lists are limited, and bad requests get a message in the page. Its examples are
    images of the model's synthetic world, and those of --examples DIR. The same segmentation is an API endpoint,
    "/segment", for gradio_client (see the page's "Use via API").
    """
    from otseg.serve import SegmentationSession, ServeLimits, folder_examples, synthetic_examples

    if not model_file and not paper_checkpoint:
        model_file = _default_model()
    limits = ServeLimits(
        max_upload_mb=max_upload_mb,
        max_pixels=int(max_megapixels * 1e6),
        max_side=max_side,
        max_classes=max_classes,
    )
    try:
        from otseg.serve.app import build_app, import_gradio, launch

        import_gradio()
    except ImportError as err:
        raise click.ClickException(str(err)) from None
    if threads:
        import torch

        torch.set_num_threads(threads)
    with reported_errors(debug):
        model, meta = load_for_inference(model_file, paper_checkpoint, model_config, clip_weights)
        settings = inference_settings(meta, None, **inference_flags)
        session = SegmentationSession(model, meta, settings, limits, device=device)
        with tempfile.TemporaryDirectory(prefix="otseg-serve-") as folder:
            examples = synthetic_examples(meta, Path(folder))
            if examples_dir:
                examples += folder_examples(examples_dir, ", ".join(session.model_classes))
            app = build_app(session, examples, meta)
            if host not in LOCAL_HOSTS:
                console.print(f"[yellow]binding to {host}: anyone who can reach this machine can use the page.")
            console.print(f"serving on http://{host}:{port} (Ctrl-C stops)")
            launch(app, host=host, port=port, max_upload_mb=max_upload_mb, max_queue=max_queue)
