"""The documentation site has an API entry for every public name, and loads nothing from the network.

Two levels, both cheap: the generated sources (always: the pages ``make docs`` would build from ``__all__``), and
the built site when there is one (``docs/_build/html``: its inventory and pages read through
``docs/check_site.py``, and two pages opened in Chromium with the network off). ``.ci/run`` runs ``make test``
first (no site yet: those are skipped), then ``make docs``, ``docs/check_site.py`` and this module again. Building
the site here would take a minute; the build itself fails on a missing name.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
import warnings
import zlib
from pathlib import Path

import pytest

import otkit
import otseg

DOCS = Path(__file__).resolve().parents[1] / "docs"
HTML = DOCS / "_build" / "html"


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


check_site = _load(DOCS / "check_site.py", "check_site")
PAGES = sorted(DOCS.glob("*.md")) + sorted((DOCS / "otkit").glob("*.md"))


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_otkit_examples_of_the_pages_run(page):
    """The ``python`` blocks of the site's pages run, warnings as errors (those that need otseg's model files
    are left out: the predictor's docstring example runs in test_doctests.py)."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S) if "otseg" not in b]
    for block in blocks:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            exec(compile("import torch, otkit\n" + block, str(page), "exec"), {})


@pytest.mark.parametrize("package", [otkit, otseg], ids=["otkit", "otseg"])
def test_generated_api_page_has_an_entry_for_every_public_name(package):
    pytest.importorskip("sphinx")
    apiref = _load(DOCS / "_ext" / "apiref.py", "apiref")
    text = apiref.page(package.__name__, "title", "intro", {})
    for name in package.__all__:
        target = f"{package.__name__}.{name}"
        assert f":: {target}\n" in text or f":: {name}\n   :module: {package.__name__}\n" in text, target


def test_built_site_has_an_entry_for_every_public_name_and_no_network():
    if not (HTML / "objects.inv").is_file():
        pytest.skip("no built site (make docs builds docs/_build/html; .ci/run checks it after the build)")
    assert check_site.problems(HTML) == []


def _fake_site(root: Path, entries: list[str], page: str) -> Path:
    (root / "_static" / "mathjax").mkdir(parents=True)
    (root / "_static" / "mathjax" / "tex-chtml.js").write_text("")
    (root / "index.html").write_text(page)
    lines = "".join(f"{name} py:function 1 api/otkit.html#$ -\n" for name in entries)
    header = b"# Sphinx inventory version 2\n# Project: x\n# Version: 0\n# The remainder is compressed\n"
    (root / "objects.inv").write_bytes(header + zlib.compress(lines.encode()))
    return root


def test_check_site_reports_a_missing_name_and_a_network_script(tmp_path):
    names = [f"{p.__name__}.{n}" for p in (otkit, otseg) for n in p.__all__]
    page = '<script src="https://cdn.example.org/mathjax.js"></script><a href="https://example.org">a link</a>'
    site = _fake_site(tmp_path, names[1:], page)
    found = check_site.problems(site)
    assert found == [
        f"no API entry for {names[0]} (rebuild with make docs)",
        "loads from the network: index.html: https://cdn.example.org/mathjax.js",
    ]
    assert check_site.main([str(site)]) == 1


def test_built_site_renders_math_and_search_with_the_network_off():
    """In Chromium, with every request that is not file:// refused: MathJax typesets the conventions page and
    the search page lists the API entries (both served with the site)."""
    if not (HTML / "index.html").is_file():
        pytest.skip("no built site (make docs builds docs/_build/html; .ci/run checks it after the build)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed: pip install playwright")
    browser_path = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if browser_path is None:
        pytest.skip("no Chromium found; install it: apt-get install chromium")
    refused: list[str] = []

    def route(request_route):
        if request_route.request.url.startswith("file://"):
            request_route.continue_()
        else:
            refused.append(request_route.request.url)
            request_route.abort()

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.route("**/*", route)
            page.goto((HTML / "conventions.html").as_uri())
            page.wait_for_selector("mjx-container", timeout=60_000)
            assert page.locator("mjx-container").count() > 10
            page.goto((HTML / "search.html").as_uri() + "?q=sinkhorn_divergence")
            page.wait_for_selector("#search-results li a", timeout=60_000)
            assert "otkit.sinkhorn_divergence" in page.locator("#search-results").inner_text()
        finally:
            browser.close()
    assert refused == []
