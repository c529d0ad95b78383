"""The page of ``otseg serve``: Gradio Blocks around a :class:`~otseg.serve.session.SegmentationSession`.

The page's segmentation is also a named API endpoint, ``/segment`` (image file, class names and calibration in;
the label map, the overlay and the area table out), for ``gradio_client``; it shares the page's limits and its
queue (one concurrency group, ``model``, for the page's requests and the API's).

Gradio is an optional extra (``pip install 'otseg[app]'``), imported only here, by :func:`import_gradio`,
which first turns off everything in it that would reach the network (analytics, version checks, Hugging Face
telemetry); the page's fonts and scripts come from the Gradio package itself.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image

from otseg.serve.examples import Example
from otseg.serve.session import RequestError, Segmentation, SegmentationSession, read_upload
from otseg.serve.views import area_rows, class_view, enlarge, largest_class, legend_html, status_line

__all__ = ["GRADIO_MISSING", "build_app", "import_gradio", "launch"]

GRADIO_MISSING = (
    "otseg serve needs Gradio, an optional extra: pip install 'otseg[app]' (in a checkout: "
    "pip install -e ./otkit -e '.[app]', or make serve)."
)

OFFLINE_ENVIRONMENT = {
    "GRADIO_ANALYTICS_ENABLED": "False",  # no analytics and no version check against gradio.app
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_OFFLINE": "1",
    "GRADIO_SSR_MODE": "False",  # no Node server
}

CSS = """
.otseg-legend { list-style: none; padding: 0; margin: 0; display: flex; flex-wrap: wrap; gap: 4px 14px; }
.otseg-item { display: flex; align-items: center; gap: 6px; }
.otseg-swatch { width: 14px; height: 14px; border-radius: 3px; display: inline-block; border: 1px solid #0003; }
.otseg-share { color: var(--body-text-color-subdued); font-size: 0.9em; }
#otseg-status.otseg-error { color: var(--error-text-color); }
#otseg-image img { width: 100%; height: 100%; object-fit: contain; }
"""

ABOUT = (
    "OTSeg transports every pixel onto the text prompts of each class (one optimal-transport problem per class, "
    "uniform mass over pixels and over prompts). Below the result, pick a class to see its score map and which "
    "part of it each prompt takes."
)

MAP_COLUMNS = 7

MODEL_QUEUE = "model"
"""Concurrency group of every request that runs the model (the page's and the API's): they wait in one queue."""

CACHE_SECONDS = 3600
"""Uploads and results older than this are deleted from the server's cache (checked as often), so a long-running
server's disk stays bounded."""

RESULT_SECONDS = 60
"""A request's result images are removed from the page's own folder after this long (Gradio has its copy)."""

SERVER_FAILED = "the server failed on this request (its log has the details); try another image."

log = logging.getLogger(__name__)


def import_gradio() -> ModuleType:
    """Import Gradio with its network features off.

    Raises:
        ImportError: Gradio is not installed; the message says how to install it.
    """
    os.environ.update(OFFLINE_ENVIRONMENT)
    try:
        import gradio
    except ImportError as err:
        raise ImportError(GRADIO_MISSING) from err
    return gradio


def _model_line(session: SegmentationSession, meta: dict[str, Any]) -> str:
    """What the page says about the model: its name, data, step and split; never where its file is."""
    config = session.model.config
    parts = [f"**Model:** {config.name if config is not None else 'OTSeg'}"]
    if meta.get("dataset"):
        parts.append(f"trained on {meta['dataset']}" + (f" for {meta['step']} steps" if meta.get("step") else ""))
    if session.model_classes:
        parts.append(f"{len(session.model_classes)} classes, {len(session.unseen_classes)} held out as unseen")
    if meta.get("paper_checkpoint"):
        parts.append("the paper's released checkpoint")
    return ", ".join(parts) + "."


def _split_line(session: SegmentationSession) -> str:
    if not session.unseen_classes:
        return "Any class names work; the model's own classes are marked (seen) in the results."
    return (
        f"**Seen in training:** {', '.join(session.seen_classes)}. **Unseen** (named only now): "
        f"{', '.join(session.unseen_classes)}. Other names work too."
    )


def _error(gr: ModuleType, message: str) -> tuple[Any, ...]:
    """Outputs of a refused request: the message, and every result cleared."""
    status = gr.update(value=f"**Could not segment:** {message}", elem_classes=["otseg-error"])
    return status, None, "", [], gr.update(choices=[], value=None), [], [], "", None


class ResultFiles:
    """A folder of the page's own for the result images of requests, each written to a file of its own.

    Gradio copies a returned file into its cache under a name of its content, written whole and never again;
    a returned array it writes to that name at every request, so two requests with the same result (the same
    image and class names, as in a load test) rewrite a file that a client may be downloading.
    """

    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="otseg-results-")
        self.path = Path(self._folder.name)

    def write(self, image: np.ndarray, name: str) -> str:
        """Save ``image`` as ``<unique>-<name>.png`` and remove results older than :data:`RESULT_SECONDS`."""
        now = time.time()
        for old in self.path.glob("*.png"):
            try:
                if now - old.stat().st_mtime > RESULT_SECONDS:
                    old.unlink()
            except FileNotFoundError:  # removed by a request running beside this one
                continue
        path = self.path / f"{uuid.uuid4().hex}-{name}.png"
        Image.fromarray(image).save(path)
        return str(path)


def build_app(session: SegmentationSession, examples: Sequence[Example], meta: dict[str, Any]) -> Any:
    """The page: image and class names in, overlay, legend, area table and per-prompt transport maps out.

    Args:
        session: The shared model.
        examples: Example images with their class names.
        meta: The model file's record (for the description of the model).

    Returns:
        A ``gradio.Blocks``, not yet queued or launched (see :func:`launch`).
    """
    gr = import_gradio()
    limits = session.limits
    results = ResultFiles()
    default_classes = ", ".join(session.model_classes)

    def upload(path: str | None) -> tuple[Any, Any]:
        if path is None:
            return gr.update(), gr.update()
        try:
            return read_upload(path, limits), gr.update(value="Image ready: type class names and press Segment.")
        except RequestError as err:
            return None, gr.update(value=f"**Could not use the upload:** {err}", elem_classes=["otseg-error"])

    def checked_segment(path: str | None, text: str | None, calibrate: bool) -> Segmentation:
        """The request's checks and segmentation, as the page and the API run them."""
        if path is None:
            raise RequestError("no image: upload one or pick an example.")
        names = limits.parse_classes(text)
        return session.segment(read_upload(path, limits), names, calibrate=calibrate)

    def show_segmentation(path: str | None, text: str, calibrate: bool) -> tuple[Any, ...]:
        try:
            seg = checked_segment(path, text, calibrate)
        except ValueError as err:  # RequestError, and class lists the text encoder cannot take
            return _error(gr, str(err))
        except Exception:
            log.exception("request failed")
            return _error(gr, SERVER_FAILED)
        names = seg.class_names
        status = status_line(seg)
        unknown = session.unknown_words(names)
        if unknown:
            status += f" Words this model's vocabulary does not know: {', '.join(unknown)}."
        chosen = largest_class(seg)
        return (
            gr.update(value=status, elem_classes=[]),
            results.write(enlarge(seg.overlay()), "overlay"),
            legend_html(seg),
            area_rows(seg),
            gr.update(choices=list(seg.class_names), value=chosen),
            *class_view(seg, chosen),
            seg,
        )

    def choose(name: str | None, seg: Segmentation | None) -> tuple[Any, ...]:
        return tuple(class_view(seg, name)) if seg is not None else ([], [], "")

    def segment_api(image: str | None, classes: str, calibrate: bool) -> tuple[Any, ...]:
        """Segment an image with class names (comma or new-line separated).

        Returns the label map (a PNG whose pixel values index the class names), the overlay, and the area table
        (class, in training, area %); a refused request raises an error with the page's message.
        """
        try:
            seg = checked_segment(image, classes, calibrate)
        except ValueError as err:
            raise gr.Error(str(err), print_exception=False) from None
        except Exception:
            log.exception("request failed")
            raise gr.Error(SERVER_FAILED, print_exception=False) from None
        labels = results.write(seg.labels.astype(np.uint8), "labels")
        return labels, results.write(seg.overlay(), "overlay"), area_rows(seg)

    with gr.Blocks(
        title="OTSeg: segment any image with any class names",
        analytics_enabled=False,
        delete_cache=(CACHE_SECONDS, CACHE_SECONDS),
    ) as app:
        gr.Markdown(f"# OTSeg: segment any image with any class names\n{_model_line(session, meta)} {ABOUT}")
        state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                file = gr.File(label="Upload an image", file_types=["image"], type="filepath", elem_id="otseg-upload")
                image = gr.Image(
                    label="Image", type="filepath", format="png", interactive=False, height=300, elem_id="otseg-image"
                )
                classes = gr.Textbox(
                    label="Class names (separated by commas or new lines)",
                    value=default_classes,
                    lines=3,
                    max_length=limits.max_classes * 90,
                    elem_id="otseg-classes",
                )
                gr.Markdown(_split_line(session))
                calibrate = gr.Checkbox(
                    label="Calibrate: lower the classes seen in training by the model's seen bias",
                    value=True,
                    visible=bool(session.unseen_classes),
                )
                run = gr.Button("Segment", variant="primary", elem_id="otseg-run")
                if examples:
                    gr.Examples(
                        [[str(e.path), e.classes] for e in examples],
                        inputs=[image, classes],
                        example_labels=[e.label for e in examples],
                        cache_examples=False,
                    )
            with gr.Column(scale=1):
                status = gr.Markdown("Upload an image or pick an example.", elem_id="otseg-status")
                overlay = gr.Image(label="Segmentation", format="png", interactive=False, elem_id="otseg-overlay")
                legend = gr.HTML(elem_id="otseg-legend")
                table = gr.Dataframe(
                    headers=["class", "in training", "area %"],
                    datatype=["str", "str", "number"],
                    interactive=False,
                    max_height=320,
                    elem_id="otseg-areas",
                )
        gr.Markdown("## How the prompts of a class share it (the MPS transport plan)")
        with gr.Row():
            chosen = gr.Dropdown(label="Class to inspect", choices=[], scale=1, elem_id="otseg-class")
            note = gr.Markdown(elem_id="otseg-note")
        rows = math.ceil((len(session.prompts) + 1) / MAP_COLUMNS)
        maps = gr.Gallery(
            label="score map, then the share of each patch that each prompt takes",
            columns=MAP_COLUMNS,
            height=40 + 140 * rows,
            elem_id="otseg-maps",
        )
        prompts = gr.Dataframe(
            headers=["prompt", "text", "share of the class %"],
            datatype=["str", "str", "number"],
            interactive=False,
            elem_id="otseg-prompts",
        )
        with gr.Column(visible=False):  # the API's own inputs and outputs, not shown on the page
            api_inputs = [
                gr.File(label="image", file_types=["image"], type="filepath"),
                gr.Textbox(label="classes", max_length=limits.max_classes * 90),
                gr.Checkbox(label="calibrate", value=True),
            ]
            api_outputs = [
                gr.Image(label="labels", format="png"),
                gr.Image(label="overlay", format="png"),
                gr.Dataframe(label="areas", headers=["class", "in training", "area %"]),
            ]
            api_run = gr.Button()
        # Only the model's requests queue one at a time; reading an upload or showing another class does not wait.
        file.upload(upload, inputs=file, outputs=[image, status], api_visibility="private", concurrency_limit=None)
        run.click(
            show_segmentation,
            inputs=[image, classes, calibrate],
            outputs=[status, overlay, legend, table, chosen, maps, prompts, note, state],
            api_visibility="private",
            concurrency_id=MODEL_QUEUE,
        )
        api_run.click(segment_api, api_inputs, api_outputs, api_name="segment", concurrency_id=MODEL_QUEUE)
        chosen.input(
            choose,
            inputs=[chosen, state],
            outputs=[maps, prompts, note],
            api_visibility="private",
            concurrency_limit=None,
        )
    return app


def launch(
    app: Any, *, host: str, port: int, max_upload_mb: float, max_queue: int, concurrency: int = 1, block: bool = True
) -> None:
    """Serve the page: one request queue, ``concurrency`` requests at a time, uploads limited in size.

    Args:
        app: From :func:`build_app`.
        host: Address to bind (``127.0.0.1``: this machine only).
        port: Port.
        max_upload_mb: Largest upload, in MiB, refused by the server before it is stored.
        max_queue: Most requests waiting; more are refused with a message.
        concurrency: Requests run at once.
        block: Serve until interrupted (``False``: return once the server runs, for tests).
    """
    gr = import_gradio()
    app.queue(default_concurrency_limit=concurrency, max_size=max_queue)
    app.launch(
        server_name=host,
        server_port=port,
        share=False,
        max_file_size=int(max_upload_mb * 2**20),
        footer_links=["api"],  # "Use via API": the /segment endpoint and a gradio_client example
        ssr_mode=False,
        mcp_server=False,
        pwa=False,
        enable_monitoring=False,
        show_error=False,
        prevent_thread_lock=not block,
        theme=gr.themes.Default(),
        css=CSS,
    )
