"""Sinkhorn speed and backward memory: otkit vs POT, geomloss and the paper's loop; writes JSON.

Run: ``python benchmarks/sinkhorn_bench.py [--device cuda] [--out benchmarks/results/sinkhorn_cpu.json]``.
The same numbers come from ``otkit bench --suite sinkhorn --suite memory --out ...``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.otkit_cli import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = args.out or str(Path(__file__).parent / "results" / f"sinkhorn_{args.device.split(':')[0]}.json")
    main(["bench", "--suite", "sinkhorn", "--suite", "memory", "--device", args.device, "--out", out])
