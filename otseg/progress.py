"""Rich progress bars for long loops (disabled on non-interactive or secondary processes on request)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

__all__ = ["make_progress", "progress_bar"]

T = TypeVar("T")


def make_progress(transient: bool = False) -> Progress:
    """A rich Progress with description, bar, count, elapsed and remaining time, and a free text field."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        transient=transient,
    )


def progress_bar(items: Iterable[T], description: str, *, enabled: bool = True) -> Iterator[T]:
    """Iterate over ``items`` with a progress bar (a plain iteration when ``enabled`` is False)."""
    if not enabled:
        yield from items
        return
    items = list(items)
    with make_progress(transient=True) as progress:
        task = progress.add_task(description, total=len(items), info="")
        for item in items:
            yield item
            progress.advance(task)
