"""GPU benchmark of the doubly-stochastic layer: otkit.sinkhorn_knopp against the papers' loop on one CUDA device.

Run on a CUDA machine: ``python benchmarks/gpu_doubly_stochastic_bench.py [--repeat 20] [--no-compile]
[--out PATH]`` (or ``python -m benchmarks.gpu_doubly_stochastic_bench``). It refuses to run without CUDA.

The problems, the reference (``loop[eager]``), ``loop[compile]`` and ``otkit`` are those of
:mod:`benchmarks.doubly_stochastic_bench`, on ``cuda``, at the full sizes and also at 16x the batch
(``(1048576, 4, 4)``: a 4096-token sequence of batch 256 in an mHC layer). On CUDA ``otkit`` runs the fused
Triton kernels (``backend="auto"``). Two more methods: ``otkit[torch]``, the PyTorch iterations on the GPU
(``backend="torch"``), and ``otkit[graph]``, forward + backward of ``otkit.sinkhorn_knopp`` captured once in a
CUDA graph and replayed (the layer has no host synchronisation, so the capture holds the whole call).
Timing: CUDA synchronisation around each call, the median
of ``--repeat`` interleaved rounds. Results go to ``benchmarks/results/gpu_doubly_stochastic_<gpu>.json``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: make `benchmarks` importable

import torch
from torch import Tensor

import otkit
from benchmarks import doubly_stochastic_bench as bench
from benchmarks.harness import console, environment, rows_as_dicts, write_json

SHAPES = (*bench.SHAPES, (1048576, 4, 4))


class GraphedLayer:
    """``otkit.sinkhorn_knopp`` forward and backward captured in one CUDA graph, replayed for an input ``x``.

    Called as a method of the suite (``fn(x)``), it copies ``x`` into the graph's static input, replays, and
    returns the static output through an autograd function whose backward hands out the captured gradient for
    the ``w`` of the suite (every call of the suite uses the same ``w``).
    """

    def __init__(self, x: Tensor, w: Tensor) -> None:
        self.x = x.detach().clone().requires_grad_()
        self.w = w
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm up outside the graph
                self._step()
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out, self.grad = self._step()

    def _step(self) -> tuple[Tensor, Tensor]:
        out = bench.otkit_layer(self.x)
        (grad,) = torch.autograd.grad((out * self.w).sum(), self.x)
        return out, grad

    def __call__(self, x: Tensor) -> Tensor:
        self.x.data.copy_(x.detach())
        self.graph.replay()
        return _Replayed.apply(x, self.out, self.grad)


class _Replayed(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, out, grad):
        ctx.save_for_backward(grad)
        return out.clone()

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        return grad, None, None


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=20, help="timed rounds, 1 to 100 (default 20)")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile'd loop")
    parser.add_argument("--out", default=None, help="JSON path (default results/gpu_doubly_stochastic_<gpu>.json)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("this benchmark needs a CUDA device; on the CPU run benchmarks/doubly_stochastic_bench.py")
    if not 1 <= args.repeat <= 100:
        parser.error(f"--repeat must be between 1 and 100, got {args.repeat}")
    rows = []
    for shape in SHAPES:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(shape, generator=gen).cuda()
        w = torch.randn(shape, generator=gen).cuda()  # the suite draws the same x and w from the same seed
        extra: dict[str, Callable[[Tensor], Tensor]] = {
            "otkit[torch]": lambda t: otkit.sinkhorn_knopp(t, bench.N_ITER, bench.TAU, backend="torch"),
            "otkit[graph]": GraphedLayer(x, w),
        }
        rows += bench.suite("cuda", (shape,), args.repeat, compile_loop=not args.no_compile, extra_methods=extra)
    bench.print_rows(rows, f"Sinkhorn-Knopp on {torch.cuda.get_device_name()}, forward + backward, float32")
    name = torch.cuda.get_device_name().replace(" ", "_")
    out = Path(args.out) if args.out else bench.RESULTS / f"gpu_doubly_stochastic_{name}.json"
    path = write_json(out, {"environment": environment("cuda"), "rows": rows_as_dicts(rows)})
    console.print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
