"""``otkit``: benchmarks and a short showcase of the solver."""

from __future__ import annotations

import click
import torch

from cli.common import console, print_table, write_json

SUITES = ("sinkhorn", "memory", "operators", "model")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """otkit: fast batched differentiable optimal transport for PyTorch."""


@main.command()
@click.option(
    "--suite",
    "suites",
    type=click.Choice([*SUITES, "all"]),
    multiple=True,
    default=("all",),
    show_default=True,
    help="Which comparisons to run (repeatable).",
)
@click.option("--device", default="cpu", show_default=True, help="Torch device, e.g. cpu or cuda.")
@click.option("--quick", is_flag=True, help="Only the smallest shape and no per-problem POT loop.")
@click.option("--repeat", type=click.IntRange(1, 100), default=5, show_default=True, help="Timed runs per method.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the rows and environment as JSON.")
def bench(suites: tuple[str, ...], device: str, quick: bool, repeat: int, out: str | None) -> None:
    """Time otkit against POT, geomloss and the paper's loop in one process; print ratios."""
    from otkit import bench as benchmarks

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise click.BadParameter("CUDA is not available on this machine; use --device cpu.", param_hint="--device")
    chosen = SUITES if "all" in suites else suites
    rows = []
    if "sinkhorn" in chosen:
        shapes = benchmarks.QUICK_SHAPES if quick else benchmarks.SHAPES
        with console.status("Sinkhorn: otkit vs POT, geomloss and the paper's loop..."):
            rows += benchmarks.sinkhorn_suite(device, shapes=shapes, repeat=repeat, include_slow=not quick)
        print_table(
            "Sinkhorn, eps 0.05, float32 (ratio = POT batch time / method time)",
            ["problem", "mode", "method", "ms", "ratio"],
            [[r.problem, r.mode, r.method, r.ms, r.ratio] for r in rows if r.suite == "sinkhorn"],
        )
    if "memory" in chosen:
        with console.status("Backward memory, unrolled vs implicit..."):
            mem = benchmarks.sinkhorn_memory_suite(device)
        rows += mem
        print_table(
            "Sinkhorn backward memory at 100 iterations (multiples of the cost matrix)",
            ["problem", "mode", "step peak", "backward peak"],
            [[r.problem, r.mode, r.extra["peak_x_cost"], r.extra["backward_x_cost"]] for r in mem],
        )
    if "operators" in chosen:
        with console.status("Operators: multi-prompt transport and Sinkhorn attention..."):
            ops = benchmarks.operators_suite(device, repeat=repeat, quick=quick)
        rows += ops
        print_table(
            "Operators (ratio = paper loop time / method time)",
            ["problem", "method", "ms", "ratio"],
            [[f"{r.suite}: {r.problem}", r.method, r.ms, r.ratio] for r in ops],
        )
    if "model" in chosen:
        from otseg.benchmark import model_suite

        with console.status("OTSeg ViT-B/16 forward at 512x512..."):
            model_rows = model_suite(device, batch_sizes=(1,) if quick else (1, 4), repeat=1 if quick else 3)
        rows += model_rows
        print_table(
            "OTSeg end to end, one forward at 512x512 (random weights)",
            ["problem", "ms", "Sinkhorn share", "peak MB"],
            [[r.problem, r.ms, r.extra["sinkhorn_share"], r.extra["peak_memory_mb"]] for r in model_rows],
        )
    if out:
        path = write_json(out, {"environment": benchmarks.environment(device), "rows": benchmarks.rows_as_dicts(rows)})
        console.print(f"wrote {path}")
