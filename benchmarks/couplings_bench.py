"""Minibatch OT couplings: otkit.couplings.OTPlanSampler against torchcfm 1.0.7's, in one process; ratios and JSON.

Run from the repository root: ``python benchmarks/couplings_bench.py [--quick] [--repeat 5] [--out PATH]`` (or
``python -m benchmarks.couplings_bench``). For each batch size (256, 1024), dimension (2, 3072) and method
(``"exact"``, ``"sinkhorn"`` with reg 0.05), both samplers draw a full OT-CFM minibatch (``sample_plan``) from
the same float32 noise and data batches, interleaved round by round (median of ``--repeat`` rounds); ratio =
torchcfm time / otkit time. Equal values are checked: the exact total costs agree (relative 1e-6) and the
entropic plans agree in L1. ``cost_product_ms`` is the time of the cost's matrix product ``x0 @ x1.T`` alone (in
the same rounds), and ``ratio_bound`` torchcfm's time over it: the largest ratio a sampler that forms the squared
distances can reach. The Sinkhorn rows use ``normalize_cost=True`` on both sides: with reg 0.05, unnormalised
squared distances in 3072 dims (about 6000) underflow POT's kernel (its plan falls back to uniform) and exceed
float32's resolution for otkit. Threads: ``OMP_NUM_THREADS`` (1 by default here, like POT's single-threaded
network simplex).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: make `benchmarks` importable

import torch

from benchmarks.harness import (
    BenchRow,
    console,
    environment,
    interleaved_ms,
    print_table,
    rows_as_dicts,
    write_json,
)

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = ((256, 2), (256, 3072), (1024, 2), (1024, 3072))
QUICK_SIZES = ((64, 2), (64, 3072))
METHODS = ("exact", "sinkhorn")
REG = 0.05


def batches(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A noise batch and a data batch ``(n, d)``: standard normal, and a shifted, squeezed normal."""
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, d, generator=gen)
    x1 = 0.5 * torch.randn(n, d, generator=gen) + 1.0
    return x0, x1


def coupling_suite(sizes: tuple[tuple[int, int], ...], repeat: int) -> list[BenchRow]:
    """Time both samplers' ``sample_plan`` on every size and method; check the values agree."""
    import numpy as np
    from torchcfm.optimal_transport import OTPlanSampler as TorchCFMSampler

    from otkit.couplings import OTPlanSampler

    rows = []
    for n, d in sizes:
        x0, x1 = batches(n, d)
        for method in METHODS:
            options = {"reg": REG, "normalize_cost": method == "sinkhorn"}
            ours, theirs = OTPlanSampler(method, **options), TorchCFMSampler(method, **options)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # POT's and otkit's convergence notes are read from the values
                ours_plan, theirs_plan = ours.coupling(x0, x1), theirs.get_map(x0, x1)
                # in the same rounds (a drifting machine load hits all three alike): both samplers, and the
                # cost's matrix product alone, a floor for any sampler that forms the squared distances
                times = interleaved_ms(
                    {
                        "torchcfm": lambda s=theirs, a=x0, b=x1: s.sample_plan(a, b),
                        "otkit": lambda s=ours, a=x0, b=x1: s.sample_plan(a, b),
                        "product": lambda a=x0, b=x1: a @ b.T,
                    },
                    repeat,
                    "cpu",
                )
                theirs_ms, ours_ms, product_ms = times["torchcfm"], times["otkit"], times["product"]
            cost = ours_plan.cost.double().numpy()
            extra = {"batch": n, "dim": d, "reg": REG if method == "sinkhorn" else None}
            extra |= {"cost_product_ms": product_ms, "ratio_bound": theirs_ms / product_ms}
            if method == "exact":
                ours_value, theirs_value = float(ours_plan.value), float((theirs_plan * cost).sum())
                extra |= {"otkit_cost": ours_value, "torchcfm_cost": theirs_value}
                extra["relative_cost_gap"] = abs(ours_value - theirs_value) / abs(theirs_value)
            else:
                extra["plan_l1_gap"] = float(np.abs(ours_plan.plan.double().numpy() - theirs_plan).sum())
                extra["otkit_converged"] = bool(ours_plan.converged.all())
            problem = f"batch {n}, d {d}"
            rows.append(BenchRow("couplings", problem, method, "torchcfm 1.0.7", theirs_ms, 1.0, "torchcfm", extra))
            rows.append(
                BenchRow("couplings", problem, method, "otkit", ours_ms, theirs_ms / ours_ms, "torchcfm", extra)
            )
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 64 only (the test suite runs this)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per sampler, 1 to 100 (default 5)")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/couplings_cpu.json)")
    args = parser.parse_args(argv)
    if not 1 <= args.repeat <= 100:
        parser.error(f"--repeat must be between 1 and 100, got {args.repeat}")
    return args


def main(argv: list[str] | None = None) -> Path:
    """Run the suite, print its table and write ``{environment, rows}`` as JSON; return the path."""
    args = parse_args(argv)
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
    with console.status("Minibatch couplings: otkit vs torchcfm..."):
        rows = coupling_suite(QUICK_SIZES if args.quick else SIZES, args.repeat)
    print_table(
        "OT-CFM sample_plan (ratio = torchcfm time / otkit time)",
        ["problem", "method", "sampler", "ms", "ratio", "cost gap / plan L1 gap"],
        [
            [r.problem, r.mode, r.method, r.ms, r.ratio, r.extra.get("relative_cost_gap", r.extra.get("plan_l1_gap"))]
            for r in rows
        ],
    )
    out = Path(args.out) if args.out else RESULTS / f"couplings_cpu{'_quick' if args.quick else ''}.json"
    path = write_json(out, {"environment": environment("cpu"), "rows": rows_as_dicts(rows)})
    console.print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
