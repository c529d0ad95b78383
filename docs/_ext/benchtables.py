"""Benchmark tables read from ``benchmarks/results/*.json`` when the site is built (never copied by hand).

``.. benchmark-table:: FILE`` renders the rows of one results file (optionally one ``:suite:``) with the command
that produced them (``:command:``, or the file's own ``command`` entry) and the machine recorded in its
``environment``. ``.. benchmark-others::`` renders every results file that no ``benchmark-table`` of the page
named, so a new benchmark appears on the site without an edit here (its command: the file's ``command`` entry, or
``benchmarks/<stem>_bench.py``, the script whose default output ``<stem>_<device>.json`` is).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

SHOWN = "benchmark_files_shown"


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def machine(environment: dict[str, Any]) -> str:
    """One line naming the machine and software a results file was measured on."""
    device = environment.get("device_name") or f"{environment.get('processor', '?')} {environment.get('device', '')}"
    device = device.replace(" cpu", " CPU")
    parts = [device.strip(), f"{environment.get('threads', '?')} thread(s)", f"torch {environment.get('torch')}"]
    for key, label in (("ot", "POT"), ("geomloss", "geomloss")):
        if environment.get(key):
            parts.append(f"{label} {environment[key]}")
    if environment.get("load_1min_at_start") is not None:
        parts.append(f"load average {environment['load_1min_at_start']:.1f} at the start")
    return ", ".join(parts)


def read_results(path: Path) -> dict[str, Any]:
    """A results file as written by ``benchmarks/harness.py``: ``environment`` and ``rows``."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"benchmark results {path.name}: cannot read it as JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list) or "environment" not in data:
        raise ValueError(f"benchmark results {path.name}: expected an object with 'environment' and 'rows'")
    return data


def guess_command(path: Path, environment: dict[str, Any]) -> str | None:
    """The script that writes ``path`` by default: ``benchmarks/<stem>_bench.py`` for ``<stem>_<device>.json``."""
    parts = path.stem.split("_")
    for end in range(len(parts) - 1, 0, -1):
        script = path.parent.parent / f"{'_'.join(parts[:end])}_bench.py"
        if script.is_file():
            threads = environment.get("OMP_NUM_THREADS")
            return ("" if threads is None else f"OMP_NUM_THREADS={threads} ") + f"python benchmarks/{script.name}"
    return None


def _paragraph(*parts: str | nodes.Node) -> nodes.paragraph:
    para = nodes.paragraph()
    for part in parts:
        para += nodes.Text(part) if isinstance(part, str) else part
    return para


def _table(header: list[str], rows: list[list[str]]) -> nodes.table:
    table = nodes.table(classes=["benchmark-table"])
    group = nodes.tgroup(cols=len(header))
    table += group
    group += [nodes.colspec(colwidth=1) for _ in header]
    for section, lines in ((nodes.thead(), [header]), (nodes.tbody(), rows)):
        group += section
        for cells in lines:
            row = nodes.row()
            for cell in cells:
                entry = nodes.entry()
                entry += nodes.paragraph(text=cell)
                row += entry
            section += row
    return table


def table_nodes(
    name: str, data: dict[str, Any], suite: str | None, command: str | None, extras: list[str]
) -> list[nodes.Node]:
    """One table, the file and suite it comes from, its command and its machine."""
    rows = [row for row in data["rows"] if suite is None or row.get("suite") == suite]
    if not rows:
        raise ValueError(f"benchmark results {name}: no rows of suite {suite!r}")
    command = command or data.get("command")
    source = _paragraph("From ", nodes.literal(text=f"benchmarks/results/{name}"))
    if suite:
        source += [nodes.Text(", suite "), nodes.literal(text=suite)]
    source += nodes.Text(". Command: ")
    source += nodes.literal(text=command) if command else nodes.Text("see benchmarks/README.md")
    source += nodes.Text(f". Machine: {machine(data['environment'])}.")
    references = {str(row.get("reference", "")) for row in rows}
    shared = references.pop() if len(references) == 1 else None
    header = ["problem", "mode", "method", "ms", f"speed-up vs {shared}" if shared else "speed-up", "reference"]
    header = [*header[:5], *([] if shared is not None else header[5:]), *[key.replace("_", " ") for key in extras]]
    cells = []
    for row in rows:
        extra = row.get("extra") or {}
        ratio = row.get("ratio")
        problem = str(row.get("problem", "")) + ("" if suite else f" ({row.get('suite', '')})")
        cells.append(
            [
                problem,
                str(row.get("mode", "")),
                str(row.get("method", "")),
                _number(row.get("ms")),
                "-" if ratio is None else f"{ratio:.2f}x",
                *([] if shared is not None else [str(row.get("reference", ""))]),
                *[_number(extra.get(key)) for key in extras],
            ]
        )
    return [source, _table(header, cells)]


class BenchmarkTable(SphinxDirective):
    """``.. benchmark-table:: points_cpu.json`` with ``:suite:``, ``:command:`` and ``:extra:`` (keys, commas)."""

    required_arguments = 1
    option_spec: ClassVar[dict[str, Any]] = {
        "suite": directives.unchanged,
        "command": directives.unchanged,
        "extra": directives.unchanged,
    }

    def run(self) -> list[nodes.Node]:
        """Read the file and render its table."""
        name = self.arguments[0]
        path = Path(self.config.benchmark_results) / name
        self.env.note_dependency(str(path))
        self.env.temp_data.setdefault(SHOWN, set()).add(name)
        extras = [key.strip() for key in self.options.get("extra", "").split(",") if key.strip()]
        try:
            return table_nodes(name, read_results(path), self.options.get("suite"), self.options.get("command"), extras)
        except ValueError as exc:
            raise self.error(str(exc)) from exc


class BenchmarkOthers(SphinxDirective):
    """Every results file that no ``benchmark-table`` above it on the page showed, one section each."""

    def run(self) -> list[nodes.Node]:
        """Render the files not shown yet."""
        shown = self.env.temp_data.get(SHOWN, set())
        folder = Path(self.config.benchmark_results)
        self.env.note_dependency(str(folder))
        found: list[nodes.Node] = []
        for path in sorted(folder.glob("*.json")):
            if path.name in shown:
                continue
            self.env.note_dependency(str(path))
            try:
                data = read_results(path)
                command = data.get("command") or guess_command(path, data["environment"])
                found += [nodes.rubric(text=path.name), *table_nodes(path.name, data, None, command, [])]
            except ValueError as exc:
                raise self.error(str(exc)) from exc
        return found or [_paragraph("Every results file is shown above.")]


def setup(app: Sphinx) -> dict[str, object]:
    """Register the directives and the ``benchmark_results`` folder setting."""
    app.add_config_value("benchmark_results", "", "env")
    app.add_directive("benchmark-table", BenchmarkTable)
    app.add_directive("benchmark-others", BenchmarkOthers)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
