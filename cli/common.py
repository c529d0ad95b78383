"""Helpers shared by the command groups: output (rich tables, JSON), ``--set`` parsing and the one error path."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = ["console", "debug_option", "deep_merge", "parse_overrides", "print_table", "reported_errors", "write_json"]

console = Console()

# What a user can act on: bad values, missing or damaged files, refused runs. These print as one message (exit
# status 1); anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError, RuntimeError)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
        return f"{value:.2e}"
    return escape(str(value))


def print_table(title: str, columns: list[str], rows: list[list[Any]], *, text: bool = False) -> None:
    """Print ``rows`` under ``columns`` as a rich table; numbers are shortened for reading.

    The first column is left-aligned and the others right-aligned (numbers), or all left with ``text``.
    """
    table = Table(title=title, header_style="bold")
    for col in columns:
        table.add_column(col, justify="left" if text or col == columns[0] else "right")
    for row in rows:
        table.add_row(*[_fmt(v) for v in row])
    console.print(table)


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON (parents created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def debug_option(command: Callable) -> Callable:
    """Add ``--debug`` (show the traceback of an error instead of its message) to a command."""
    return click.option("--debug", is_flag=True, help="On an error, show the full traceback (for bug reports).")(
        command
    )


@contextmanager
def reported_errors(debug: bool = False) -> Iterator[None]:
    """Turn the errors a user can act on into a one-line message and exit status 1 (``debug``: re-raise them)."""
    try:
        yield
    except click.ClickException:
        raise
    except USER_ERRORS as err:
        if debug:
            raise
        message = str(err) or type(err).__name__
        if isinstance(err, FileNotFoundError) and err.filename and str(err.filename) not in message:
            message = f"{err.filename}: {message}"
        raise click.ClickException(message) from err


def _parse_value(text: str) -> Any:
    """``--set`` values: JSON when it parses (numbers, true/false/null, lists, objects), else the raw string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_overrides(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``("iters=100", "inference.crop=64")`` -> ``{"iters": 100, "inference": {"crop": 64}}``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"expected key=value, got {pair!r}.", param_hint="--set")
        key, value = pair.split("=", 1)
        *parents, leaf = key.strip().split(".")
        target = out
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise click.BadParameter(f"{key} sets a part of a value that is not an object.", param_hint="--set")
        target[leaf] = _parse_value(value)
    return out


def deep_merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``changes``, objects merged key by key (a ``--set`` of one option keeps the others)."""
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out
