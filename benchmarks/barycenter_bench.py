"""Time otkit's barycenters against POT's in one process, check that the values agree; print tables, write JSON.

Run from the repository root: ``OMP_NUM_THREADS=1 python benchmarks/barycenter_bench.py [--suite convolutional]
[--suite fixed] [--quick] [--out PATH]``. Suites: ``convolutional`` (``k`` images of 256 x 256 at eps 0.004
and 0.001, against ``ot.bregman.convolutional_barycenter2d`` in its log and scaling domains) and ``fixed`` (``k``
histograms on ``n`` points against ``ot.bregman.barycenter``). Both sides run the same number of iterations (no
early stop): otkit's log-domain iterates and POT's ``sinkhorn_log`` iterates are the same, and the JSON records
their largest difference relative to the barycenter's maximum (``max_rel_diff_vs_pot_log``). POT's scaling domain
starts from another point (its values are not compared). Default output:
``benchmarks/results/barycenter_cpu[_quick].json``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import ot
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: make `benchmarks` importable

import otkit
from benchmarks.harness import (
    BenchRow,
    check_repeat_and_device,
    environment,
    print_table,
    rows_as_dicts,
    time_call,
    timed,
    write_json,
)

SUITES = ("convolutional", "fixed")
RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", dest="suites", action="append", choices=[*SUITES, "all"], help="default all")
    parser.add_argument("--quick", action="store_true", help="small sizes, few iterations (a smoke run)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of the otkit methods (default 3)")
    parser.add_argument("--size", type=int, default=256, help="convolutional: image side (default 256)")
    parser.add_argument("--images", type=int, default=4, help="convolutional: k images (default 4)")
    parser.add_argument("--iters", type=int, default=10, help="iterations of every method (default 10)")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/barycenter_cpu.json)")
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    check_repeat_and_device(parser, args)
    chosen = set(args.suites or ["all"])
    args.suites = SUITES if "all" in chosen else tuple(s for s in SUITES if s in chosen)
    if args.quick:
        args.size, args.images, args.iters, args.repeat = 32, 3, 3, 1
    return args


def shapes(k: int, size: int) -> torch.Tensor:
    """``k`` normalised float64 images ``(k, size, size)``: discs and rings at different places, on a 1e-6 floor."""
    t = torch.linspace(0, 1, size, dtype=torch.float64)
    y, x = torch.meshgrid(t, t, indexing="ij")
    images = []
    for i in range(k):
        cx, cy = 0.25 + 0.5 * (i % 2), 0.25 + 0.5 * ((i // 2) % 2)
        r = torch.sqrt((x - cx) ** 2 + (y - cy) ** 2)
        images.append(((r < 0.15) & ((r > 0.08) | (i % 2 == 0))).double() + 1e-6)
    images = torch.stack(images)
    return images / images.sum((-1, -2), keepdim=True)


def _row(suite, problem, mode, method, ms, reference_ms, reference, **extra) -> BenchRow:
    ratio = None if ms is None or reference_ms is None else reference_ms / ms
    return BenchRow(suite, problem, mode, method, ms, ratio, reference, extra)


def convolutional_suite(args: argparse.Namespace) -> list[BenchRow]:
    """eps 0.004 (otkit's shifted products) and eps 0.001 (beyond them: its blocked products), fewer iterations."""
    rows = []
    for eps, iters in ((0.004, args.iters), (0.001, max(1, args.iters // 3))):
        rows += _convolutional_problem(args, eps, iters)
    return rows


def _convolutional_problem(args: argparse.Namespace, eps: float, iters: int) -> list[BenchRow]:
    images = shapes(args.images, args.size)
    weights = torch.full((args.images,), 1.0 / args.images, dtype=torch.float64)
    problem = f"{args.images} x {args.size}x{args.size}, eps {eps}"
    mode = f"{iters} iterations"

    def pot(method):
        return ot.bregman.convolutional_barycenter2d(
            images.numpy(), eps, weights=weights.numpy(), method=method, numItermax=iters, stopThr=0.0, warn=False
        )

    def ours(dtype):
        return otkit.convolutional_barycenter(images.to(dtype), weights, eps, tol=None, max_iter=iters)

    pot_log_ms, reference = timed(lambda: pot("sinkhorn_log"))  # one run: seconds per iteration at 256 x 256
    with np.errstate(all="ignore"):  # POT's scaling domain underflows at small eps (its values are not used)
        pot_kernel_ms = time_call(lambda: pot("sinkhorn"), repeat=1, warmup=0)
    rows = [
        _row("convolutional", problem, mode, "POT sinkhorn_log (numpy)", pot_log_ms, pot_log_ms, "POT sinkhorn_log"),
        _row(
            "convolutional",
            problem,
            mode,
            "POT sinkhorn (numpy, scaling)",
            pot_kernel_ms,
            pot_log_ms,
            "POT sinkhorn_log",
            ratio_vs_pot_scaling=1.0,
        ),
    ]
    for dtype in (torch.float64, torch.float32):
        res = ours(dtype)
        ms = time_call(lambda dtype=dtype: ours(dtype), repeat=args.repeat)
        diff = float(np.abs(res.barycenter.double().numpy() - reference).max() / reference.max())
        rows.append(
            _row(
                "convolutional",
                problem,
                mode,
                f"otkit {str(dtype).split('.')[-1]} ({res.method})",
                ms,
                pot_log_ms,
                "POT sinkhorn_log",
                ratio_vs_pot_scaling=pot_kernel_ms / ms,
                max_rel_diff_vs_pot_log=diff,
            )
        )
    return rows


def fixed_suite(args: argparse.Namespace) -> list[BenchRow]:
    n, k, eps, iters = (100, 3, 2e-3, args.iters) if args.quick else (1000, 8, 2e-3, args.iters * 10)
    t = torch.linspace(0, 1, n, dtype=torch.float64)
    cost = (t[:, None] - t) ** 2
    gen = torch.Generator().manual_seed(0)
    centres = torch.rand(k, generator=gen, dtype=torch.float64)
    hists = torch.exp(-((t - centres[:, None]) ** 2) / 0.005) + 1e-6
    hists = hists / hists.sum(-1, keepdim=True)
    problem, mode = f"k={k} n={n}, eps {eps}", f"{iters} iterations"

    def pot(method):
        return ot.bregman.barycenter(
            hists.T.numpy(), cost.numpy(), eps, method=method, numItermax=iters, stopThr=0.0, warn=False
        )

    def ours():
        return otkit.sinkhorn_barycenter(hists, cost, eps=eps, tol=None, max_iter=iters)

    pot_log_ms, reference = timed(lambda: pot("sinkhorn_log"))  # one run: seconds per iteration at 256 x 256
    pot_kernel_ms = time_call(lambda: pot("sinkhorn"), repeat=1, warmup=0)
    bar = ours().barycenter.numpy()
    ms = time_call(ours, repeat=args.repeat)
    return [
        _row("fixed", problem, mode, "POT sinkhorn_log (numpy)", pot_log_ms, pot_log_ms, "POT sinkhorn_log"),
        _row(
            "fixed",
            problem,
            mode,
            "POT sinkhorn (numpy, scaling)",
            pot_kernel_ms,
            pot_log_ms,
            "POT sinkhorn_log",
            ratio_vs_pot_scaling=1.0,
        ),
        _row(
            "fixed",
            problem,
            mode,
            "otkit float64",
            ms,
            pot_log_ms,
            "POT sinkhorn_log",
            ratio_vs_pot_scaling=pot_kernel_ms / ms,
            max_rel_diff_vs_pot_log=float(np.abs(bar - reference).max() / reference.max()),
        ),
    ]


def main(argv: list[str] | None = None) -> Path:
    """Run the chosen suites, print a table per suite and write ``{environment, rows}`` as JSON; return its path."""
    args = parse_args(argv)
    out = Path(args.out) if args.out else RESULTS / f"barycenter_cpu{'_quick' if args.quick else ''}.json"
    env = {**environment("cpu"), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}
    env["load_1min_at_start"] = os.getloadavg()[0]
    rows: list[BenchRow] = []
    for suite in args.suites:
        suite_rows = convolutional_suite(args) if suite == "convolutional" else fixed_suite(args)
        print_table(
            f"barycenters: {suite}",
            ["problem", "mode", "method", "ms", "x POT log", "x POT scaling", "max rel diff vs POT log"],
            [
                [
                    r.problem,
                    r.mode,
                    r.method,
                    r.ms,
                    r.ratio,
                    r.extra.get("ratio_vs_pot_scaling"),
                    r.extra.get("max_rel_diff_vs_pot_log"),
                ]
                for r in suite_rows
            ],
        )
        rows += suite_rows
    return write_json(out, {"environment": env, "rows": rows_as_dicts(rows)})


if __name__ == "__main__":
    main()
