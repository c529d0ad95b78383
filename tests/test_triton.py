"""The fused Triton kernel (otkit.dense.kernel) against the PyTorch log-domain loop, run in triton's CPU interpreter.

Triton reads ``TRITON_INTERPRET`` when a kernel is decorated, i.e. when ``otkit.dense.kernel`` is first imported, so
the kernel checks run in subprocesses started with ``TRITON_INTERPRET=1``: each ``test_*`` below runs one
``_case_*`` function of this file as ``python -m tests.test_triton <case>`` and fails with its traceback. The
pytest process itself is never switched to the interpreter. Sizes stay small (the interpreter runs each program
in numpy) and deliberately awkward: n and m not powers of two, m = 1, zero weights, streamed row blocks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed; the kernel cannot be tested")

import otkit
from otkit import SinkhornOptions
from otkit.dense import backend as _backend
from otkit.dense import kernel as _kernel
from otkit.dense.kernel import triton_sinkhorn
from otkit.dense.loops import solve_log
from tests.conftest import random_problem

ROOT = Path(__file__).resolve().parents[1]
RELAXATIONS = [(None, None), (None, 0.7), (0.5, 2.0), (1.0, None)]
# Stopping errors are L1 sums of float32 column sums of unit mass: both paths carry ~1e-7 of rounding in them.
ERR_ATOL = 5e-7


def _interpreted(case: str, extra_env: dict[str, str] | None = None) -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": "", **(extra_env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.test_triton", case], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, f"case {case} failed:\n{proc.stdout}\n{proc.stderr}"


def _plan(cost, a, b, f, g, eps):
    return a.unsqueeze(-1) * b.unsqueeze(-2) * torch.exp((f.unsqueeze(-1) + g.unsqueeze(-2) - cost.float()) / eps)


F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
BAL, SEMI_B, UNBAL, SEMI_A = RELAXATIONS
# (n, m, (rho_a, rho_b), cost dtype, warm start, zero weights, streamed row blocks)
FIXED_ITERATION_CASES = [
    *((37, 5, relax, F32, False, False, False) for relax in RELAXATIONS),
    (37, 5, BAL, F16, False, False, False),
    (37, 5, UNBAL, BF16, True, True, False),
    (37, 5, SEMI_B, F32, True, True, False),
    (37, 5, BAL, F32, False, True, True),
    (37, 5, UNBAL, F16, True, True, True),
    (37, 5, SEMI_A, F32, False, True, True),
    (37, 1, BAL, F32, True, False, False),
    (37, 1, UNBAL, F32, False, False, True),
    (1, 3, BAL, F32, False, False, False),
    (1, 3, SEMI_B, F32, True, False, False),
    (9, 64, BAL, F32, False, True, False),
    (9, 64, UNBAL, F32, True, False, False),
]


def _case_fixed_iterations_match_the_log_loop() -> None:
    """After a fixed number of iterations the kernel's iterate is solve_log's, in every configuration."""
    eps, iters = 0.1, 12
    for n, m, relax, dtype, warm, zeros, streamed in FIXED_ITERATION_CASES:
        label = f"n={n} m={m} relax={relax} {dtype} warm={warm} zeros={zeros} streamed={streamed}"
        cost, a, b = random_problem((3,), n, m, dtype=torch.float32, zero_weights=zeros)
        cost = cost.to(dtype)
        if zeros and streamed:
            a[:, :8] = 0  # the whole first block of rows is empty: its column terms are all -inf
            a = a / a.sum(-1, keepdim=True)
        g0 = 0.3 * torch.randn(3, m) if warm else None
        # streamed: blocks of 32 entries, so 37 rows take 10 blocks of 4 (m = 5) or 2 of 32 (m = 1), the last partial
        _kernel.RESIDENT_ELEMENTS, _kernel.STREAM_ELEMENTS = (32, 32) if streamed else (8192, 4096)
        assert _kernel.launch_config(n, m)[2] is not streamed
        options = SinkhornOptions(eps=eps, rho_a=relax[0], rho_b=relax[1], max_iter=iters, tol=None, check_every=5)
        f, g, n_iter, err = triton_sinkhorn(cost, a, b, options, g0)
        ref = solve_log(cost.float(), a, b, options, g0)
        msg = lambda s, x=label: f"{x}: {s}"  # noqa: E731
        torch.testing.assert_close(f, ref.f, rtol=1e-5, atol=2e-6, msg=msg)
        torch.testing.assert_close(g, ref.g, rtol=1e-5, atol=2e-6, msg=msg)
        plan, ref_plan = _plan(cost, a, b, f, g, eps), _plan(cost, a, b, ref.f, ref.g, eps)
        torch.testing.assert_close(plan, ref_plan, rtol=1e-5, atol=1e-12, msg=msg)
        assert n_iter.tolist() == [iters] * 3, label
        torch.testing.assert_close(err, ref.errors[-1], rtol=1e-3, atol=ERR_ATOL, msg=msg)


def _case_public_api_batches_broadcasts_and_strides() -> None:
    """otkit.sinkhorn(backend="triton") on (2, 3, n, m) with a non-contiguous cost and a broadcast marginal."""
    gen = torch.Generator().manual_seed(1)
    cost = torch.rand(2, 3, 6, 41, generator=gen).transpose(-1, -2)  # (2, 3, 41, 6), n contiguous
    a = torch.rand(41, generator=gen) + 0.1
    a = a / a.sum()
    for relax in RELAXATIONS:
        kw = dict(eps=0.05, rho_a=relax[0], rho_b=relax[1], max_iter=30, tol=None)
        fast = otkit.sinkhorn(cost, a, None, backend="triton", **kw)
        ref = otkit.sinkhorn(cost.contiguous(), a, None, backend="torch", domain="log", **kw)
        assert fast.backend == "triton" and fast.domain == "log" and ref.backend == "torch"
        assert fast.f.shape == (2, 3, 41) and fast.g.shape == (2, 3, 6) and fast.n_iter == 30
        torch.testing.assert_close(fast.plan, ref.plan, rtol=1e-5, atol=1e-12)
        torch.testing.assert_close(fast.value, ref.value, rtol=1e-5, atol=1e-7)
        assert fast.errors.shape == (1, 2, 3)


def _case_each_problem_stops_at_its_first_converged_check() -> None:
    """Per-problem stopping on device: each problem's count is what the torch loop needs for it alone."""
    cost, a, b = random_problem((4,), 29, 6, dtype=torch.float32, seed=3)
    cost = cost * torch.tensor([0.25, 0.5, 1.0, 1.5]).view(4, 1, 1)  # harder and harder problems
    options = SinkhornOptions(eps=0.1, max_iter=400, tol=1e-5, check_every=5)
    f, g, n_iter, err = triton_sinkhorn(cost, a, b, options, None)
    assert len(set(n_iter.tolist())) > 1, n_iter  # the problems do stop at different iterations
    for p in range(4):
        alone = otkit.sinkhorn(cost[p], a[p], b[p], eps=0.1, max_iter=400, tol=1e-5, check_every=5, domain="log")
        assert int(n_iter[p]) == alone.n_iter and int(n_iter[p]) % 5 == 0
        assert float(err[p]) <= 1e-5
        torch.testing.assert_close(err[p], alone.error, rtol=1e-3, atol=ERR_ATOL)
        torch.testing.assert_close(_plan(cost[p], a[p], b[p], f[p], g[p], 0.1), alone.plan, rtol=1e-5, atol=1e-12)
    res = otkit.sinkhorn(cost, a, b, eps=0.1, max_iter=400, tol=1e-5, check_every=5, backend="triton")
    assert res.n_iter == int(n_iter.max()) and bool(res.converged.all())
    # Not converged: every problem runs max_iter iterations, is flagged and warned about, and stays finite.
    with pytest.warns(otkit.ConvergenceWarning, match="did not converge for 4 of 4"):
        short = otkit.sinkhorn(cost, a, b, eps=0.1, max_iter=7, tol=1e-9, check_every=5, backend="triton")
    ref = otkit.sinkhorn(cost, a, b, eps=0.1, max_iter=7, tol=1e-9, check_every=5, backend="torch", domain="log")
    assert short.n_iter == 7 and not bool(short.converged.any()) and bool(torch.isfinite(short.plan).all())
    torch.testing.assert_close(short.error, ref.error, rtol=1e-3, atol=ERR_ATOL)


def _case_warm_start_from_the_solution_stops_at_once() -> None:
    cost, a, b = random_problem((3,), 40, 6, dtype=torch.float32, zero_weights=True)
    first = otkit.sinkhorn(cost, a, b, eps=0.1, max_iter=500, tol=1e-6, backend="torch", domain="log")
    again = otkit.sinkhorn(
        cost, a, b, eps=0.1, max_iter=500, tol=1e-6, init=(first.f, first.g), check_every=1, backend="triton"
    )
    assert again.n_iter == 1 and bool(again.converged.all())
    torch.testing.assert_close(again.plan, first.plan, rtol=1e-5, atol=1e-12)
    assert bool((again.plan[:, 0, :] == 0).all()) and bool((again.plan[..., -1] == 0).all())


def _case_implicit_gradients_through_the_kernel() -> None:
    """grad="implicit" on the triton backend gives the torch backend's gradients (cost and marginals)."""
    cost, a, b = random_problem((3,), 23, 5, dtype=torch.float32)
    weight = torch.randn(3, 23, 5)
    for relax in RELAXATIONS:
        grads = {}
        for backend in ("triton", "torch"):
            c, x, y = (t.clone().requires_grad_() for t in (cost, a, b))
            res = otkit.sinkhorn(
                c, x, y, eps=0.1, rho_a=relax[0], rho_b=relax[1], max_iter=600, tol=1e-6, check_every=1,
                grad="implicit", backend=backend,
            )  # fmt: skip
            assert res.backend == backend
            loss = (res.plan * weight).sum() + res.value.sum()
            grads[backend] = torch.autograd.grad(loss, (c, x, y) if relax[0] and relax[1] else (c,))
        for fast, ref in zip(grads["triton"], grads["torch"], strict=True):
            assert bool(torch.isfinite(fast).all())
            torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-5)
    # Unrolling cannot go through the kernel: forced, it says so; without autograd it is not needed.
    with pytest.raises(ValueError, match="grad='implicit'"):
        otkit.sinkhorn(cost.clone().requires_grad_(), eps=0.1, grad="unroll", backend="triton")
    with torch.no_grad():
        assert otkit.sinkhorn(cost.clone().requires_grad_(), eps=0.1, backend="triton").backend == "triton"


def _case_selection_rule() -> None:
    """Forced triton explains what does not fit; auto keeps the PyTorch loops on the CPU, even interpreted."""
    cost = torch.rand(2, 9, 5)
    assert _backend.triton_available(cost) and not _backend.triton_available(cost.double())
    assert otkit.sinkhorn(cost, eps=0.1).backend == "torch"
    for kwargs, match in (
        ({"cost": cost.double()}, "float64"),
        ({"cost": torch.rand(2, 3, 65)}, "m = 65 columns"),
        ({"cost": cost, "domain": "kernel"}, "log domain"),
    ):
        with pytest.raises(ValueError, match=match):
            otkit.sinkhorn(**{"eps": 0.1, "backend": "triton", **kwargs})


def test_fixed_iterations_match_the_log_loop():
    _interpreted("_case_fixed_iterations_match_the_log_loop")


def test_public_api_batches_broadcasts_and_strides():
    _interpreted("_case_public_api_batches_broadcasts_and_strides")


def test_each_problem_stops_at_its_first_converged_check():
    _interpreted("_case_each_problem_stops_at_its_first_converged_check")


def test_warm_start_from_the_solution_stops_at_once():
    _interpreted("_case_warm_start_from_the_solution_stops_at_once")


def test_implicit_gradients_through_the_kernel():
    _interpreted("_case_implicit_gradients_through_the_kernel")


def test_selection_rule_in_interpreter_mode():
    _interpreted("_case_selection_rule")


def test_auto_keeps_the_torch_loops_on_the_cpu():
    cost, _, _ = random_problem((2,), 10, 4, dtype=torch.float32)
    res = otkit.sinkhorn(cost, eps=0.05)
    assert res.backend == "torch" and res.domain == "kernel"  # the cache-blocked kernel domain, as before
    assert otkit.sinkhorn(cost, eps=0.05, backend="torch").backend == "torch"


@pytest.mark.skipif(_kernel._INTERPRET, reason="this process runs triton's interpreter, which takes CPU tensors")
def test_forced_triton_on_the_cpu_says_why():
    with pytest.raises(ValueError, match="needs a CUDA tensor"):
        otkit.sinkhorn(torch.rand(2, 9, 5), eps=0.1, backend="triton")


def test_otkit_works_without_triton():
    script = (
        "import sys; sys.modules['triton'] = None\n"  # makes `import triton` raise ImportError
        "import torch, otkit\n"
        "from otkit.dense.backend import triton_available\n"
        "cost = torch.rand(2, 9, 5)\n"
        "assert not triton_available(cost) and otkit.sinkhorn(cost).backend == 'torch'\n"
        "try:\n"
        "    otkit.sinkhorn(cost, backend='triton')\n"
        "except ValueError as err:\n"
        "    assert 'triton is not installed' in str(err)\n"
        "else:\n"
        "    raise AssertionError('backend=triton ran without triton')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


if __name__ == "__main__":  # run one case in a subprocess started by the tests above (TRITON_INTERPRET=1)
    warnings.filterwarnings("ignore", "divide by zero", RuntimeWarning)  # the interpreter's log2(0) = -inf
    assert _kernel._INTERPRET, "run the cases with TRITON_INTERPRET=1 in the environment"
    torch.manual_seed(0)
    globals()[sys.argv[1]]()
