"""Sphinx configuration of the otkit + otseg documentation site (``make docs`` builds it into ``_build/html``)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path[:0] = [str(ROOT), str(DOCS / "_ext")]  # the checkout's otkit and otseg, and the site's own extensions

import otkit  # noqa: E402

project = "otkit + otseg"
copyright = "the otkit and otseg authors"
release = version = otkit.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax served with the site: it renders with no network
    "myst_nb",
    "apiref",
    "benchtables",
]

# Warnings are errors (make docs passes -W) and every cross-reference must resolve.
nitpicky = True
# Types of other libraries: there is no network for their inventories, so references to them stay plain text.
nitpick_ignore_regex = [
    ("py:.*", r"(torch|numpy|np|PIL|open_clip|gradio|click|rich|safetensors|matplotlib)(\..*)?"),
    ("py:.*", r"(typing|typing_extensions|collections|pathlib|os|enum|dataclasses|abc)\..*"),
    ("py:.*", r"(Tensor|Path|nn\.Module|Module|Image\.Image|Callable|Iterable|Iterator|Sequence|Mapping)"),
]

api_packages = {
    "otkit": (
        "otkit API",
        "Every name of ``otkit.__all__``, generated from the docstrings when the site is built.",
    ),
    "otseg": (
        "otseg API",
        "Every name of ``otseg.__all__``, generated from the docstrings when the site is built.",
    ),
}
# Names the public API refers to without exporting them, documented under "Supporting names" (a list of members,
# empty for none); the classes named in public signatures are added without being listed here.
api_supporting = {
    "otkit": {
        "otkit.geometry.Geometry": ["from_points", "spread"],
        "otkit.geometry.backend.stream_backend": [],
        "otkit.geometry.costs.check_points": [],
        "otkit.geometry.DENSE_MAX_BYTES": [],
        "otkit.geometry.DENSE_MIN_DIM": [],
    },
    "otseg": {
        "otseg.presets": [],
        "otseg.engine.evaluate": [],
        "otseg.clip.load_clip_weights": [],
        "otseg.checkpoint.CheckpointError": [],
        "otseg.checkpoint.PAPER_IGNORED_KEYS": [],
    },
}
benchmark_results = str(ROOT / "benchmarks" / "results")

autodoc_typehints = "signature"
autodoc_member_order = "bysource"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = False
napoleon_use_rtype = False

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# The notebooks are stored without outputs: they run when the site is built, their outputs cached by content
# (jupyter-cache under _build), so a rebuild reruns only the notebooks whose code changed.
nb_execution_mode = "cache"
nb_execution_cache_path = str(DOCS / "_build" / ".jupyter_cache")
nb_execution_timeout = 300
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

html_theme = "furo"
html_title = f"otkit + otseg {release}"
html_static_path: list[str] = []
html_copy_source = False
# The search page would fetch every result page for a summary, which browsers refuse for file:// pages (the site
# is opened from docs/_build/html): results are listed by title.
html_show_search_summary = False
exclude_patterns = ["_build", "README.md"]


def copy_notebooks(app) -> None:
    """Copy ``notebooks/*.ipynb`` into ``docs/notebooks/`` (ignored by git), rewriting only what changed."""
    target = DOCS / "notebooks"
    target.mkdir(exist_ok=True)
    sources = {path.name: path for path in (ROOT / "notebooks").glob("*.ipynb")}
    for stale in target.glob("*.ipynb"):
        if stale.name not in sources:
            stale.unlink()
    for name, path in sources.items():
        copy = target / name
        if not copy.exists() or copy.read_bytes() != path.read_bytes():
            shutil.copyfile(path, copy)


def setup(app) -> None:
    """Bring the notebooks in before the sources are read."""
    app.connect("builder-inited", copy_notebooks, priority=100)
