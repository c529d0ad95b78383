"""Time OTSeg inference per window: fp32 (the default) against the opt-in bf16 and compiled paths; write JSON.

Run from the repository root: ``python benchmarks/inference_bench.py [--setting voc --setting coco]
[--variant fp32 --variant compile ...] [--device cuda] [--threads 2] [--repeat 5] [--quick] [--out PATH]``.
Each setting builds the ViT-B/16 model with seeded random weights and segments one 512x512 image against K
random classes through :class:`otseg.OTSegPredictor` (one window, the unit of the paper's sliding window). The
variants run interleaved in one process, so a change of machine load reaches all of them; each row holds the
median wall time, the median CPU time of the process, the ratio to fp32, the first call (compilation), and the
accuracy against fp32 (largest probability difference, share of pixels with the same argmax). ``--quick`` runs
the tiny test model at 64x64 instead. Without ``--out`` the JSON goes to ``benchmarks/results/inference_<device>
[_quick].json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: make `benchmarks` importable

import torch
import torch.nn.functional as F

from benchmarks.harness import (
    BenchRow,
    check_repeat_and_device,
    console,
    environment,
    print_table,
    rows_as_dicts,
    sync,
    write_json,
)
from otseg.build import load_otseg
from otseg.predictor import InferenceSettings, OTSegPredictor

RESULTS = Path(__file__).resolve().parent / "results"
# name: (model config, K classes, image side); N comes from the config
SETTINGS = {
    "voc": ("otseg-vit-b16", 20, 512),
    "coco": ("otseg-vit-b16-coco", 171, 512),
    "tiny": ("otseg-tiny", 8, 64),
}
SHOWN = ("first_call_s", "max_prob_diff", "argmax_agreement")
VARIANTS = {
    "fp32": {},
    "bf16": {"precision": "bf16"},
    "compile": {"compile": True},
    "compile-bf16": {"compile": True, "precision": "bf16"},
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setting", dest="settings", action="append", choices=sorted(SETTINGS), help="repeatable")
    parser.add_argument("--variant", dest="variants", action="append", choices=list(VARIANTS), help="repeatable")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per variant, 1 to 100 (default 5)")
    parser.add_argument("--quick", action="store_true", help="the tiny test model at 64x64 only")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/inference_<device>.json)")
    args = parser.parse_args(argv)
    check_repeat_and_device(parser, args)
    args.settings = ["tiny"] if args.quick else (args.settings or ["voc", "coco"])
    args.variants = [v for v in VARIANTS if v in (args.variants or VARIANTS)]
    if "fp32" not in args.variants:
        args.variants.insert(0, "fp32")  # the reference of every ratio and accuracy
    return args


def test_image(side: int, device: str) -> torch.Tensor:
    """A seeded ``(1, 3, side, side)`` RGB image with some spatial structure (smoothed noise), 0-255."""
    noise = torch.randint(0, 256, (1, 3, side, side), generator=torch.Generator().manual_seed(2)).float()
    return F.avg_pool2d(noise, 9, stride=1, padding=4).round().to(device)


def bench_setting(name: str, variants: list[str], device: str, repeat: int) -> list[BenchRow]:
    """Rows for one setting: every variant timed interleaved, with its accuracy against fp32."""
    config, n_classes, side = SETTINGS[name]
    torch.manual_seed(0)
    model, _ = load_otseg(config, allow_random_clip=True, device=device)
    text = F.normalize(torch.randn(n_classes, model.config.num_prompts, model.image_encoder.output_dim), dim=-1)
    seen = torch.ones(n_classes, dtype=torch.bool, device=device)
    seen[-max(1, n_classes // 10) :] = False
    image = test_image(side, device)
    predictors, first, probs = {}, {}, {}
    for variant in variants:
        settings = InferenceSettings(short_side=None, mode="whole", **VARIANTS[variant])
        predictor = OTSegPredictor(model, settings, device=device)
        predictor.text, predictor.seen = text.to(device), seen
        start = time.perf_counter()
        probs[variant] = predictor.predict_torch(image)  # the first call compiles the compiled variants
        sync(device)
        first[variant] = time.perf_counter() - start
        predictors[variant] = predictor
    wall: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(repeat):
        for variant, predictor in predictors.items():
            sync(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            predictor.predict_torch(image)
            sync(device)
            wall[variant].append((time.perf_counter() - start) * 1e3)
            cpu[variant].append((time.process_time() - start_cpu) * 1e3)
    reference = probs["fp32"]
    base_ms = statistics.median(wall["fp32"])
    rows = []
    for variant in variants:
        ms = statistics.median(wall[variant])
        extra = {
            "cpu_ms": statistics.median(cpu[variant]),
            "first_call_s": first[variant],
            "max_prob_diff": float((probs[variant] - reference).abs().max()),
            "argmax_agreement": float((probs[variant].argmax(1) == reference.argmax(1)).float().mean()),
            "classes": n_classes,
            "image": side,
            "load_average": os.getloadavg()[0],
        }
        problem = f"{name} K{n_classes} {side}x{side}"
        rows.append(BenchRow("inference", problem, variant, config, ms, base_ms / ms, "fp32", extra))
    return rows


def main(argv: list[str] | None = None) -> Path:
    """Run the settings, print the table and write ``{environment, rows}`` as JSON; return its path."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name in args.settings:
        with console.status(f"{name}: {', '.join(args.variants)}..."):
            rows += bench_setting(name, args.variants, args.device, args.repeat)
    print_table(
        "OTSeg inference, one window (ratio = fp32 time / variant time)",
        ["problem", "variant", "ms", "CPU ms", "ratio", "first call s", "max |dp|", "argmax agree"],
        [[r.problem, r.mode, r.ms, r.extra["cpu_ms"], r.ratio, *(r.extra[k] for k in SHOWN)] for r in rows],
    )
    device = torch.device(args.device).type
    out = Path(args.out) if args.out else RESULTS / f"inference_{device}{'_quick' if args.quick else ''}.json"
    path = write_json(out, {"environment": environment(args.device), "rows": rows_as_dicts(rows)})
    console.print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
