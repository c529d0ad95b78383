"""Timing and peak-memory measurement for benchmarks (CPU and CUDA)."""

from __future__ import annotations

import ctypes
import ctypes.util
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["PeakMemory", "time_call"]


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], *, repeat: int = 5, warmup: int = 1, device: str = "cpu") -> float:
    """Median wall time of ``fn()`` in milliseconds, synchronising the device around each call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


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
        return out
