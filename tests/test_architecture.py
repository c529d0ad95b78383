"""The layout keeps its promises: which part may import which, small modules, a small public top level."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("otkit", "otseg", "cli", "benchmarks")

# otkit's base: settings, input checks, the stopping rule, results' base, lazy triton, deprecations, exp2.
OTKIT_BASE = {"otkit.options", "otkit._checks", "otkit._convergence", "otkit._solution", "otkit._triton"}
OTKIT_BASE |= {"otkit._deprecation", "otkit._exp2"}

# Each part may import only the parts listed (besides itself and third-party libraries).
ALLOWED = {
    "otkit": {"otkit"},  # the package's __init__: the public API gathers every pipeline
    **{base: OTKIT_BASE for base in OTKIT_BASE},
    "otkit.dense": OTKIT_BASE,
    "otkit.geometry": OTKIT_BASE,
    "otkit.points": OTKIT_BASE | {"otkit.geometry"},
    "otkit.gromov": OTKIT_BASE | {"otkit.dense", "otkit.geometry", "otkit.points"},
    "otkit.attention": OTKIT_BASE | {"otkit.dense", "otkit.geometry"},
    "otkit.doubly_stochastic": OTKIT_BASE | {"otkit.dense", "otkit.couplings"},
    "otkit.couplings": OTKIT_BASE | {"otkit.dense", "otkit.geometry"},
    "otkit.sorting": OTKIT_BASE | {"otkit.dense"},
    "otkit.barycenter": OTKIT_BASE | {"otkit.geometry", "otkit.points"},
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


def _type_checking_blocks(tree: ast.AST) -> set[ast.AST]:
    """Import nodes inside ``if TYPE_CHECKING:`` (annotations only: not run)."""
    nodes = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            nodes |= {inner for stmt in node.body for inner in ast.walk(stmt)}
    return nodes


def _imports(path: Path, runtime_only: bool = False) -> set[str]:
    """Project modules imported by ``path``: ``from a.b import c`` counts ``a.b.c`` if it is a module, else ``a.b``."""
    tree = ast.parse(path.read_text())
    skipped = _type_checking_blocks(tree) if runtime_only else set()
    names = set()
    for node in ast.walk(tree):
        if node in skipped:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = {f"{node.module}.{a.name}" for a in node.names if _is_module(f"{node.module}.{a.name}")}
            names |= modules if len(modules) == len(node.names) else modules | {node.module}
    return {n for n in names if n.split(".")[0] in PACKAGES}


def _is_module(name: str) -> bool:
    """A Python module, a package, or a compiled extension (its C source beside the Python files)."""
    path = ROOT.joinpath(*name.split("."))
    return any(path.with_suffix(suffix).is_file() for suffix in (".py", ".c")) or (path / "__init__.py").is_file()


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize(("path", "module"), list(_modules()), ids=lambda x: str(x) if isinstance(x, str) else "")
def test_imports_follow_the_layers(path, module):
    own = _part(module)
    allowed = ALLOWED[own] | {own}
    for name in _imports(path):
        target = _part(name) if name.split(".")[0] in ("otkit", "otseg") else name.split(".")[0]
        assert target in allowed or any(target.startswith(a + ".") for a in allowed), f"{module} imports {name}"


def test_otkit_has_no_import_cycle():
    """The graph of otkit's run-time imports (function-level ones included) has no cycle."""
    graph = {}
    for path in (ROOT / "otkit").rglob("*.py"):
        graph[_module_name(path)] = {n for n in _imports(path, runtime_only=True) if n.startswith("otkit")}
    state: dict[str, int] = {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph.get(module, ())):
            if dep == module or dep not in graph:
                continue
            assert state.get(dep) != 1, "import cycle: " + " -> ".join([*stack, module, dep])
            if dep not in state:
                visit(dep, [*stack, module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_otkit_modules_import_only_torch_and_the_standard_library():
    allowed = {"torch", "triton", "typing_extensions"}
    for path in (ROOT / "otkit").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = {node.module.split(".")[0]}
            else:
                continue
            for root in roots - {"otkit"}:
                assert root in allowed or root in sys.stdlib_module_names, f"{path} imports {root}"


def test_the_rest_of_the_project_uses_only_otkits_public_api():
    import otkit

    public = set(otkit.__all__)
    for package in ("otseg", "cli"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "otkit":
                    assert node.module == "otkit", f"{path} imports {node.module}: import from otkit itself"
                    assert {a.name for a in node.names} <= public, f"{path} imports a name outside otkit.__all__"
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        assert not alias.name.startswith("otkit."), f"{path} imports {alias.name}"


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
