"""End-to-end cost of OTSeg: one forward at 512x512, time, peak memory and the share spent in Sinkhorn."""

from __future__ import annotations

import time
import warnings
from unittest import mock

import torch

import otkit.multi_prompt
from otkit.bench import BenchRow
from otkit.profiling import PeakMemory, time_call
from otseg.build import RandomWeightsWarning, build_otseg

__all__ = ["MODEL_CASES", "model_suite"]

# (label, model config, K classes, N prompts)
MODEL_CASES = (
    ("VOC K20 N6", "otseg-vit-b16", 20, 6),
    ("COCO-Stuff K171 N8", "otseg-vit-b16-coco", 171, 8),
)


def _time_solver(forward, device: str) -> tuple[float, float]:
    """Seconds spent inside the Sinkhorn solver during one ``forward()``, and the forward's total."""
    spent = [0.0]
    real_solver = otkit.multi_prompt.sinkhorn

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def timed_solver(*args, **kwargs):
        sync()
        start = time.perf_counter()
        out = real_solver(*args, **kwargs)
        sync()
        spent[0] += time.perf_counter() - start
        return out

    with mock.patch.object(otkit.multi_prompt, "sinkhorn", timed_solver):
        start = time.perf_counter()
        forward()
        sync()
        total = time.perf_counter() - start
    return spent[0], total


def model_suite(device: str = "cpu", batch_sizes: tuple[int, ...] = (1, 4), repeat: int = 3) -> list[BenchRow]:
    """Time one inference forward of the ViT-B/16 OTSeg (random weights) and the share of Sinkhorn in it.

    The Sinkhorn share is measured by timing every solver call (the MPS path and each decoder layer) during one
    extra forward, with the device synchronised around each call.
    """
    rows = []
    for label, config, n_cls, n_prompt in MODEL_CASES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomWeightsWarning)
            model = build_otseg(config, device=device).eval()
        text = torch.nn.functional.normalize(torch.randn(n_cls, n_prompt, 512, device=device), dim=-1)
        for batch in batch_sizes:
            images = torch.rand(batch, 3, 512, 512, device=device) * 255

            def forward(images=images, text=text, model=model):
                with torch.no_grad():
                    return model(images, text)

            ms = time_call(forward, repeat=repeat, device=device)
            solver_time, total = _time_solver(forward, device)
            with PeakMemory(device) as mem:
                forward()
            extra = {
                "sinkhorn_share": solver_time / total,
                "peak_memory_mb": None if mem.peak is None else mem.peak / 2**20,
                "batch": batch,
            }
            rows.append(BenchRow("model", f"{label} B{batch}", "forward 512x512", config, ms, None, "", extra))
    return rows
