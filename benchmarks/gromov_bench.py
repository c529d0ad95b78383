"""Time otkit's Gromov-Wasserstein against POT (numpy and torch backends) and ot.batch in one process.

Run from the repository root: ``OMP_NUM_THREADS=1 python benchmarks/gromov_bench.py [--suite batch] [--suite single]
[--suite memory] [--quick] [--out PATH]``. Suites:

- ``batch``: 64 problems, n = m = 100 (squared distances of random 2-D and 3-D clouds, scaled to a unit maximum),
  eps 0.01: otkit batched against POT's ``entropic_gromov_wasserstein`` looped over the problems (numpy and torch
  backends), and otkit's ``solver="ppa"`` against ``ot.batch.solve_gromov_batch`` (the same proximal method: 10
  outer steps each at eps 0.1, every inner solve run to convergence, so that both do the same work and agree);
- ``single``: one problem, n = m = 2000: POT numpy, otkit float64 and float32, and ``gromov_wasserstein_points`` on
  the clouds (``--single-all`` adds POT's torch backend and the proximal pair);
- ``memory``: ``gromov_wasserstein_points`` at n = m = 20000 (``--memory-n``) in float32, streamed: the peak heap
  above the inputs (``benchmarks.harness.PeakMemory``) over a fixed number of outer and inner iterations.

Values are checked: ``rel_diff`` is the largest relative difference of a method's GW distances from POT's numpy
ones (ot.batch's from otkit's proximal solve). Default output: ``benchmarks/results/gromov_cpu[_quick].json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: make `benchmarks` importable

import otkit
from benchmarks.harness import (
    BenchRow,
    PeakMemory,
    console,
    environment,
    print_table,
    rows_as_dicts,
    timed,
    write_json,
)

SUITES = ("batch", "single", "memory")
RESULTS = Path(__file__).resolve().parent / "results"
EPS = 0.01
# The proximal pair: 10 steps at eps 0.1 (at 0.01 the proximal plans sharpen within a few steps and the inner solves
# of both libraries need more than 10000 iterations to converge).
PPA_STEPS, PPA_EPS = 10, 0.1


def clouds(batch: int, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` pairs of clouds: ``x (batch, n, 2)`` in the unit square, ``y (batch, n, 3)`` in the unit cube."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, n, 2, generator=gen, dtype=torch.float64), torch.rand(
        batch, n, 3, generator=gen, dtype=torch.float64
    )


def intra_costs(x: torch.Tensor) -> torch.Tensor:
    """Squared distances within each cloud, scaled to a unit maximum per problem, ``(batch, n, n)``."""
    cost = torch.cdist(x, x) ** 2
    return cost / cost.amax((-2, -1), keepdim=True)


def _pot_loop(Cx: torch.Tensor, Cy: torch.Tensor, backend: str, dtype: torch.dtype) -> Callable[[], np.ndarray]:
    import ot

    def run() -> np.ndarray:
        out = []
        for cx, cy in zip(Cx.to(dtype), Cy.to(dtype), strict=True):
            args = (cx.numpy(), cy.numpy()) if backend == "numpy" else (cx, cy)
            _, log = ot.gromov.entropic_gromov_wasserstein(*args, epsilon=EPS, log=True)
            out.append(float(log["gw_dist"]))
        return np.array(out)

    return run


def _otkit(Cx: torch.Tensor, Cy: torch.Tensor, dtype: torch.dtype, **kwargs) -> Callable[[], np.ndarray]:
    def run() -> np.ndarray:
        settings = {"eps": EPS, **kwargs}
        res = otkit.gromov_wasserstein(Cx.to(dtype), Cy.to(dtype), **settings)  # warns if unconverged
        return res.distance.double().numpy()

    return run


def _otkit_points(x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype) -> Callable[[], np.ndarray]:
    """GW on the clouds themselves: the same problem as on the scaled matrices, the clouds rescaled to match."""
    sx, sy = intra_costs_scale(x), intra_costs_scale(y)

    def run() -> np.ndarray:
        res = otkit.gromov_wasserstein_points((x / sx).to(dtype), (y / sy).to(dtype), eps=EPS)
        return res.distance.double().numpy()

    return run


def intra_costs_scale(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(max_ik |x_i - x_k|^2)`` ``(batch, 1, 1)``: dividing by it brings the largest squared distance to 1."""
    return (torch.cdist(x, x) ** 2).amax((-2, -1), keepdim=True).sqrt()


def _ot_batch(Cx: torch.Tensor, Cy: torch.Tensor) -> Callable[[], np.ndarray]:
    from ot.batch import solve_gromov_batch

    def run() -> np.ndarray:
        out = solve_gromov_batch(Cx, Cy, reg=PPA_EPS, max_iter=PPA_STEPS, tol=0, max_iter_inner=10_000, tol_inner=1e-10)
        return out.value.numpy()

    return run


def gromov_suite(batch: int, n: int, repeat: int, with_points: bool, every_method: bool = True) -> list[BenchRow]:
    """The methods on ``batch`` problems of ``n`` points, ratios to POT's numpy loop (ot.batch: to otkit ppa).

    Without ``every_method``, POT's torch backend and the proximal pair are left out (they run in the batch suite).
    """
    x, y = clouds(batch, n)
    Cx, Cy = intra_costs(x), intra_costs(y)
    name = f"{batch}x{n}x{n}"
    # the proximal method, equal work: 20 outer steps, each inner solve converged (otkit tol 1e-9 on the marginals)
    ppa = dict(solver="ppa", max_outer=PPA_STEPS, outer_tol=None, max_iter=10_000, tol=1e-9, eps=PPA_EPS)
    methods: dict[str, tuple[Callable[[], np.ndarray], int]] = {
        "POT numpy (loop)": (_pot_loop(Cx, Cy, "numpy", torch.float64), 1),
        "otkit float64": (_otkit(Cx, Cy, torch.float64), repeat),
        "otkit float32": (_otkit(Cx, Cy, torch.float32), repeat),
    }
    if every_method:  # POT's torch backend in float64: in float32 its inner stopThr 1e-9 is out of reach
        methods["POT torch float64 (loop)"] = (_pot_loop(Cx, Cy, "torch", torch.float64), 1)
    if with_points:
        methods["otkit points float32"] = (_otkit_points(x, y, torch.float32), repeat)
    if every_method:
        methods["otkit ppa float64"] = (_otkit(Cx, Cy, torch.float64, **ppa), 1)
        methods["ot.batch (ppa) float64"] = (_ot_batch(Cx, Cy), 1)
    measured = {}
    for method, (run, times) in methods.items():
        with console.status(f"GW {name}: {method}..."):
            ms, values = timed(run, repeat=times)
            measured[method] = ms, np.asarray(values, dtype=np.float64)
    rows = []
    for method, (ms, values) in measured.items():
        proximal = "ppa" in method
        reference = "otkit ppa float64" if method.startswith("ot.batch") else "POT numpy (loop)"
        if method == "otkit ppa float64":
            reference = "ot.batch (ppa) float64"
        ref_ms, ref_values = measured[reference]
        rel = float(np.max(np.abs(values - ref_values) / np.abs(ref_values)))
        rows.append(
            BenchRow(
                "gromov",
                name,
                "ppa" if proximal else "pgd",
                method,
                ms,
                ratio=ref_ms / ms if method != reference else 1.0,
                reference=reference,
                extra={"rel_diff": rel, "mean_value": float(values.mean())},
            )
        )
    return rows


def memory_suite(n: int, outer: int, inner: int) -> list[BenchRow]:
    """Peak heap of a streamed point-cloud GW solve at n = m, float32, over ``outer`` x ``inner`` iterations."""
    x, y = (c[0].float() for c in clouds(1, n, seed=1))
    x, y = x / 2**0.5, y / 3**0.5  # unit diameters: the unit square and cube scaled by their diagonals
    settings = dict(eps=0.05, max_outer=outer, outer_tol=None, max_iter=inner, tol=None)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", otkit.ConvergenceWarning)  # a fixed iteration count, by design
        with PeakMemory("cpu") as mem:
            res = otkit.gromov_wasserstein_points(x, y, **settings)
            value = float(res.value)
    ms = (time.perf_counter() - start) * 1e3
    peak = None if mem.peak is None else mem.peak / 2**20
    dense_mb = 4 * n * n / 2**20  # one float32 n x n matrix, which no step forms
    return [
        BenchRow(
            "gromov-memory",
            f"{n}x{n}, d 2 vs 3",
            f"{outer} outer x {inner} inner iterations",
            "otkit points float32 (streamed)",
            ms,
            extra={"peak_mb": peak, "one_dense_matrix_mb": dense_mb, "value": value, "n_inner": res.n_inner},
        )
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", dest="suites", action="append", choices=[*SUITES, "all"], help="repeatable")
    parser.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of the otkit and ot.batch methods")
    parser.add_argument("--batch-n", type=int, default=100, help="batch: points per problem (64 problems)")
    parser.add_argument("--single-n", type=int, default=2000, help="single: points of the one problem")
    parser.add_argument(
        "--single-all", action="store_true", help="single: also POT's torch backend and the proximal pair (slow)"
    )
    parser.add_argument("--memory-n", type=int, default=20000, help="memory: points of each cloud")
    parser.add_argument("--memory-outer", type=int, default=2, help="memory: outer iterations")
    parser.add_argument("--memory-inner", type=int, default=5, help="memory: inner iterations per outer one")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/gromov_cpu.json)")
    args = parser.parse_args(argv)
    chosen = set(args.suites or ["all"])
    args.suites = SUITES if "all" in chosen else tuple(s for s in SUITES if s in chosen)
    return args


def _table(title: str, rows: list[BenchRow]) -> None:
    print_table(
        title,
        ["problem", "method", "ms", "x vs reference", "reference", "rel. diff"],
        [[r.problem, r.method, r.ms, r.ratio, r.reference, r.extra["rel_diff"]] for r in rows],
    )


def main(argv: list[str] | None = None) -> Path:
    """Run the chosen suites, print their tables and write ``{environment, rows}`` as JSON; return its path."""
    args = parse_args(argv)
    out = Path(args.out) if args.out else RESULTS / f"gromov_cpu{'_quick' if args.quick else ''}.json"
    env = {**environment("cpu"), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "load_1min": os.getloadavg()[0]}
    rows: list[BenchRow] = []

    def save() -> Path:
        return write_json(out, {"environment": env, "eps": EPS, "rows": rows_as_dicts(rows)})

    if "batch" in args.suites:
        found = gromov_suite(4 if args.quick else 64, 30 if args.quick else args.batch_n, args.repeat, False)
        rows += found
        _table(f"GW, batch of problems, eps {EPS} (x: reference time / method's)", found)
        save()
    if "single" in args.suites:
        n = 200 if args.quick else args.single_n
        found = gromov_suite(1, n, 1 if not args.quick else args.repeat, True, args.quick or args.single_all)
        rows += found
        _table(f"GW, one problem, eps {EPS} (x: reference time / method's)", found)
        save()
    if "memory" in args.suites:
        n = 4000 if args.quick else args.memory_n
        found = memory_suite(n, args.memory_outer, 2 if args.quick else args.memory_inner)
        rows += found
        print_table(
            "GW between point clouds, streamed: peak working memory",
            ["problem", "iterations", "ms", "peak MB", "one n x n matrix MB"],
            [[r.problem, r.mode, r.ms, r.extra["peak_mb"], r.extra["one_dense_matrix_mb"]] for r in found],
        )
    path = save()
    console.print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
