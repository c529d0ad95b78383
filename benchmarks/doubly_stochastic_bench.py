"""Doubly-stochastic layers: otkit.sinkhorn_knopp against the papers' loop, eager and compiled, in one process.

Run from the repository root: ``python benchmarks/doubly_stochastic_bench.py [--device cpu] [--quick]
[--repeat 7] [--threads 1] [--no-compile] [--out PATH]`` (or ``python -m benchmarks.doubly_stochastic_bench``).

Problems: ``(65536, 4, 4)`` (the 4 x 4 mixing matrices of manifold-constrained hyper-connections, one per token)
and ``(4096, 16, 16)``; ``--quick``: ``(1024, 4, 4)`` and ``(64, 16, 16)``. ``log_alpha ~ N(0, 1)`` in float32,
``tau = 1``, 20 iterations. One call is forward + backward: ``out = f(x)``, then
``torch.autograd.grad((out * w).sum(), x)`` for a fixed random ``w``.

Methods:

- ``loop[eager]``: the loop as the papers write it (``x - logsumexp(x, -1)``, ``x - logsumexp(x, -2)``, 20
  times, then ``exp``), autograd through every iteration: the reference.
- ``loop[compile]``: the same function under ``torch.compile`` (inductor); compiling is done before timing and
  its duration recorded (``compile_s``). Skipped with ``--no-compile``.
- ``otkit``: ``otkit.sinkhorn_knopp(x, 20, 1.0)``, the unrolled gradient by its reverse pass.

Every method's output and gradient are compared with the reference's (``max_out_diff``, ``max_grad_diff``); the
script fails if either exceeds 1e-5. ``saved_x_input`` is the bytes autograd keeps for the backward
(``saved_tensors_hooks``) over the input's bytes. Timing: rounds that call every method once, in turn, so that a
shared machine's load hits all methods alike; ``ms`` is the median over ``--repeat`` rounds after one warm-up
round. ``ratio`` = ``loop[eager]`` time / method time, and ``vs_compiled`` = ``loop[compile]`` time / method time.
Results go to ``benchmarks/results/doubly_stochastic_<device>[_quick].json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: make `benchmarks` importable

import torch
from torch import Tensor

import otkit
from benchmarks.harness import (
    BenchRow,
    check_repeat_and_device,
    console,
    environment,
    interleaved_ms,
    print_table,
    rows_as_dicts,
    write_json,
)

SHAPES = ((65536, 4, 4), (4096, 16, 16))
QUICK_SHAPES = ((1024, 4, 4), (64, 16, 16))
N_ITER, TAU, TOLERANCE = 20, 1.0, 1e-5
RESULTS = Path(__file__).resolve().parent / "results"


def plain_loop(log_alpha: Tensor, n_iter: int = N_ITER, tau: float = TAU) -> Tensor:
    """Sinkhorn-Knopp as the papers write it (square matrices), autograd through every iteration."""
    x = log_alpha / tau
    for _ in range(n_iter):
        x = x - torch.logsumexp(x, dim=-1, keepdim=True)
        x = x - torch.logsumexp(x, dim=-2, keepdim=True)
    return torch.exp(x)


def otkit_layer(log_alpha: Tensor) -> Tensor:
    return otkit.sinkhorn_knopp(log_alpha, N_ITER, TAU)


def forward_backward(fn: Callable[[Tensor], Tensor], x: Tensor, w: Tensor) -> Callable[[], tuple[Tensor, Tensor]]:
    def call() -> tuple[Tensor, Tensor]:
        out = fn(x)
        (grad,) = torch.autograd.grad((out * w).sum(), x)
        return out.detach(), grad

    return call


def saved_bytes(fn: Callable[[Tensor], Tensor], x: Tensor) -> int:
    """Bytes of the tensors autograd saves for the backward of ``fn(x)``."""
    total = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    return total


def suite(
    device: str,
    shapes: tuple[tuple[int, int, int], ...],
    repeat: int,
    compile_loop: bool,
    extra_methods: dict[str, Callable[[Tensor], Tensor]] | None = None,
) -> list[BenchRow]:
    """Forward + backward of every method on every shape; rows with times, ratios, differences, saved bytes."""
    rows = []
    for shape in shapes:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(shape, generator=gen).to(device).requires_grad_()
        w = torch.randn(shape, generator=gen).to(device)
        methods: dict[str, Callable[[Tensor], Tensor]] = {"loop[eager]": plain_loop}
        compile_s = None
        if compile_loop:
            methods["loop[compile]"] = torch.compile(plain_loop)
            start = time.perf_counter()
            forward_backward(methods["loop[compile]"], x, w)()
            compile_s = time.perf_counter() - start
        methods["otkit"] = otkit_layer
        methods.update(extra_methods or {})
        calls = {name: forward_backward(fn, x, w) for name, fn in methods.items()}
        ref_out, ref_grad = calls["loop[eager]"]()
        ms = interleaved_ms(calls, repeat, device)
        input_bytes = x.numel() * x.element_size()
        problem = "x".join(map(str, shape))
        for name, fn in methods.items():
            out, grad = calls[name]()
            extra = {
                "max_out_diff": float((out - ref_out).abs().max()),
                "max_grad_diff": float((grad - ref_grad).abs().max()),
                "saved_x_input": saved_bytes(fn, x) / input_bytes,
            }
            if "loop[compile]" in ms:
                extra["vs_compiled"] = ms["loop[compile]"] / ms[name]
            if name == "loop[compile]":
                extra["compile_s"] = compile_s
            if max(extra["max_out_diff"], extra["max_grad_diff"]) > TOLERANCE:
                raise AssertionError(f"{name} on {problem} differs from the papers' loop by more than {TOLERANCE}")
            rows.append(
                BenchRow(
                    suite="doubly-stochastic",
                    problem=problem,
                    mode=f"fwd+bwd, {N_ITER} iterations",
                    method=name,
                    ms=ms[name],
                    ratio=ms["loop[eager]"] / ms[name],
                    reference="loop[eager]",
                    extra=extra,
                )
            )
    return rows


def print_rows(rows: list[BenchRow], title: str) -> None:
    print_table(
        title,
        ["problem", "method", "ms", "x eager loop", "x compiled loop", "saved / input", "max grad diff"],
        [
            [
                r.problem,
                r.method,
                r.ms,
                r.ratio,
                r.extra.get("vs_compiled"),
                r.extra["saved_x_input"],
                r.extra["max_grad_diff"],
            ]
            for r in rows
        ],
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    parser.add_argument("--quick", action="store_true", help="small shapes: (1024, 4, 4) and (64, 16, 16)")
    parser.add_argument("--repeat", type=int, default=7, help="timed rounds, 1 to 100 (default 7)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile'd loop")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/doubly_stochastic_...)")
    args = parser.parse_args(argv)
    check_repeat_and_device(parser, args)
    return args


def main(argv: list[str] | None = None) -> Path:
    """Run the suite, print its table and write ``{environment, rows}`` as JSON; return the path."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    shapes = QUICK_SHAPES if args.quick else SHAPES
    with console.status("sinkhorn_knopp vs the papers' loop..."):
        rows = suite(args.device, shapes, args.repeat, compile_loop=not args.no_compile)
    print_rows(rows, f"Sinkhorn-Knopp, {N_ITER} iterations, forward + backward, float32")
    name = f"doubly_stochastic_{torch.device(args.device).type}{'_quick' if args.quick else ''}.json"
    out = Path(args.out) if args.out else RESULTS / name
    path = write_json(out, {"environment": environment(args.device), "rows": rows_as_dicts(rows)})
    console.print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
