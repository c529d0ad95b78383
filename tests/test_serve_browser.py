"""``otseg serve`` end to end in a real browser: headless Chromium driven by Playwright.

Skips, with its reason, when Gradio or Playwright is not installed or no Chromium can be found (``.ci/run``
installs Chromium). The page's screenshot is left under pytest's tmp_path as ``serve_page.png``.
"""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.conftest import FIXTURES
from tests.huge_image import huge_png
from tests.serving import serving

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CLASSES = ["red square", "blue circle", "a thing of my own"]
STEP_TIMEOUT_MS = 60_000

pytest.importorskip("gradio", reason="the app extra (Gradio) is not installed: pip install -e '.[app]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed: pip install playwright")


def _browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(f"no Chromium found (looked for {', '.join(BROWSERS)}); install it: apt-get install chromium")


ADE_SAMPLE = FIXTURES / "ade20k_sample"


@pytest.fixture
def served(tiny_model_file, tmp_path):
    examples = ["--examples", str(ADE_SAMPLE)] if ADE_SAMPLE.is_dir() else []  # the fixtures, passed explicitly
    with serving(tiny_model_file, tmp_path / "serve.log", *examples) as (url, _):
        yield url


def _status_contains(page, text: str) -> None:
    page.wait_for_function(
        "text => document.querySelector('#otseg-status').innerText.includes(text)", arg=text, timeout=STEP_TIMEOUT_MS
    )


def test_segment_in_a_real_browser(served, tiny_model_file, tmp_path):
    photo = np.random.default_rng(0).integers(0, 256, (72, 96, 3), dtype=np.uint8)
    photo[16:56, 24:72] = (30, 70, 225)
    image_file = tmp_path / "photo.png"
    Image.fromarray(photo).save(image_file)
    notes = tmp_path / "notes.png"
    notes.write_text("this is text, not an image")
    outside = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_browser(), headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})

        def local_only(route):  # the page must work with no network: anything else is recorded and refused
            if route.request.url.startswith(served):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        page.route("**/*", local_only)
        page.goto(served)
        page.wait_for_selector("#otseg-run", timeout=STEP_TIMEOUT_MS)

        page.locator("#otseg-upload input[type=file]").set_input_files(str(image_file))
        _status_contains(page, "Image ready")
        page.locator("#otseg-classes textarea").fill(", ".join(CLASSES))
        page.locator("#otseg-run").click()
        _status_contains(page, "Segmented in")
        overlay_src = page.locator("#otseg-overlay img").get_attribute("src")
        overlay = np.asarray(Image.open(io.BytesIO(page.request.get(overlay_src).body())).convert("RGB"))
        factor = overlay.shape[0] // photo.shape[0]
        assert factor >= 1 and overlay.shape == (photo.shape[0] * factor, photo.shape[1] * factor, 3)
        assert not np.array_equal(overlay[::factor, ::factor], photo)
        legend = page.locator("#otseg-legend").inner_text()
        assert all(name in legend for name in CLASSES)
        assert "(seen)" in legend or "(unseen)" in legend  # red square and blue circle belong to the model's split
        page.locator("#otseg-maps img").first.wait_for(timeout=STEP_TIMEOUT_MS)
        assert page.locator("#otseg-maps img").count() >= 2  # the score map and the plan of at least one prompt
        page.locator("#otseg-class input").click()
        page.get_by_role("option", name=CLASSES[0], exact=True).click()
        page.wait_for_function(
            "name => document.querySelector('#otseg-note').innerText.includes(name)",
            arg=CLASSES[0],
            timeout=STEP_TIMEOUT_MS,
        )
        assert f"a photo of a {CLASSES[0]}." in page.locator("#otseg-prompts").inner_text()
        page.screenshot(path=str(tmp_path / "serve_page.png"), full_page=True)

        page.locator("#otseg-classes textarea").fill(" ")
        page.locator("#otseg-run").click()
        _status_contains(page, "no class names given")
        page.goto(served)  # a fresh page: its upload box is empty again
        page.locator("#otseg-upload input[type=file]").set_input_files(str(notes))
        _status_contains(page, "notes.png is not an image")
        page.goto(served)
        page.locator("#otseg-upload input[type=file]").set_input_files(str(huge_png(tmp_path / "huge.png")))
        _status_contains(page, "huge.png has 900 megapixels; this server takes at most 40 megapixels")
        if ADE_SAMPLE.is_dir():  # an example of --examples: its photo is served and its classes offered
            page.get_by_text("ADE_val_00000001", exact=True).click()
            page.wait_for_function(
                "() => { const img = document.querySelector('#otseg-image img'); return img && img.naturalWidth > 0; }",
                timeout=STEP_TIMEOUT_MS,
            )
            assert "wall" in page.locator("#otseg-classes textarea").input_value()
        html = page.content()
        page.get_by_text("Use via API").first.click()  # the footer's link: the named endpoint and its example
        page.get_by_text("/segment").first.wait_for(timeout=STEP_TIMEOUT_MS)
        browser.close()
    assert outside == []
    assert str(tiny_model_file.parent) not in html and "Traceback" not in html
    assert (tmp_path / "serve_page.png").stat().st_size > 0
