"""GPU benchmark: otkit's fused Triton Sinkhorn kernel against otkit's PyTorch loops, POT and the paper's loop.

Run on a CUDA machine (written for one H100 SXM): ``python benchmarks/gpu_sinkhorn_bench.py [--repeat 20]
[--out PATH]`` (or ``python -m benchmarks.gpu_sinkhorn_bench``). It refuses to run without CUDA. Everything runs
in one process, on the same problems.

Problems: the multi-prompt shapes ``(P, n, m)`` for ``P in {80, 684}`` (OTSeg's B*K for VOC and COCO-Stuff at
batch 4), ``n = 1024`` pixels, ``m in {6, 8}`` prompts: cost ``1 - cos`` of random unit features, float32,
eps 0.05, uniform marginals. Modes: ``fixed100`` (exactly 100 iterations, every stopping rule off) and
``converge`` (tol 1e-6 in each method's own stopping rule, at most 1000 iterations).

Methods:

- ``triton.kernel``: :func:`otkit.dense.kernel.triton_sinkhorn` on the flat batch (potentials, per-problem iteration
  counts and errors: the kernel and its four output allocations), default launch configuration; in ``fixed100``
  also ``triton.kernel[w=K]``, the same with K warps per program, to show the launch configuration's effect.
- ``otkit[triton]`` / ``otkit[torch]``: ``otkit.sinkhorn(cost, ...).plan`` end to end (input checks with their
  host reads, iterations, plan) with ``backend="triton"`` / ``backend="torch"`` (domain ``auto``). The row of
  ``otkit[triton]`` records its largest relative plan difference to ``backend="torch", domain="log"``: float32
  rounding in ``fixed100``; in ``converge`` the kernel stops each problem at its own first converged check and
  the PyTorch loop runs all until the last one converges, so there they agree to the tolerance.
- ``pot.batch``: ``ot.batch.solve_batch(cost, reg=eps, method="log_sinkhorn", reg_type="kl").plan``.
- ``paper_loop``: :func:`benchmarks.sinkhorn_suites.paper_loop_sinkhorn`, OTSeg's loop (a host read every
  iteration).

Timing: CUDA events around each call, median of ``--repeat`` calls after one warm-up call (which also compiles the
kernel). Ratios are paper-loop time / method time and POT time / method time.

Bounds for ``triton.kernel`` (``fraction`` = bound time / measured time, so 1.0 would be at the bound):

- Transcendental (MUFU) throughput. Useful ``exp2`` count per problem ``(2 n_iter + 1) n m``: each iteration
  takes one ``exp2`` per entry in the row log-sum-exp (``f``) and one in the column log-sum-exp (``g``), and the
  final ``f`` pass one more per entry; ``log2`` count ``(n_iter + 1) n + n_iter m``. Padding lanes (m = 6 runs
  on 8 lanes) and the per-block rescalings are not counted. ``n_iter`` is each problem's own count. Peak: 132 SMs
  x 16 MUFU results per clock per SM (CUDA C++ Programming Guide, arithmetic instruction throughput, compute
  capability 9.0: exp2/log2 16 per clock per SM) x 1.98 GHz (H100 SXM5 maximum boost) = 4.18e12 per second;
  at a lower sustained clock the true bound is proportionally longer.
  ``fraction_mufu_used_sms`` compares with the peak of the ``min(P, SMs)`` SMs that get a program at all (one
  program per problem: at P = 80, 52 of the 132 SMs stay idle). The FP32 pipe is not the limit: about 8 FP32
  operations per entry and iteration at 128 per clock per SM take half the MUFU time.
- Memory bandwidth. Bytes moved: the cost is read once when the padded tile fits the registers (``n_pad m_pad <=
  otkit.dense.kernel.RESIDENT_ELEMENTS``, true for all four shapes here), else once per iteration plus once for the
  final ``f`` pass; plus a, b read and f, g written once (4 bytes each). Peak: 3.35e12 bytes per second (H100 SXM5
  HBM3). For resident problems this bound is microseconds: the kernel is compute bound by design.

The peaks are constants for an H100 SXM5; on another GPU the fractions are relative to those numbers (the file
records the device name). Results go to ``benchmarks/results/gpu_sinkhorn_<device>.json``.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: make `benchmarks` importable

import torch

from benchmarks.harness import BenchRow, environment, print_table, rows_as_dicts, write_json
from benchmarks.sinkhorn_suites import multi_prompt_cost, paper_loop_sinkhorn
from otkit import SinkhornOptions, sinkhorn
from otkit.dense.backend import unavailable_reason

SHAPES = ((80, 1024, 6), (80, 1024, 8), (684, 1024, 6), (684, 1024, 8))
DEVICE = "cuda"
EPS = 0.05
MODES = (("fixed100", 100, None), ("converge", 1000, 1e-6))
WARPS = (4, 8, 16)

# H100 SXM5 peaks assumed by the bounds (see the module docstring for the sources).
H100_SMS = 132
H100_CLOCK_HZ = 1.98e9  # maximum boost clock
MUFU_PER_CLOCK_PER_SM = 16  # exp2 / log2 results per clock per SM, compute capability 9.0
PEAK_MUFU_PER_S = H100_SMS * MUFU_PER_CLOCK_PER_SM * H100_CLOCK_HZ  # 4.18e12
PEAK_HBM_BYTES_PER_S = 3.35e12  # HBM3


def cuda_time_ms(fn: Callable[[], Any], repeat: int) -> float:
    """Median milliseconds of ``fn()`` between two CUDA events, after one warm-up call."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def kernel_bounds(cost: torch.Tensor, n_iter: torch.Tensor) -> dict[str, float]:
    """Bound times in ms (MUFU throughput, memory bandwidth) of the kernel's work on ``cost`` ``(P, n, m)``."""
    problems, n, m = cost.shape
    iters = n_iter.double()
    exp2 = float(((2 * iters + 1) * n * m).sum())
    log2 = float(((iters + 1) * n + iters * m).sum())
    from otkit.dense.kernel import launch_config  # imports triton: only on a machine that runs the kernel

    resident = launch_config(n, m)[2]
    cost_reads = 1.0 if resident else float((iters + 1).mean())
    bytes_moved = problems * (cost_reads * n * m * cost.element_size() + 2 * 4 * (n + m))
    used_sms = min(problems, H100_SMS)
    return {
        "mufu_ops": exp2 + log2,
        "mufu_bound_ms": (exp2 + log2) / PEAK_MUFU_PER_S * 1e3,
        "mufu_bound_used_sms_ms": (exp2 + log2) / (PEAK_MUFU_PER_S * used_sms / H100_SMS) * 1e3,
        "bytes": bytes_moved,
        "memory_bound_ms": bytes_moved / PEAK_HBM_BYTES_PER_S * 1e3,
    }


def pot_batch(cost: torch.Tensor, max_iter: int, tol: float | None) -> Callable[[], torch.Tensor] | None:
    try:
        import ot
    except ImportError:
        return None
    return lambda: (
        ot.batch.solve_batch(
            cost, reg=EPS, max_iter=max_iter, tol=tol or 0.0, method="log_sinkhorn", reg_type="kl", grad="detach"
        ).plan
    )


def bench_shape(shape: tuple[int, int, int], repeat: int) -> list[BenchRow]:
    from otkit.dense.kernel import triton_sinkhorn  # imports triton: only on a machine that runs the kernel

    cost = multi_prompt_cost(*shape, device=DEVICE)
    problems, n, m = shape
    a = torch.full((problems, n), 1.0 / n, device=DEVICE)
    b = torch.full((problems, m), 1.0 / m, device=DEVICE)
    label = "x".join(map(str, shape))
    rows = []
    for mode, max_iter, tol in MODES:
        kw = dict(eps=EPS, max_iter=max_iter, tol=tol)
        kernel_args = (cost, a, b, SinkhornOptions(eps=EPS, max_iter=max_iter, tol=tol, check_every=10), None)
        methods: dict[str, Callable[[], Any]] = {
            "triton.kernel": lambda args=kernel_args: triton_sinkhorn(*args),
            "otkit[triton]": lambda kw=kw: sinkhorn(cost, backend="triton", **kw).plan,
            "otkit[torch]": lambda kw=kw: sinkhorn(cost, backend="torch", **kw).plan,
            "paper_loop": lambda mi=max_iter, t=tol: paper_loop_sinkhorn(cost, EPS, mi, t or 0.0),
        }
        pot = pot_batch(cost, max_iter, tol)
        if pot is not None:
            methods["pot.batch"] = pot
        if mode == "fixed100":
            for warps in WARPS:
                methods[f"triton.kernel[w={warps}]"] = lambda args=kernel_args, w=warps: triton_sinkhorn(
                    *args, num_warps=w
                )
        times = {name: cuda_time_ms(fn, repeat) for name, fn in methods.items()}

        _, _, n_iter, err = triton_sinkhorn(*kernel_args)
        fast = sinkhorn(cost, backend="triton", **kw)
        ref = sinkhorn(cost, backend="torch", domain="log", **kw)
        agreement = float(((fast.plan.double() - ref.plan.double()).abs() / ref.plan.double()).max())
        bounds = kernel_bounds(cost, n_iter)
        for name, ms in times.items():
            extra: dict[str, Any] = {"x_vs_pot": times["pot.batch"] / ms if "pot.batch" in times else None}
            if name.startswith("triton.kernel"):
                extra.update(
                    n_iter_max=int(n_iter.max()),
                    n_iter_mean=float(n_iter.float().mean()),
                    max_error=float(err.max()),
                    fraction_mufu=bounds["mufu_bound_ms"] / ms,
                    fraction_mufu_used_sms=bounds["mufu_bound_used_sms_ms"] / ms,
                    fraction_memory=bounds["memory_bound_ms"] / ms,
                    **bounds,
                )
            if name == "otkit[triton]":
                extra.update(max_rel_err_vs_torch_log=agreement, n_iter=fast.n_iter, n_iter_torch=ref.n_iter)
            rows.append(BenchRow("gpu-sinkhorn", label, mode, name, ms, times["paper_loop"] / ms, "paper_loop", extra))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=20, help="timed calls per method (median reported)")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/gpu_sinkhorn_<gpu>.json)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit(
            "gpu_sinkhorn_bench.py needs a CUDA GPU and torch.cuda.is_available() is False here. Run it on a CUDA "
            "machine; for the CPU comparison run benchmarks/sinkhorn_bench.py."
        )
    reason = unavailable_reason(torch.zeros(1, 1, 8, device=DEVICE))
    if reason is not None:
        sys.exit(f"gpu_sinkhorn_bench.py needs the Triton kernel, which cannot run: {reason}.")
    device_name = torch.cuda.get_device_name()
    if "H100" not in device_name:
        print(f"note: {device_name} is not an H100; the bound fractions use H100 SXM5 peak numbers.")
    rows = [row for shape in SHAPES for row in bench_shape(shape, args.repeat)]
    print_table(
        f"Sinkhorn on {device_name}, eps {EPS}, float32 (x paper = paper loop time / method time)",
        ["problem", "mode", "method", "ms", "x paper", "x POT", "of MUFU", "of MUFU (SMs used)", "of HBM"],
        [
            [
                r.problem,
                r.mode,
                r.method,
                r.ms,
                r.ratio,
                r.extra.get("x_vs_pot"),
                r.extra.get("fraction_mufu"),
                r.extra.get("fraction_mufu_used_sms"),
                r.extra.get("fraction_memory"),
            ]
            for r in rows
        ],
    )
    slug = re.sub(r"[^a-z0-9]+", "_", device_name.lower()).strip("_")
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / f"gpu_sinkhorn_{slug}.json"
    peaks = {
        "sms": H100_SMS,
        "clock_hz": H100_CLOCK_HZ,
        "mufu_per_clock_per_sm": MUFU_PER_CLOCK_PER_SM,
        "mufu_per_s": PEAK_MUFU_PER_S,
        "hbm_bytes_per_s": PEAK_HBM_BYTES_PER_S,
    }
    payload = {"environment": environment("cuda"), "assumed_peaks": peaks, "rows": rows_as_dicts(rows)}
    print(f"wrote {write_json(out, payload)}")


if __name__ == "__main__":
    main()
