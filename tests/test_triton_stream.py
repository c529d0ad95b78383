"""The fused streaming kernels (otkit.geometry.kernels) against the PyTorch tiles, in triton's CPU interpreter.

As in tests/test_triton.py, each test runs one ``_case_*`` function of this file in a subprocess started with
``TRITON_INTERPRET=1`` (triton reads it when the kernels are decorated). Blocks of 16 rows and columns, sizes that
are not multiples of them, every cost, the solvers and attention end to end.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed; the kernels cannot be tested")

import otkit
from otkit import SinkhornOptions
from otkit.geometry import Geometry
from otkit.geometry import kernels as _stream_kernels
from otkit.geometry import tiles as _tiles

ROOT = Path(__file__).resolve().parents[1]
COSTS = ("sqeuclidean", "euclidean", "cosine", "dot")


def _interpreted(case: str) -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.test_triton_stream", case], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, f"case {case} failed:\n{proc.stdout}\n{proc.stderr}"


def _case_kernels_match_the_torch_tiles() -> None:
    """lse, sums and matrix products, with zero weights (log floor) in the column terms."""
    gen = torch.Generator().manual_seed(0)
    for kind in COSTS:
        x, y = torch.rand(2, 37, 3, generator=gen), torch.rand(2, 29, 3, generator=gen) + 0.2
        col, row = torch.randn(2, 29, generator=gen), torch.randn(2, 37, generator=gen)
        col[0, :3] = _tiles.LOG_FLOOR
        values = torch.randn(2, 29, 5, generator=gen)
        fused, tiles = (Geometry.from_points(x, y, kind, False, backend) for backend in ("triton", "torch"))
        for eps in (0.05, 1.0):
            torch.testing.assert_close(_tiles.lse(fused, col, eps), _tiles.lse(tiles, col, eps), rtol=1e-6, atol=2e-6)
            for v in (None, values):
                ref = _tiles.exp_sums(tiles, row, col, eps, v)
                scale = float(ref.abs().max())
                torch.testing.assert_close(_tiles.exp_sums(fused, row, col, eps, v), ref, rtol=2e-5, atol=1e-6 * scale)


def _case_solvers_and_attention_end_to_end() -> None:
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(30, 2, generator=gen), torch.rand(21, 2, generator=gen) * 0.8 + 0.3
    options = SinkhornOptions(eps=0.1, max_iter=200, tol=1e-4, backend="triton")
    res = otkit.sinkhorn_points(x, y, options=options, scaling=0.5, storage="streaming")
    ref = otkit.sinkhorn_points(x, y, options=options.replace(backend="torch"), scaling=0.5, storage="streaming")
    assert res.n_iter == ref.n_iter
    torch.testing.assert_close(res.value, ref.value, rtol=1e-5, atol=0)
    torch.testing.assert_close(res.barycentric_map(), ref.barycentric_map(), rtol=1e-5, atol=1e-6)
    grads = []
    for backend in ("triton", "torch"):
        xx = x.clone().requires_grad_()
        otkit.sinkhorn_divergence(xx, y, eps=0.1, tol=1e-4, storage="streaming", backend=backend).value.backward()
        grads.append(xx.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)
    q, k, v = (torch.randn(2, 20, 8, generator=gen) for _ in range(3))
    outs = []
    for backend in ("triton", "torch"):
        opts = SinkhornOptions(eps=1.0, max_iter=3, tol=None, backend=backend)
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        out = otkit.sinkhorn_attention(*leaves, options=opts, storage="streaming")
        out.square().sum().backward()
        outs.append([out.detach()] + [t.grad for t in leaves])
    for fused, tiles in zip(*outs, strict=True):
        torch.testing.assert_close(fused, tiles, rtol=1e-5, atol=1e-6)


def _case_selection_rule() -> None:
    x = torch.rand(1, 5, 2)
    assert Geometry.from_points(x, x, "dot", False, "auto").backend == "torch"  # CPU
    assert Geometry.from_points(x, x, "dot", False, "triton").backend == "triton"
    for args, reason in (
        ((x, x, "dot", True, "triton"), "stored densely"),
        ((x.double(), x.double(), "dot", False, "triton"), "float32"),
    ):
        try:
            Geometry.from_points(*args)
        except ValueError as err:
            assert reason in str(err), err
        else:
            raise AssertionError(f"no error for {reason}")


def test_kernels_match_the_torch_tiles():
    _interpreted("_case_kernels_match_the_torch_tiles")


def test_solvers_and_attention_end_to_end():
    _interpreted("_case_solvers_and_attention_end_to_end")


def test_selection_rule_in_interpreter_mode():
    _interpreted("_case_selection_rule")


def test_forced_triton_on_the_cpu_says_why():
    x = torch.rand(6, 2)
    with pytest.raises(ValueError, match="backend='triton' cannot stream this problem"):
        otkit.sinkhorn_divergence(x, x + 1, storage="streaming", backend="triton")


if __name__ == "__main__":  # run one case in a subprocess started by the tests above (TRITON_INTERPRET=1)
    _stream_kernels.BLOCK_N = _stream_kernels.BLOCK_M = 16
    globals()[sys.argv[1]]()
