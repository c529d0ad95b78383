"""Measurement harness shared by the benchmark suites: rows, timing, peak memory, environment, tables, JSON."""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = [
    "BenchRow",
    "PeakMemory",
    "check_repeat_and_device",
    "console",
    "environment",
    "print_table",
    "rows_as_dicts",
    "sync",
    "time_call",
    "write_json",
]

console = Console()


@dataclass
class BenchRow:
    """One measurement: ``ms`` for ``method`` on ``problem``, and its ratio to the suite's reference."""

    suite: str
    problem: str
    mode: str
    method: str
    ms: float | None
    ratio: float | None = None  # reference time / this time (> 1: faster than the reference)
    reference: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def rows_as_dicts(rows: list[BenchRow]) -> list[dict[str, Any]]:
    """Plain dicts for JSON."""
    return [asdict(r) for r in rows]


def environment(device: str) -> dict[str, Any]:
    """Versions, threads and device name recorded with every benchmark file."""
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "device": device,
        "processor": platform.processor() or platform.machine(),
    }
    if torch.device(device).type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
    for name in ("ot", "geomloss"):
        try:
            env[name] = __import__(name).__version__
        except ImportError:
            env[name] = None
    return env


def check_repeat_and_device(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse (``parser.error``) a ``--repeat`` outside 1..100 and a CUDA ``--device`` on a machine without CUDA."""
    if not 1 <= args.repeat <= 100:
        parser.error(f"--repeat must be between 1 and 100, got {args.repeat}")
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error("CUDA is not available on this machine; use --device cpu")


def sync(device: torch.device | str) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(
    fn: Callable[[], Any], *, repeat: int = 1, warmup: int | None = None, device: str = "cpu"
) -> tuple[float, Any]:
    """Median wall time of ``fn()`` in milliseconds over ``repeat`` runs, and the last run's value.

    ``warmup`` runs come first (default: one when ``repeat > 1``, none for a single timed run, for references that
    take seconds); the device is synchronised around each call.
    """
    for _ in range(warmup if warmup is not None else int(repeat > 1)):
        fn()
    times, value = [], None
    for _ in range(repeat):
        sync(device)
        start = time.perf_counter()
        value = fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), value


def time_call(fn: Callable[[], Any], *, repeat: int = 5, warmup: int = 1, device: str = "cpu") -> float:
    """Median wall time of ``fn()`` in milliseconds, synchronising the device around each call."""
    return timed(fn, repeat=repeat, warmup=warmup, device=device)[0]


def interleaved_ms(calls: dict[str, Callable[[], object]], repeat: int, device: str) -> dict[str, float]:
    """Median milliseconds of each call over ``repeat`` rounds (one warm-up round), each round calling all.

    A shared machine's load then hits every method alike.
    """
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(repeat + 1):
        for name, call in calls.items():
            sync(device)
            start = time.perf_counter()
            call()
            sync(device)
            if round_:
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    lib = ctypes.CDLL(name)
    if not hasattr(lib, "mallinfo2"):
        return None
    lib.mallinfo2.restype = _MallInfo2
    return lib


_LIBC = _glibc()


class PeakMemory(TorchDispatchMode):
    """Peak bytes allocated above the level at entry, sampled after every ATen op run inside the block.

    On CUDA it reads ``torch.cuda.max_memory_allocated``. On the CPU it reads glibc's heap statistics
    (``mallinfo2``: bytes in use, mmapped blocks included) after each op, so it sees every tensor an op leaves
    alive, including autograd's saved tensors and backward temporaries. Elsewhere ``peak`` is ``None``.

    Example:
        >>> with PeakMemory("cpu") as mem:
        ...     loss = model(x).sum(); loss.backward()
        >>> mem.peak  # bytes
    """

    def __init__(self, device: str = "cpu") -> None:
        super().__init__()
        self.device = torch.device(device)
        self.base = 0
        self.peak: int | None = None
        self.ops = 0  # ATen ops sampled (CPU): the probe costs about 10 us each

    def _used(self) -> int:
        info = _LIBC.mallinfo2()
        return int(info.uordblks + info.hblkhd)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            self.peak = 0
            return self
        if _LIBC is not None:
            self.base = self._used()
            self.peak = 0
            super().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
            return
        if _LIBC is not None:
            super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.peak = max(self.peak, self._used() - self.base)
        self.ops += 1
        return out


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
        return f"{value:.2e}"
    return escape(str(value))


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """Print ``rows`` under ``columns`` as a rich table (first column left-aligned); numbers are shortened."""
    table = Table(title=title, header_style="bold")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*[_fmt(v) for v in row])
    console.print(table)


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON (parents created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path
