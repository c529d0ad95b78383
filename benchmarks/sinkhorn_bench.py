"""Time otkit against POT, geomloss and the paper's loop in one process; print ratios and write JSON.

Run from the repository root: ``python benchmarks/sinkhorn_bench.py [--suite sinkhorn --suite memory]
[--device cuda] [--quick] [--repeat 5] [--out PATH]`` (or ``python -m benchmarks.sinkhorn_bench ...``). Suites:
``sinkhorn`` (speed against the references), ``memory`` (backward memory, unrolled vs implicit gradients),
``operators`` (multi-prompt transport and Sinkhorn attention), ``model`` (OTSeg end to end, needs otseg) or
``all`` (the default). Without ``--out`` the JSON goes to ``benchmarks/results/<suites>_<device>[_quick].json``
(``otkit_<device>.json`` for all suites).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: make `benchmarks` importable

import torch

from benchmarks import sinkhorn_suites
from benchmarks.harness import check_repeat_and_device, console, environment, print_table, rows_as_dicts, write_json

SUITES = ("sinkhorn", "memory", "operators", "model")
RESULTS = Path(__file__).resolve().parent / "results"


def default_out(suites: tuple[str, ...], device: str, quick: bool) -> Path:
    """``results/<suites>_<device>[_quick].json``; all suites are named ``otkit``."""
    name = "otkit" if suites == SUITES else "_".join(suites)
    return RESULTS / f"{name}_{torch.device(device).type}{'_quick' if quick else ''}.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--suite",
        dest="suites",
        action="append",
        choices=[*SUITES, "all"],
        help="which comparisons to run (repeatable; default all)",
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    parser.add_argument("--quick", action="store_true", help="only the smallest shapes and no per-problem POT loop")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per method, 1 to 100 (default 5)")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/<suites>_<device>.json)")
    args = parser.parse_args(argv)
    check_repeat_and_device(parser, args)
    chosen = set(args.suites or ["all"])
    args.suites = SUITES if "all" in chosen else tuple(s for s in SUITES if s in chosen)
    return args


def main(argv: list[str] | None = None) -> Path:
    """Run the chosen suites, print a table per suite and write ``{environment, rows}`` as JSON; return its path."""
    args = parse_args(argv)
    device, quick, repeat = args.device, args.quick, args.repeat
    rows = []
    if "sinkhorn" in args.suites:
        shapes = sinkhorn_suites.QUICK_SHAPES if quick else sinkhorn_suites.SHAPES
        with console.status("Sinkhorn: otkit vs POT, geomloss and the paper's loop..."):
            speed = sinkhorn_suites.sinkhorn_suite(device, shapes=shapes, repeat=repeat, include_slow=not quick)
        rows += speed
        print_table(
            "Sinkhorn, eps 0.05, float32 (ratio = POT batch time / method time)",
            ["problem", "mode", "method", "ms", "ratio"],
            [[r.problem, r.mode, r.method, r.ms, r.ratio] for r in speed],
        )
    if "memory" in args.suites:
        with console.status("Backward memory, unrolled vs implicit..."):
            memory = sinkhorn_suites.sinkhorn_memory_suite(device)
        rows += memory
        print_table(
            "Sinkhorn backward memory at 100 iterations (multiples of the cost matrix)",
            ["problem", "mode", "step peak", "backward peak"],
            [[r.problem, r.mode, r.extra["peak_x_cost"], r.extra["backward_x_cost"]] for r in memory],
        )
    if "operators" in args.suites:
        with console.status("Operators: multi-prompt transport and Sinkhorn attention..."):
            operators = sinkhorn_suites.operators_suite(device, repeat=repeat, quick=quick)
        rows += operators
        print_table(
            "Operators (ratio = paper loop time / method time)",
            ["problem", "method", "ms", "ratio"],
            [[f"{r.suite}: {r.problem}", r.method, r.ms, r.ratio] for r in operators],
        )
    if "model" in args.suites:
        from benchmarks.model_bench import model_suite  # imports otseg, which the other suites do not need

        with console.status("OTSeg ViT-B/16 forward at 512x512..."):
            model = model_suite(device, batch_sizes=(1,) if quick else (1, 4), repeat=1 if quick else 3)
        rows += model
        print_table(
            "OTSeg end to end, one forward at 512x512 (random weights)",
            ["problem", "ms", "Sinkhorn share", "peak MB"],
            [[r.problem, r.ms, r.extra["sinkhorn_share"], r.extra["peak_memory_mb"]] for r in model],
        )
    out = Path(args.out) if args.out else default_out(args.suites, device, quick)
    path = write_json(out, {"environment": environment(device), "rows": rows_as_dicts(rows)})
    console.print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
