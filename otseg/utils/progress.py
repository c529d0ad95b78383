"""Progress of long work: rich progress bars on a terminal, plain log lines when the output goes to a file."""

from __future__ import annotations

import datetime
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

__all__ = ["StepReporter", "is_terminal", "make_progress", "progress_bar"]

T = TypeVar("T")


def is_terminal() -> bool:
    """Whether standard output is an interactive terminal (a progress bar can redraw itself there)."""
    return sys.stdout.isatty()


def make_progress(transient: bool = False) -> Progress:
    """A rich Progress: description, bar, count, labelled elapsed and remaining time, and a free ``info`` field."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("elapsed"),
        TimeElapsedColumn(),
        TextColumn("left"),
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


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


class StepReporter:
    """Reports the steps of a training loop: a progress bar on a terminal, plain lines otherwise.

    A plain line every ``every`` steps gives the step, loss, learning rate, images per second and time left, and
    is flushed at once.

    Args:
        description: Name of the work.
        total: Last step.
        start: First step (a resumed run starts later).
        every: Steps between plain lines.
        images_per_step: Images one step consumes (for images/s).
        enabled: ``False`` reports nothing.
        terminal: Force the bar (``True``) or plain lines (``False``); ``None`` asks :func:`is_terminal`.
    """

    def __init__(
        self,
        description: str,
        total: int,
        *,
        start: int = 0,
        every: int = 50,
        images_per_step: int = 1,
        enabled: bool = True,
        terminal: bool | None = None,
    ) -> None:
        self.description, self.total, self.start, self.every = description, total, start, max(1, every)
        self.images_per_step, self.enabled = images_per_step, enabled
        self.terminal = is_terminal() if terminal is None else terminal
        self.progress: Progress | None = None
        self.task = None
        self.t0 = time.perf_counter()

    def __enter__(self) -> StepReporter:
        self.t0 = time.perf_counter()
        if self.enabled and self.terminal:
            self.progress = make_progress()
            self.task = self.progress.add_task(self.description, total=self.total, completed=self.start, info="")
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def step(self, step: int, loss: float, lr: float) -> None:
        """Report that ``step`` (1-based count of finished steps) ended with ``loss`` at learning rate ``lr``."""
        if not self.enabled:
            return
        if self.progress is not None:
            self.progress.update(self.task, completed=step, info=f"loss {loss:.3f}  lr {lr:.2e}")
            return
        if step % self.every and step != self.total and step != self.start + 1:
            return
        elapsed = time.perf_counter() - self.t0
        done = step - self.start
        rate = done * self.images_per_step / max(elapsed, 1e-9)
        left = elapsed / max(done, 1) * (self.total - step)
        print(
            f"{self.description}: step {step}/{self.total}  loss {loss:.4f}  lr {lr:.2e}  {rate:.1f} img/s  "
            f"elapsed {_clock(elapsed)}  left {_clock(left)}",
            flush=True,
        )
