"""Helpers shared by the command-line groups: rich tables and JSON output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = ["console", "print_table", "write_json"]

console = Console()


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
        return f"{value:.2e}"
    return escape(str(value))


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """Print ``rows`` under ``columns`` as a rich table; numbers are shortened for reading."""
    table = Table(title=title, header_style="bold")
    for col in columns:
        table.add_column(col, justify="left" if col in (columns[0],) else "right")
    for row in rows:
        table.add_row(*[_fmt(v) for v in row])
    console.print(table)


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON (parents created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path
