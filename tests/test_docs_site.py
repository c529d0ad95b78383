"""The documentation site has an API entry for every public name, and loads nothing from the network.

Two levels, both cheap: the generated sources (always: the pages ``make docs`` would build from ``__all__``), and
the built site when there is one (``docs/_build/html``, read through ``docs/check_site.py``, which ``.ci/run`` also
runs after ``make docs``). Building the site here would take a minute; the build itself fails on a missing name.
"""

from __future__ import annotations

import importlib.util
import sys
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
