"""The model side of ``otseg serve`` without a browser: limits, uploads, segmentation, transport maps, the command."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cli.otseg_cli import main as otseg_main
from otseg.build import load_otseg
from otseg.serve import (
    RequestError,
    SegmentationSession,
    ServeLimits,
    area_rows,
    class_view,
    fit_image,
    folder_examples,
    legend_html,
    read_upload,
    synthetic_examples,
)
from otseg.serve.views import largest_class

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def loaded(tiny_model_file):
    return load_otseg(tiny_model_file)


@pytest.fixture(scope="module")
def session(loaded):
    from otseg.predictor import InferenceSettings

    settings = InferenceSettings.from_dict(loaded.meta["inference"])
    return SegmentationSession(loaded.model, loaded.meta, settings, ServeLimits(max_classes=5))


@pytest.fixture(scope="module")
def photo():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (72, 96, 3), dtype=np.uint8)


def _png(path: Path, size: tuple[int, int]) -> Path:
    Image.new("RGB", size, (200, 30, 30)).save(path)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no class names given"),
        ("  \n ", "no class names given"),
        (" , ,", "empty"),
        ("cat,,dog", "empty or not strings"),
        ("cat, Cat", "more than once"),
        ("a, b, c, d, e, f", "at most 5 per request"),
        ("x" * 81, "longer than 80 characters"),
    ],
)
def test_bad_class_lists_are_refused_with_a_message(text, message):
    with pytest.raises(RequestError, match=message):
        ServeLimits(max_classes=5).parse_classes(text)


def test_class_lists_take_commas_and_new_lines():
    assert ServeLimits().parse_classes("sky, tree\nred car,\n") == ("sky", "tree", "red car")


def test_bad_limits_are_refused():
    with pytest.raises(ValueError, match="serve limits must be positive"):
        ServeLimits(max_classes=0)


def test_uploads_are_read_resized_and_checked(tmp_path):
    image = read_upload(_png(tmp_path / "wide.png", (300, 100)), ServeLimits(max_side=150))
    assert image.shape == (50, 150, 3) and image.dtype == np.uint8
    assert read_upload(_png(tmp_path / "small.png", (40, 30)), ServeLimits()).shape == (30, 40, 3)
    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    with pytest.raises(RequestError, match=r"notes\.png is not an image") as err:
        read_upload(notes, ServeLimits())
    assert str(tmp_path) not in str(err.value)  # the file's name, never where the server keeps it
    with pytest.raises(RequestError, match="megapixels"):
        read_upload(_png(tmp_path / "big.png", (400, 300)), ServeLimits(max_pixels=100_000))
    with pytest.raises(RequestError, match="MiB"):
        read_upload(_png(tmp_path / "heavy.png", (400, 300)), ServeLimits(max_upload_mb=0.0001))
    with pytest.raises(RequestError, match="at least 16x16"):
        read_upload(_png(tmp_path / "tiny.png", (8, 40)), ServeLimits())
    truncated = tmp_path / "cut.png"
    data = (tmp_path / "wide.png").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(RequestError, match=r"cut\.png is damaged"):
        read_upload(truncated, ServeLimits())


def test_fit_image_keeps_small_images_and_the_aspect_ratio():
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    assert fit_image(image, 100) is image
    assert fit_image(image, 30).shape == (20, 30, 3)


def test_segmentation_and_its_transport(session, photo):
    names = ("red square", "red circle", "my own class")
    seg = session.segment(photo, names)
    assert seg.labels.shape == photo.shape[:2] and seg.labels.max() < len(names)
    assert seg.kinds == ("seen", "unseen", "")
    assert session.predictor.seen is not None and session.predictor.seen.tolist() == [True, False, False]
    k, h, w, n = seg.plan.shape
    assert (k, n) == (3, len(seg.prompts)) and seg.score.shape == (k, h, w)
    np.testing.assert_allclose(seg.plan.sum(-1), 1.0, rtol=1e-4)  # each patch's mass, shared among prompts
    np.testing.assert_allclose(seg.plan.mean((1, 2)), 1 / n, rtol=1e-4)  # each prompt takes 1/N of the image
    assert 0 <= seg.score.min() and seg.score.max() <= 1
    np.testing.assert_allclose(seg.area_shares().sum(), 1.0)
    assert seg.overlay().shape == photo.shape and (seg.overlay() != photo).any()
    assert seg.seconds > 0


def test_calibration_can_be_switched_off(session, photo):
    session.segment(photo, ("red square", "red circle"), calibrate=False)
    assert session.predictor.seen is None


def test_prompt_shares_of_a_class_region(session, photo):
    seg = session.segment(photo, ("red striped", "blue dotted"))
    for k in range(2):
        shares, found = seg.prompt_shares(k)
        np.testing.assert_allclose(shares.sum(), 1.0, rtol=1e-5)
        region = seg.grid_labels() == k
        assert found == bool(region.any())
        if found:
            expected = seg.plan[k][region].sum(0)
            np.testing.assert_allclose(shares, expected / expected.sum(), rtol=1e-5)


def test_views_list_every_class_and_escape_names(session, photo):
    names = ("<b>bold</b>", "red square")
    seg = session.segment(photo, names)
    html = legend_html(seg)
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "<b>" not in html and "red square" in html and "(seen)" in html
    rows = area_rows(seg)
    assert {r[0] for r in rows} == set(names) and rows[0][0] == largest_class(seg)
    assert [r[2] for r in rows] == sorted((r[2] for r in rows), reverse=True)
    np.testing.assert_allclose(sum(r[2] for r in rows), 100, atol=0.05)
    view = class_view(seg, "red square")
    assert len(view.maps) == 1 + len(seg.prompts) and view.maps[0][1] == "score map"
    for image, _ in view.maps:
        assert image.ndim == 3 and image.shape[-1] == 3 and image.dtype == np.uint8
    shares, _ = seg.prompt_shares(1)
    assert [row[1] for row in view.prompts] == [p.format("red square") for p in seg.prompts]
    np.testing.assert_allclose([row[2] for row in view.prompts], np.round(100 * shares, 1))
    assert "red square" in view.note
    assert class_view(seg, "not a class") == ([], [], "")


def test_unknown_words_of_a_word_level_model():
    from otseg.build import build_otseg
    from otseg.data.synthetic import SyntheticWorld
    from otseg.demo.run import demo_model_config

    world = SyntheticWorld(patterns=("solid", "striped", "dotted", "checkered"))
    model = build_otseg(demo_model_config(world), allow_random_clip=True)
    session = SegmentationSession(model, {})
    assert session.unknown_words(["red striped", "zebra crossing", "Blue-dotted"]) == ["zebra", "crossing"]


def test_the_clip_tokenizer_knows_every_word(session):
    assert session.unknown_words(["zebra crossing"]) == []


def test_synthetic_examples_are_written_from_the_models_world(loaded, tmp_path):
    examples = synthetic_examples(loaded.meta, tmp_path, count=2)
    assert [e.path.name for e in examples] == ["synthetic_1.png", "synthetic_2.png"]
    assert Image.open(examples[0].path).size == (64, 64)
    assert examples[0].classes.split(", ") == loaded.meta["class_names"]


def test_ade20k_examples_offer_the_classes_of_their_annotations(fixtures_dir):
    examples = folder_examples(fixtures_dir / "ade20k_sample", "sky, tree")
    assert len(examples) == 3 and all(e.path.is_file() for e in examples)
    assert all(0 < len(e.classes.split(", ")) <= 6 and e.classes != "sky, tree" for e in examples)
    assert [e.label for e in examples] == [e.path.stem for e in examples]


def test_a_folder_of_own_examples_offers_its_class_list_or_the_models(tmp_path):
    _png(tmp_path / "b.png", (32, 32))
    _png(tmp_path / "a.jpg", (32, 32))
    (tmp_path / "notes.md").write_text("not an image")
    examples = folder_examples(tmp_path, "sky, tree")
    assert [(e.path.name, e.classes, e.label) for e in examples] == [
        ("a.jpg", "sky, tree", "a"),
        ("b.png", "sky, tree", "b"),
    ]
    (tmp_path / "classes.txt").write_text("red car\nblue door\n")
    assert {e.classes for e in folder_examples(tmp_path, "sky")} == {"red car, blue door"}
    with pytest.raises(FileNotFoundError, match="examples folder"):
        folder_examples(tmp_path / "missing", "sky")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        folder_examples(tmp_path / "empty", "sky")


def test_installed_code_names_no_folder_beside_the_repository():
    for package in ("otseg", "cli"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            assert "fixtures" not in text and '"shared"' not in text, path


def test_serve_help_offers_examples_of_ones_own():
    result = CliRunner().invoke(otseg_main, ["serve", "--help"])
    assert result.exit_code == 0 and "--examples DIRECTORY" in result.output and "/segment" in result.output


def test_serve_without_a_model_says_to_run_make_demo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(otseg_main, ["serve"])
    assert result.exit_code != 0 and "make demo" in result.output and "Traceback" not in result.output


def test_serve_without_gradio_says_how_to_install_it(tiny_model_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio now raises ImportError
    result = CliRunner().invoke(otseg_main, ["serve", "--model", str(tiny_model_file)])
    assert result.exit_code != 0 and "pip install" in result.output and "[app]" in result.output


def _module_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:  # statements at module level only: imports inside functions are lazy
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_gradio_is_imported_lazily_so_otseg_works_without_it():
    for package in ("otkit", "otseg", "cli"):
        for path in (ROOT / package).rglob("*.py"):
            imports = _module_level_imports(path)
            assert not any(name.split(".")[0] == "gradio" for name in imports), path
            assert "otseg.serve.app" not in imports, path


def test_the_page_builds(session):
    pytest.importorskip("gradio", reason="the app extra (Gradio) is not installed")
    from otseg.serve.app import MODEL_QUEUE, build_app

    app = build_app(session, [], {"dataset": "synthetic", "step": 3})
    assert app.title.startswith("OTSeg")
    public = [fn for fn in app.fns.values() if fn.api_visibility == "public"]
    assert [fn.api_name for fn in public] == ["segment"]
    model_runs = {fn.name: fn.concurrency_id for fn in app.fns.values() if fn.concurrency_id == MODEL_QUEUE}
    assert set(model_runs) == {"segment_api", "show_segmentation"}  # the page's requests and the API's: one queue
