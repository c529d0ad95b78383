"""The API of ``otseg serve`` through ``gradio_client``, against a served tiny model.

The named endpoint ``/segment`` answers as the model does in-process, refuses bad requests with the page's
messages, and under a burst of concurrent requests answers each or refuses it with a message (its queue holds two),
keeps its memory bounded, and still answers afterwards.
"""

from __future__ import annotations

from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from otseg.build import load_otseg
from otseg.predictor import InferenceSettings
from otseg.serve import SegmentationSession, area_rows
from tests.huge_image import huge_png
from tests.serving import serving

pytest.importorskip("gradio", reason="the app extra (Gradio) is not installed: pip install -e '.[app]'")
gradio_client = pytest.importorskip("gradio_client", reason="gradio_client comes with Gradio")

CLASSES = "red square, blue circle, a thing of my own"
BURST = 10
RSS_GROWTH_MIB = 150  # over three bursts after a warm-up; Python, torch and Gradio keep some of what they allocate
ANSWER_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def served(tiny_model_file, tmp_path_factory):
    log = tmp_path_factory.mktemp("api") / "serve.log"
    with serving(tiny_model_file, log, "--max-queue", "2", "--threads", "1") as running:
        yield running


@pytest.fixture(scope="module")
def client(served, tmp_path_factory):
    url, _ = served
    return gradio_client.Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


@pytest.fixture(scope="module")
def photo_file(tmp_path_factory) -> Path:
    photo = np.random.default_rng(0).integers(0, 256, (72, 96, 3), dtype=np.uint8)
    photo[16:56, 24:72] = (30, 70, 225)
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    Image.fromarray(photo).save(path)
    return path


def _segment(client, image: Path, classes: str = CLASSES, calibrate: bool = True):
    return client.submit(gradio_client.handle_file(str(image)), classes, calibrate, api_name="/segment")


def _rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status")
    if not status.is_file():
        pytest.skip("no /proc: the server's memory cannot be read here")
    line = next(line for line in status.read_text().splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_the_api_lists_one_named_endpoint(client):
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert list(endpoints) == ["/segment"]  # the page's own events stay private
    segment = endpoints["/segment"]
    assert [p["parameter_name"] for p in segment["parameters"]] == ["image", "classes", "calibrate"]
    assert [r["label"] for r in segment["returns"]] == ["labels", "overlay", "areas"]


def test_the_api_answers_as_the_model_does(client, photo_file, tiny_model_file):
    labels_file, overlay_file, areas = _segment(client, photo_file).result(timeout=ANSWER_TIMEOUT_S)
    loaded = load_otseg(tiny_model_file)
    settings = InferenceSettings.from_dict(loaded.meta["inference"])
    session = SegmentationSession(loaded.model, loaded.meta, settings)
    photo = np.array(Image.open(photo_file))
    seg = session.segment(photo, tuple(CLASSES.split(", ")))
    labels = np.asarray(Image.open(labels_file))
    assert labels.dtype == np.uint8 and labels.shape == photo.shape[:2]
    np.testing.assert_array_equal(labels, seg.labels)
    assert np.asarray(Image.open(overlay_file).convert("RGB")).shape == photo.shape
    assert areas["headers"] == ["class", "in training", "area %"] and areas["data"] == area_rows(seg)


def test_the_api_refuses_bad_requests_with_the_pages_messages(client, photo_file, tmp_path):
    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    refused = [
        (huge_png(tmp_path / "huge.png"), CLASSES, "huge.png has 900 megapixels; this server takes at most 40"),
        (notes, CLASSES, "notes.png is not an image this server can read"),
        (photo_file, " ", "no class names given"),
        (photo_file, "cat, Cat", "more than once"),
    ]
    for image, classes, message in refused:
        with pytest.raises(gradio_client.exceptions.AppError, match=message):
            _segment(client, image, classes).result(timeout=ANSWER_TIMEOUT_S)


def _outcome(job) -> str:
    """``"answered"``, or the message the request was refused with."""
    try:
        labels_file, _, areas = job.result(timeout=ANSWER_TIMEOUT_S)
    except FutureTimeout:
        pytest.fail("a request got neither an answer nor a refusal")
    except Exception as err:  # a refusal: it must say why
        assert str(err).strip(), f"refused without a message: {type(err).__name__}"
        return str(err)
    assert Path(labels_file).is_file() and len(areas["data"]) == 3
    return "answered"


def test_concurrent_requests_are_answered_or_refused_and_memory_stays_bounded(served, client, photo_file):
    _, server = served
    _segment(client, photo_file).result(timeout=ANSWER_TIMEOUT_S)  # warm-up: the first request allocates most
    before = _rss_mib(server.pid)
    outcomes = []
    for _ in range(3):
        jobs = [_segment(client, photo_file) for _ in range(BURST)]
        outcomes += [_outcome(job) for job in jobs]
    after = _rss_mib(server.pid)
    refusals = {o for o in outcomes if o != "answered"}
    assert "answered" in outcomes and all("Queue is full" in o for o in refusals), refusals
    assert after - before < RSS_GROWTH_MIB, (before, after)
    assert server.poll() is None
    labels_file, _, _ = _segment(client, photo_file).result(timeout=ANSWER_TIMEOUT_S)  # still answering
    assert Image.open(labels_file).size == (96, 72)
