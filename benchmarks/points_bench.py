"""Time otkit's point-cloud solvers against geomloss and POT in one process; print tables and write JSON.

Run from the repository root: ``OMP_NUM_THREADS=1 python benchmarks/points_bench.py [--suite divergence]
[--suite large] [--suite attention] [--quick] [--out PATH]``. Suites: ``divergence`` (n = m in 1e3, 5e3, 2e4 and
d in 3, 64 against geomloss tensorized and online/KeOps and POT), ``large`` (n = m = 1e5, d = 3, streamed),
``attention`` (Sinkhorn attention up to L = 16384, streamed and dense). ``OMP_NUM_THREADS`` sets the threads of
every library at once (KeOps reads it when it loads); the JSON records them. Default output:
``benchmarks/results/points_cpu[_quick].json``; ``--merge`` replaces only the rows of the suites run (each run's
environment is kept under ``runs``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: make `benchmarks` importable

from benchmarks import point_suites
from benchmarks.harness import console, environment, print_table, rows_as_dicts, write_json

SUITES = ("divergence", "large", "attention")
RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--suite",
        dest="suites",
        action="append",
        choices=[*SUITES, "all"],
        help="which comparisons to run (repeatable; default all)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per method below n = 5000 (default 3)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000], help="divergence: n = m")
    parser.add_argument("--dims", type=int, nargs="+", default=[3, 64], help="divergence: point dimensions")
    parser.add_argument("--keops-max", type=int, default=20000, help="largest n timed with geomloss online (KeOps)")
    parser.add_argument(
        "--tensorized-max",
        type=int,
        default=5000,
        help="largest n timed with geomloss tensorized and otkit dense (default 5000)",
    )
    parser.add_argument("--large-n", type=int, default=100_000, help="large: n = m (default 100000)")
    parser.add_argument(
        "--attention-dense-max",
        type=int,
        default=16384,
        help="attention: longest L run densely too (default 16384, about 5 GB)",
    )
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/points_cpu.json)")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows of the other suites already in the JSON file (replace only the suites run now)",
    )
    args = parser.parse_args(argv)
    chosen = set(args.suites or ["all"])
    args.suites = SUITES if "all" in chosen else tuple(s for s in SUITES if s in chosen)
    return args


def main(argv: list[str] | None = None) -> Path:
    """Run the chosen suites, print a table per suite and write ``{environment, rows}`` as JSON; return its path."""
    args = parse_args(argv)
    rows = []
    out = Path(args.out) if args.out else RESULTS / f"points_cpu{'_quick' if args.quick else ''}.json"
    env = {
        **environment("cpu"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "load_1min_at_start": os.getloadavg()[0],
    }

    kept, runs = [], []
    if args.merge and out.exists():
        previous = json.loads(out.read_text())
        kept = [r for r in previous["rows"] if r["suite"] not in args.suites]
        earlier = sorted({r["suite"] for r in kept})
        runs = previous.get("runs") or [{"suites": earlier, "environment": previous["environment"]}]
        runs = [r for r in runs if set(r["suites"]) - set(args.suites)]
    runs.append({"suites": list(args.suites), "environment": env})

    def save() -> Path:  # after every suite: a long run that stops keeps what it measured
        return write_json(out, {"environment": env, "runs": runs, "rows": kept + rows_as_dicts(rows)})

    if "divergence" in args.suites:
        sizes, dims = ((300, 1000), (3,)) if args.quick else (tuple(args.sizes), tuple(args.dims))
        with console.status("Sinkhorn divergence: otkit vs geomloss and POT..."):
            found = point_suites.divergence_suite(
                sizes, dims, repeat=args.repeat, keops_max=args.keops_max, tensorized_max=args.tensorized_max
            )
        rows += found
        print_table(
            "Sinkhorn divergence, eps 0.05, unit diameter, float32, forward+backward (x: geomloss time / method's)",
            ["problem", "method", "ms", "x online", "x tensorized", "peak MB", "rel. err"],
            [
                [
                    r.problem,
                    r.method,
                    r.ms,
                    r.ratio,
                    r.extra["x_vs_tensorized"],
                    r.extra["peak_mb"],
                    r.extra["rel_err_vs_converged"],
                ]
                for r in found
            ],
        )
        save()
    if "large" in args.suites:
        with console.status("A large streamed divergence..."):
            found = point_suites.large_suite(n=3000 if args.quick else args.large_n)
        rows += found
        print_table(
            "Large clouds, streamed",
            ["problem", "method", "ms", "peak MB", "reached tol"],
            [[r.problem, r.method, r.ms, r.extra["peak_mb"], r.extra["converged_to_tol"]] for r in found],
        )
        save()
    if "attention" in args.suites:
        lengths = (512, 1024) if args.quick else (2048, 4096, 8192, 16384)
        dense_max = 1024 if args.quick else args.attention_dense_max
        with console.status("Sinkhorn attention, streamed and dense..."):
            found = point_suites.attention_suite(lengths, dense_max)
        rows += found
        print_table(
            "Sinkhorn attention, d 64, forward+backward",
            ["problem", "method", "ms", "peak MB"],
            [[r.problem, r.method, r.ms, r.extra["peak_mb"]] for r in found],
        )
    path = save()
    console.print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
