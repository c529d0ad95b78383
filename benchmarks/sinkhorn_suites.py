"""Speed and memory comparisons of otkit against the references, in one process.

References (optional dependencies, imported only here): POT (``ot.batch.solve_batch`` with
``method="log_sinkhorn"`` and per-problem ``ot.bregman.sinkhorn_log``), geomloss (``SamplesLoss``), and
:func:`paper_loop_sinkhorn`, a re-implementation of the loop OTSeg's public code runs (log domain, a host
synchronisation every iteration to test its stopping rule). Every suite returns rows of plain values that
``benchmarks/sinkhorn_bench.py`` prints as a table and writes as JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks.harness import BenchRow, PeakMemory, time_call
from otkit import SinkhornOptions, multi_prompt_transport, sinkhorn, sinkhorn_attention

__all__ = [
    "QUICK_SHAPES",
    "SHAPES",
    "multi_prompt_cost",
    "operators_suite",
    "paper_loop_sinkhorn",
    "sinkhorn_memory_suite",
    "sinkhorn_suite",
]

SHAPES = ((80, 1024, 6), (684, 1024, 8))
QUICK_SHAPES = ((80, 1024, 6),)


def paper_loop_sinkhorn(cost: Tensor, eps: float = 0.05, max_iter: int = 100, thresh: float = 1e-6) -> Tensor:
    """The OTSeg public code's Sinkhorn, re-implemented for comparison: log domain, synced stopping rule.

    Uniform marginals; ``u``, ``v`` log-scalings updated alternately on ``(B, M, N)`` costs; after every
    iteration the mean absolute change of ``u`` over the whole batch is read on the host and the loop stops
    below ``thresh``.

    Args:
        cost: ``(B, M, N)``.
        eps: Entropic regularisation.
        max_iter: Iteration cap.
        thresh: Stopping threshold on the mean absolute change of ``u``.

    Returns:
        The plan ``(B, M, N)``.
    """
    batch, n, m = cost.shape
    log_a = torch.full((batch, n), -torch.log(torch.tensor(float(n))).item(), dtype=cost.dtype, device=cost.device)
    log_b = torch.full((batch, m), -torch.log(torch.tensor(float(m))).item(), dtype=cost.dtype, device=cost.device)
    log_k = -cost / eps
    u = torch.zeros_like(log_a)
    v = torch.zeros_like(log_b)
    for _ in range(max_iter):
        u_prev = u
        u = log_a - torch.logsumexp(log_k + v.unsqueeze(1), dim=2)
        v = log_b - torch.logsumexp(log_k + u.unsqueeze(2), dim=1)
        if (u - u_prev).abs().mean().item() < thresh:
            break
    return torch.exp(u.unsqueeze(2) + v.unsqueeze(1) + log_k)


def multi_prompt_cost(batch: int, n: int, m: int, device: str, seed: int = 0) -> Tensor:
    """``1 - cos`` between random unit pixel and prompt features, ``(batch, n, m)`` float32."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(batch, n, 64, generator=gen), dim=-1)
    y = torch.nn.functional.normalize(torch.randn(batch, m, 64, generator=gen), dim=-1)
    return (1 - x @ y.transpose(1, 2)).to(device)


def _pot_batch(cost: Tensor, eps: float, max_iter: int, tol: float) -> Callable[[], Tensor]:
    import ot

    def run() -> Tensor:
        res = ot.batch.solve_batch(
            cost, reg=eps, max_iter=max_iter, tol=tol, method="log_sinkhorn", reg_type="kl", grad="detach"
        )
        return res.plan

    return run


def _pot_loop(cost: Tensor, eps: float, max_iter: int, tol: float) -> Callable[[], Tensor]:
    import ot

    n, m = cost.shape[1:]
    a = torch.full((n,), 1.0 / n, dtype=cost.dtype, device=cost.device)
    b = torch.full((m,), 1.0 / m, dtype=cost.dtype, device=cost.device)

    def run() -> Tensor:
        plans = [ot.bregman.sinkhorn_log(a, b, c, eps, numItermax=max_iter, stopThr=tol) for c in cost]
        return torch.stack(plans)

    return run


def _geomloss(cost: Tensor, eps: float) -> Callable[[], Tensor] | None:
    try:
        from geomloss import SamplesLoss
    except ImportError:
        return None
    # geomloss works on point clouds: rebuild the features behind the cost, 1 - <x, y> on unit vectors.
    gen = torch.Generator().manual_seed(0)
    batch, n, m = cost.shape
    x = torch.nn.functional.normalize(torch.randn(batch, n, 64, generator=gen), dim=-1).to(cost.device)
    y = torch.nn.functional.normalize(torch.randn(batch, m, 64, generator=gen), dim=-1).to(cost.device)
    loss = SamplesLoss(
        "sinkhorn", p=1, blur=eps, debias=False, backend="tensorized", cost=lambda s, t: 1 - s @ t.transpose(1, 2)
    )
    return lambda: loss(x, y)


def _max_rel_err(plan: Tensor, ref: Tensor) -> float:
    return float(((plan.double() - ref.double()).abs() / ref.double().abs().clamp_min(1e-30)).max())


def sinkhorn_suite(
    device: str = "cpu",
    shapes: tuple[tuple[int, int, int], ...] = SHAPES,
    eps: float = 0.05,
    repeat: int = 5,
    include_slow: bool = True,
) -> list[BenchRow]:
    """Time otkit against POT, geomloss and the paper's loop on multi-prompt shapes ``(B*K, M, N)``, float32.

    Two modes: ``fixed100`` (exactly 100 iterations everywhere, tolerances off) and ``converge``
    (tol 1e-6 in each library's own stopping rule, up to 1000 iterations; geomloss runs its own epsilon
    schedule). Ratios are POT batch time / method time.
    """
    rows: list[BenchRow] = []
    for shape in shapes:
        cost = multi_prompt_cost(*shape, device=device)
        label = "x".join(map(str, shape))
        for mode, max_iter, tol in (("fixed100", 100, None), ("converge", 1000, 1e-6)):
            pot_tol = 0.0 if tol is None else tol
            methods: dict[str, Callable[[], Any]] = {
                "otkit": lambda c=cost, mi=max_iter, t=tol: sinkhorn(c, eps=eps, max_iter=mi, tol=t).plan,
                "otkit[log]": lambda c=cost, mi=max_iter, t=tol: (
                    sinkhorn(c, eps=eps, max_iter=mi, tol=t, domain="log").plan
                ),
                "pot.batch": _pot_batch(cost, eps, max_iter, pot_tol),
                "paper_loop": lambda c=cost, mi=max_iter, t=pot_tol: paper_loop_sinkhorn(c, eps, mi, t),
            }
            if include_slow and mode == "fixed100":
                methods["pot.sinkhorn_log(loop)"] = _pot_loop(cost, eps, max_iter, pot_tol)
            if mode == "converge":
                geo = _geomloss(cost, eps)
                if geo is not None:
                    methods["geomloss"] = geo
            times = {}
            for name, fn in methods.items():
                slow = name.startswith("pot.sinkhorn_log") or name == "geomloss"
                times[name] = time_call(fn, repeat=1 if slow else repeat, warmup=0 if slow else 1, device=device)
            reference = times["pot.batch"]
            plan = sinkhorn(cost, eps=eps, max_iter=max_iter, tol=tol).plan
            agreement = _max_rel_err(plan, _pot_batch(cost, eps, max_iter, pot_tol)())
            for name, ms in times.items():
                extra = {"max_rel_err_vs_pot": agreement} if name == "otkit" else {}
                rows.append(BenchRow("sinkhorn", label, mode, name, ms, reference / ms, "pot.batch", extra))
    return rows


def sinkhorn_memory_suite(
    device: str = "cpu", shape: tuple[int, int, int] = (80, 1024, 6), eps: float = 0.05, max_iter: int = 100
) -> list[BenchRow]:
    """Peak memory of forward + backward of ``(plan * W).sum()`` for both gradient modes.

    Reported in units of the cost matrix's size: ``peak`` over the whole step and ``backward`` over the backward
    pass alone (above what the forward left alive).
    """
    cost = multi_prompt_cost(*shape, device=device).requires_grad_()
    weight = torch.randn_like(cost)
    unit = cost.numel() * cost.element_size()
    rows = []
    sinkhorn(cost.detach(), eps=eps, max_iter=2, tol=None)  # warm up allocator arenas and thread pools
    for grad in ("unroll", "implicit"):
        with PeakMemory(device) as step:
            res = sinkhorn(cost, eps=eps, max_iter=max_iter, tol=None, grad=grad)
            loss = (res.plan * weight).sum()
            with PeakMemory(device) as backward:
                loss.backward()
        cost.grad = None
        extra = {
            "peak_x_cost": None if step.peak is None else step.peak / unit,
            "backward_x_cost": None if backward.peak is None else backward.peak / unit,
            "cost_bytes": unit,
        }
        rows.append(
            BenchRow("sinkhorn-memory", "x".join(map(str, shape)), f"grad={grad}", "otkit", None, None, "", extra)
        )
    return rows


MPS_SHAPES = ((4, 20, 1024, 6), (4, 171, 1024, 8))  # (B, K, M, N)


def _paper_mps(pixels: Tensor, prompts: Tensor, max_iter: int, thresh: float) -> Tensor:
    """OTSeg's MPS score map computed with the paper's loop: ``(B, M, C), (K, N, C) -> (B, K, M)``."""
    batch, n_pix, _ = pixels.shape
    n_cls, n_prompt, _ = prompts.shape
    sim = torch.einsum("bmc,knc->bkmn", F.normalize(pixels, dim=-1), F.normalize(prompts, dim=-1))
    plan = paper_loop_sinkhorn((1 - sim).reshape(batch * n_cls, n_pix, n_prompt), 0.05, max_iter, thresh)
    return (plan.view_as(sim) * sim).sum(-1) * (n_pix * n_prompt)


def _paper_attention(q: Tensor, k: Tensor, v: Tensor, n_iter: int) -> Tensor:
    """Sinkhorn attention through the paper's loop (``n_iter`` full iterations), rows rescaled to sum to 1."""
    cost = -(q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    plan = paper_loop_sinkhorn(cost.flatten(0, 1), 1.0, n_iter, 0.0).view_as(cost)
    return (plan * q.shape[-2]) @ v


def operators_suite(device: str = "cpu", repeat: int = 5, quick: bool = False) -> list[BenchRow]:
    """Multi-prompt transport and Sinkhorn attention against the paper's loop and softmax attention.

    MPS: ``B=4``, ``K in {20, 171}``, ``M=1024``, ``N in {6, 8}``, ``C=512``, eps 0.05, each method to its own
    stopping rule (100 iterations at most). Attention: ``B=2``, 8 heads, ``L=1024``, ``d=64``, otkit with
    ``max_iter`` 2 and 19 (3 and 20 row normalisations) against the paper's loop with 3 and 20 iterations, with
    PyTorch's softmax attention for scale. Ratios: paper loop time / method time.
    """
    rows: list[BenchRow] = []
    gen = torch.Generator().manual_seed(0)
    for batch, n_cls, n_pix, n_prompt in MPS_SHAPES[:1] if quick else MPS_SHAPES:
        pixels = torch.randn(batch, n_pix, 512, generator=gen).to(device)
        prompts = torch.randn(n_cls, n_prompt, 512, generator=gen).to(device)
        label = f"B{batch} K{n_cls} M{n_pix} N{n_prompt}"
        times = {
            "otkit.multi_prompt_transport": time_call(
                lambda p=pixels, t=prompts: multi_prompt_transport(p, t).score, repeat=repeat, device=device
            ),
            "paper_loop": time_call(
                lambda p=pixels, t=prompts: _paper_mps(p, t, 100, 1e-6), repeat=repeat, device=device
            ),
        }
        ref = times["paper_loop"]
        for name, ms in times.items():
            rows.append(BenchRow("mps", label, "to tol", name, ms, ref / ms, "paper_loop"))
    q, k, v = (torch.randn(2, 8, 1024, 64, generator=gen).to(device) for _ in range(3))
    for max_iter in (2,) if quick else (2, 19):
        label = f"B2 H8 L1024 d64, max_iter {max_iter}"
        options = SinkhornOptions(eps=1.0, max_iter=max_iter, tol=None)
        times = {
            "otkit.sinkhorn_attention": time_call(
                lambda o=options: sinkhorn_attention(q, k, v, options=o), repeat=repeat, device=device
            ),
            "paper_loop": time_call(
                lambda it=max_iter + 1: _paper_attention(q, k, v, it), repeat=repeat, device=device
            ),
            "softmax (sdpa)": time_call(lambda: F.scaled_dot_product_attention(q, k, v), repeat=repeat, device=device),
        }
        ref = times["paper_loop"]
        for name, ms in times.items():
            rows.append(BenchRow("attention", label, f"max_iter={max_iter}", name, ms, ref / ms, "paper_loop"))
    return rows
