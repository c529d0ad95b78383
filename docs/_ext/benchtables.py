"""Benchmark tables read from ``benchmarks/results/*.json`` when the site is built (never copied by hand).

``.. benchmark-table:: FILE`` renders the rows of one results file (optionally one ``:suite:``) with the command
that produced them (``:command:``, or the file's own ``command`` entry) and the machine recorded in its
``environment``. ``.. benchmark-others::`` renders every results file that no ``benchmark-table`` of the page
named, so a new benchmark appears on the site without an edit here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

SHOWN = "benchmark_files_shown"


def _escape(text: object) -> str:
    return str(text).replace("\\", "\\\\").replace("*", "\\*").replace("`", "\\`").replace("|", "\\|")


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return _escape(value)


def machine(environment: dict[str, Any]) -> str:
    """One line naming the machine and software a results file was measured on."""
    device = environment.get("device_name") or f"{environment.get('processor', '?')} {environment.get('device', '')}"
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


def table_rst(name: str, data: dict[str, Any], suite: str | None, command: str | None, extras: list[str]) -> list[str]:
    """The reStructuredText of one table, its command and its machine."""
    rows = [row for row in data["rows"] if suite is None or row.get("suite") == suite]
    if not rows:
        raise ValueError(f"benchmark results {name}: no rows of suite {suite!r}")
    command = command or data.get("command")
    lines = [f"From ``benchmarks/results/{name}``" + (f", suite ``{suite}``" if suite else "") + "."]
    lines.append(f"Command: ``{command}``." if command else "Command: see ``benchmarks/README.md``.")
    lines += [f"Machine: {_escape(machine(data['environment']))}.", ""]
    header = ["problem", "mode", "method", "ms", "speed-up vs reference", "reference", *extras]
    lines += [".. list-table::", "   :header-rows: 1", ""]
    lines += ["   * - " + header[0], *[f"     - {h}" for h in header[1:]]]
    for row in rows:
        extra = row.get("extra") or {}
        ratio = row.get("ratio")
        cells = [
            _escape(row.get("problem", "")) + ("" if suite else f" ({_escape(row.get('suite', ''))})"),
            _escape(row.get("mode", "")),
            _escape(row.get("method", "")),
            _number(row.get("ms")),
            "-" if ratio is None else f"{ratio:.2f}x",
            _escape(row.get("reference", "")),
            *[_number(extra.get(key)) for key in extras],
        ]
        lines += ["   * - " + (cells[0] or " "), *[f"     - {c or ' '}" for c in cells[1:]]]
    return [*lines, ""]


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
            text = table_rst(name, read_results(path), self.options.get("suite"), self.options.get("command"), extras)
        except ValueError as exc:
            raise self.error(str(exc)) from exc
        return _parse(self, text)


class BenchmarkOthers(SphinxDirective):
    """Every results file that no ``benchmark-table`` above it on the page showed, one section each."""

    def run(self) -> list[nodes.Node]:
        """Render the files not shown yet."""
        shown = self.env.temp_data.get(SHOWN, set())
        folder = Path(self.config.benchmark_results)
        self.env.note_dependency(str(folder))
        text: list[str] = []
        for path in sorted(folder.glob("*.json")):
            if path.name in shown:
                continue
            self.env.note_dependency(str(path))
            try:
                data = read_results(path)
            except ValueError as exc:
                raise self.error(str(exc)) from exc
            text += [path.name, "~" * len(path.name), "", *table_rst(path.name, data, None, None, [])]
        if not text:
            text = ["Every results file is shown above."]
        return _parse(self, text)


def _parse(directive: SphinxDirective, lines: list[str]) -> list[nodes.Node]:
    container = nodes.section() if any(line.startswith("~~~") for line in lines) else nodes.container()
    nested_parse_with_titles(directive.state, StringList(lines, source=directive.get_source_info()[0]), container)
    return container.children


def setup(app: Sphinx) -> dict[str, object]:
    """Register the directives and the ``benchmark_results`` folder setting."""
    app.add_config_value("benchmark_results", "", "env")
    app.add_directive("benchmark-table", BenchmarkTable)
    app.add_directive("benchmark-others", BenchmarkOthers)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
