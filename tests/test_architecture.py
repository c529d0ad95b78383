"""The layout keeps its promises: which part may import which, small modules, a small public top level."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("otkit", "otseg", "cli", "benchmarks")

# Each part may import only the parts listed (besides itself and third-party libraries).
ALLOWED = {
    "otkit": set(),
    "otseg.presets": set(),
    "otseg.config": {"otkit", "otseg.presets"},
    "otseg.utils": set(),
    "otseg.data": {"otseg.presets", "otseg.config"},
    "otseg.modeling": {"otkit", "otseg.presets", "otseg.config", "otseg.data", "otseg.utils"},
    "otseg.engine": {"otkit", "otseg"},
    "otseg.demo": {"otkit", "otseg"},
    "otseg.serve": {"otkit", "otseg"},
    "otseg": {"otkit", "otseg.presets", "otseg.config", "otseg.utils", "otseg.data", "otseg.modeling"},
    "cli": {"otkit", "otseg"},
    "benchmarks": {"otkit", "otseg"},
}


def _modules():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path, ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _part(module: str) -> str:
    """The entry of ALLOWED that a module belongs to (the longest matching prefix)."""
    return max((p for p in ALLOWED if module == p or module.startswith(p + ".")), key=len)


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {n for n in names if n.split(".")[0] in PACKAGES}


@pytest.mark.parametrize(("path", "module"), list(_modules()), ids=lambda x: str(x) if isinstance(x, str) else "")
def test_imports_follow_the_layers(path, module):
    own = _part(module)
    allowed = ALLOWED[own] | {own}
    for name in _imports(path):
        target = _part(name) if name.split(".")[0] in ("otkit", "otseg") else name.split(".")[0]
        assert target in allowed or any(target.startswith(a + ".") for a in allowed), f"{module} imports {name}"


def test_modules_are_small_and_the_top_level_is_the_public_api():
    for package in ("otkit", "otseg", "cli"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            assert len(text.splitlines()) <= 450, path
            assert "type: ignore" not in text, path
    assert len(list((ROOT / "otseg").glob("*.py"))) <= 7
    for folder in (ROOT / "otseg").iterdir():
        if folder.is_dir() and folder.name not in ("configs", "__pycache__"):
            assert (folder / "__init__.py").is_file(), folder
