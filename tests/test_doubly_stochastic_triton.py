"""The fused Triton kernels of otkit.sinkhorn_knopp against its PyTorch path, in triton's CPU interpreter.

Triton reads ``TRITON_INTERPRET`` when a kernel is decorated, so the kernel cases run in one subprocess started
with ``TRITON_INTERPRET=1`` (``python -m tests.test_doubly_stochastic_triton <case>``); the pytest process is never
switched to the interpreter.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed; the kernels cannot be tested")

import otkit

ROOT = Path(__file__).resolve().parents[1]

# (shape, tau, dtype): one program or several (300 matrices of 4 x 4 fill three), padded sides, n = 1, n > m
CASES = [
    ((5, 4, 4), 1.0, torch.float32),
    ((300, 4, 4), 0.5, torch.float32),
    ((3, 16, 16), 0.7, torch.float32),
    ((2, 3, 4, 7), 1.0, torch.float32),
    ((2, 1, 5), 1.0, torch.float32),
    ((3, 16, 9), 2.0, torch.float32),
    ((6, 5, 5), 1.0, torch.bfloat16),
]


def _case_kernels_match_the_pytorch_path() -> None:
    for shape, tau, dtype in CASES:
        x = torch.randn(shape).to(dtype).requires_grad_()
        w = torch.randn(shape)
        out = otkit.sinkhorn_knopp(x, 7, tau, backend="triton")
        ref = otkit.sinkhorn_knopp(x, 7, tau, backend="torch")
        assert out.dtype == dtype, (shape, out.dtype)
        (grad,) = torch.autograd.grad((out.float() * w).sum(), x)
        (grad_ref,) = torch.autograd.grad((ref.float() * w).sum(), x)
        atol = 1e-5 if dtype == torch.float32 else 2e-2
        torch.testing.assert_close(out.float(), ref.float(), rtol=0, atol=atol, msg=str(shape))
        torch.testing.assert_close(grad.float(), grad_ref.float(), rtol=0, atol=atol, msg=str(shape))


def _case_minus_infinity_entries_stay_zero() -> None:
    x = torch.randn(4, 4, 4)
    x[:, 1, 2] = -math.inf
    x.requires_grad_()
    out = otkit.sinkhorn_knopp(x, 10, backend="triton")
    ref = otkit.sinkhorn_knopp(x, 10, backend="torch")
    assert bool((out[:, 1, 2] == 0).all())
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    (grad,) = torch.autograd.grad(out[:, 0, 0].sum(), x)
    (grad_ref,) = torch.autograd.grad(ref[:, 0, 0].sum(), x)
    torch.testing.assert_close(grad, grad_ref, rtol=0, atol=1e-5)


def _case_auto_keeps_the_cpu_on_pytorch() -> None:
    from otkit.doubly_stochastic.backend import select_backend

    assert select_backend("auto", torch.zeros(2, 4, 4), "unroll") == "torch"
    assert select_backend("triton", torch.zeros(2, 4, 4), "unroll") == "triton"


def test_kernels_in_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    cases = [name for name in globals() if name.startswith("_case_")]
    proc = subprocess.run(
        [sys.executable, "-m", "tests.test_doubly_stochastic_triton", *cases],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"


@pytest.mark.parametrize(
    ("x", "kwargs", "match"),
    [
        (torch.zeros(2, 4, 4), {}, "CUDA tensor"),  # no interpreter in this process
        (torch.zeros(2, 4, 4), {"grad": "implicit"}, "CUDA tensor"),
        (torch.zeros(2, 4, 4), {"backend": "gpu"}, "backend must be"),
    ],
)
def test_backend_triton_says_why_it_cannot_run(x, kwargs, match):
    with pytest.raises(ValueError, match=match):
        otkit.sinkhorn_knopp(x, **{"backend": "triton", **kwargs})


def test_backend_rule_names_dtype_size_and_gradient(monkeypatch):
    from otkit import _triton
    from otkit.doubly_stochastic import backend

    monkeypatch.setattr(_triton, "unavailable_reason", lambda tensor: None)  # as on a CUDA device
    assert "float32" in backend.unavailable_reason(torch.zeros(2, 4, 4, dtype=torch.float64))
    assert "16 x 16" in backend.unavailable_reason(torch.zeros(2, 17, 4))
    with pytest.raises(ValueError, match="implicit"):
        backend.select_backend("triton", torch.zeros(2, 4, 4), "implicit")
    assert backend.select_backend("auto", torch.zeros(2, 4, 4), "unroll") == "torch"  # a CPU tensor


if __name__ == "__main__":  # run the cases in the subprocess started above (TRITON_INTERPRET=1)
    warnings.filterwarnings("ignore", "divide by zero", RuntimeWarning)  # the interpreter's log2(0) = -inf
    torch.manual_seed(0)
    for name in sys.argv[1:]:
        globals()[name]()
