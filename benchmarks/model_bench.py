"""End-to-end cost of OTSeg: one forward at 512x512, time, peak memory and the share spent in Sinkhorn.

The Sinkhorn share comes from a profiler run: every otkit solve runs inside the profiler range
``otkit.dense.PROFILER_RANGE``, and the time of those ranges (the MPS path and each decoder layer) is summed
over one extra forward under ``torch.profiler.profile``, with CUDA activities on a GPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.harness import BenchRow, PeakMemory, sync, time_call
from otkit.dense import PROFILER_RANGE
from otseg.build import load_otseg

__all__ = ["MODEL_CASES", "model_suite", "solver_share"]

# (label, model config, K classes, N prompts)
MODEL_CASES = (
    ("VOC K20 N6", "otseg-vit-b16", 20, 6),
    ("COCO-Stuff K171 N8", "otseg-vit-b16-coco", 171, 8),
)


def solver_share(forward: Callable[[], Any], device: str) -> float:
    """Fraction of one ``forward()`` spent in otkit solves, from the profiler ranges named ``PROFILER_RANGE``.

    The solver time is the larger of the ranges' host time and device time (on CUDA, kernels run after the host
    has moved on); the total is the forward's wall time under the same profiler, synchronised at the end.
    """
    activities = [ProfilerActivity.CPU]
    if torch.device(device).type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        forward()
        sync(device)
        total_us = (time.perf_counter() - start) * 1e6
    ranges = [event for event in prof.key_averages() if event.key == PROFILER_RANGE]
    solver_us = max((max(event.cpu_time_total, event.device_time_total) for event in ranges), default=0.0)
    return solver_us / total_us


def model_suite(device: str = "cpu", batch_sizes: tuple[int, ...] = (1, 4), repeat: int = 3) -> list[BenchRow]:
    """Time one inference forward of the ViT-B/16 OTSeg (random CLIP weights) and the share of Sinkhorn in it."""
    rows = []
    for label, config, n_cls, n_prompt in MODEL_CASES:
        model = load_otseg(config, allow_random_clip=True, device=device).model.eval()
        text = torch.nn.functional.normalize(torch.randn(n_cls, n_prompt, 512, device=device), dim=-1)
        for batch in batch_sizes:
            images = torch.rand(batch, 3, 512, 512, device=device) * 255

            def forward(images=images, text=text, model=model):
                with torch.no_grad():
                    return model(images, text)

            ms = time_call(forward, repeat=repeat, device=device)
            share = solver_share(forward, device)
            with PeakMemory(device) as mem:
                forward()
            extra = {
                "sinkhorn_share": share,
                "peak_memory_mb": None if mem.peak is None else mem.peak / 2**20,
                "batch": batch,
            }
            rows.append(BenchRow("model", f"{label} B{batch}", "forward 512x512", config, ms, None, "", extra))
    return rows
