"""Point-cloud benchmarks: the Sinkhorn divergence against geomloss and POT, large clouds, streamed attention.

Every measurement times a differentiable loss as it is used (forward and the backward to ``x``) unless a row says
otherwise, and reads the peak working memory of a separate run (:class:`~benchmarks.harness.PeakMemory`), except
where that run's ops take over 10 ms each on average (geomloss online at large n): the probe's ~10 us per op is then
under 0.1% of it, and its time is the row's (``extra["timing"]`` says which). Every row records the 1-minute load
average before it (``extra["load_1min"]``): the machine may be shared.
References are imported here only: geomloss's ``SamplesLoss`` (``backend="tensorized"``, and ``"online"``,
which needs pykeops) and POT's ``ot.bregman.empirical_sinkhorn_divergence``.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from benchmarks.harness import BenchRow, PeakMemory, console, time_call
from otkit import ConvergenceWarning, SinkhornOptions, sinkhorn_attention, sinkhorn_divergence

__all__ = ["attention_suite", "divergence_suite", "large_suite", "unit_clouds"]

EPS = 0.05
SCALING = 0.9  # geomloss's schedule: eps from 2 D^2 down to EPS by a factor 0.81 per iteration (D = 1)


def unit_clouds(n: int, d: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """Two uniform clouds in the unit cube, ``(n, d)`` each, scaled so that their bounding box has diagonal 1."""
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.rand(n, d, generator=gen, dtype=dtype), torch.rand(n, d, generator=gen, dtype=dtype)
    points = torch.cat([x, y])
    diameter = (points.amax(0) - points.amin(0)).norm()
    return x / diameter, y / diameter


def _loss_and_grad(loss: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor) -> Callable[[], float]:
    def run() -> float:
        leaf = x.clone().requires_grad_()
        value = loss(leaf, y)
        value.backward()
        return float(value.detach())

    return run


# A memory run whose ATen ops average more than this many seconds is also the timing run (probe cost < 0.1%).
PROBE_REUSE_S_PER_OP = 0.01


def _measure(run: Callable[[], float], repeat: int) -> tuple[float, float, float | None, dict]:
    """``(ms, value, peak MB, info)``: the memory run first (it also warms up), then ``repeat`` timed runs (median)
    unless the memory run's own time is exact enough (:data:`PROBE_REUSE_S_PER_OP`)."""
    load = os.getloadavg()[0]
    start = time.perf_counter()
    with PeakMemory("cpu") as mem:
        value = run()
    probed = time.perf_counter() - start
    if mem.ops and probed / mem.ops > PROBE_REUSE_S_PER_OP:
        ms, timing = probed * 1e3, f"the memory run ({mem.ops} ATen ops)"
    else:
        ms, timing = time_call(run, repeat=repeat, warmup=0), f"median of {repeat} after the memory run"
    info = {"timing": timing, "load_1min": load}
    return ms, value, None if mem.peak is None else mem.peak / 2**20, info


def _methods(n: int, include_dense: bool, keops: bool, tensorized_max: int) -> dict[str, Callable]:
    """The divergences compared at one size: name -> loss(x, y)."""
    methods: dict[str, Callable] = {}
    for storage in ("streaming", "dense") if include_dense else ("streaming",):
        methods[f"otkit {storage}, geomloss schedule"] = lambda x, y, s=storage: (
            sinkhorn_divergence(x, y, eps=EPS, scaling=SCALING, max_iter=1, tol=None, storage=s).value
        )
        methods[f"otkit {storage}, tol 1e-5"] = lambda x, y, s=storage: (
            sinkhorn_divergence(x, y, eps=EPS, scaling=None, tol=1e-5, storage=s).value
        )
    try:
        import geomloss
    except ImportError:
        return methods
    blur = math.sqrt(EPS / 2)  # ours with |x - y|^2 and eps is twice geomloss's (|x - y|^2 / 2, eps = blur^2)
    backends = (["tensorized"] if n <= tensorized_max else []) + (["online"] if keops else [])
    for backend in backends:
        loss = geomloss.SamplesLoss("sinkhorn", p=2, blur=blur, scaling=SCALING, backend=backend)
        methods[f"geomloss {backend}"] = lambda x, y, f=loss: 2 * f(x, y)
    return methods


def _keops_available() -> bool:
    try:
        import pykeops  # noqa: F401
    except ImportError:
        return False
    return True


def _reference(x: Tensor, y: Tensor) -> float:
    """The converged divergence in float64 (tol 1e-9), against which every method's value is compared."""
    return float(
        sinkhorn_divergence(
            x.double(), y.double(), eps=EPS, scaling=None, tol=1e-9, max_iter=1000, storage="streaming"
        ).value
    )


def divergence_suite(
    sizes: tuple[int, ...],
    dims: tuple[int, ...],
    repeat: int = 3,
    tensorized_max: int = 5000,
    pot_max: int = 5000,
    keops_max: int = 20000,
) -> list[BenchRow]:
    """Sinkhorn divergence, eps 0.05 on unit-diameter clouds, float32: otkit vs geomloss (tensorized and otkit
    dense up to ``tensorized_max`` points, online/KeOps up to ``keops_max``) and POT (up to ``pot_max``).
    Ratio: geomloss online time / method time; ``extra`` also has ``x_vs_tensorized`` (geomloss tensorized time /
    method time)."""
    keops = _keops_available()
    rows: list[BenchRow] = []
    for d in dims:
        for n in sizes:
            x, y = unit_clouds(n, d)
            problem = f"n=m={n}, d={d}"
            reference = _reference(x, y)
            found: dict[str, tuple[float, float, float | None, dict]] = {}
            for name, loss in _methods(
                n, include_dense=n <= tensorized_max, keops=keops and n <= keops_max, tensorized_max=tensorized_max
            ).items():
                found[name] = _measure(_loss_and_grad(loss, x, y), 1 if n >= 5000 else repeat)
                console.log(f"{problem}: {name} {found[name][0]:.0f} ms, {found[name][2] or 0:.1f} MB")
            if n <= pot_max:
                found["POT empirical_sinkhorn_divergence (forward, linear part)"] = _pot(x, y)
            online = found.get("geomloss online", (None,))[0]
            tensorized = found.get("geomloss tensorized", (None,))[0]
            for name, (ms, value, peak, info) in found.items():
                extra = {
                    "peak_mb": peak,
                    "value": value,
                    "converged_value": reference,
                    "rel_err_vs_converged": abs(value - reference) / reference,
                    "x_vs_tensorized": None if tensorized is None else tensorized / ms,
                    **info,
                }
                rows.append(
                    BenchRow(
                        suite="divergence",
                        problem=problem,
                        mode="forward+backward",
                        method=name,
                        ms=ms,
                        ratio=None if online is None else online / ms,
                        reference="geomloss online",
                        extra=extra,
                    )
                )
    return rows


def _pot(x: Tensor, y: Tensor) -> tuple[float, float, float | None, dict]:
    import ot

    def run() -> float:
        return float(ot.bregman.empirical_sinkhorn_divergence(x, y, EPS, numIterMax=1000, stopThr=1e-5))

    return _measure(run, 1)


def large_suite(n: int = 100_000, d: int = 3) -> list[BenchRow]:
    """One streamed divergence to tol 1e-5 at ``n = m`` (default 1e5): time, peak working memory, and whether all
    three solves reached ``tol`` (no :class:`~otkit.ConvergenceWarning` in any run)."""
    sinkhorn_divergence(*unit_clouds(1000, d), eps=EPS, scaling=None, storage="streaming")  # first calls allocate
    x, y = unit_clouds(n, d)
    missed: list[warnings.WarningMessage] = []

    def loss(p: Tensor, q: Tensor) -> Tensor:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            value = sinkhorn_divergence(p, q, eps=EPS, scaling=None, tol=1e-5, storage="streaming").value
        missed.extend(w for w in caught if issubclass(w.category, ConvergenceWarning))
        return value

    ms, value, peak, info = _measure(_loss_and_grad(loss, x, y), 1)
    return [
        BenchRow(
            suite="large",
            problem=f"n=m={n}, d={d}",
            mode="forward+backward",
            method="otkit streaming, tol 1e-5",
            ms=ms,
            extra={"peak_mb": peak, "value": value, "converged_to_tol": not missed, **info},
        )
    ]


def _attention_run(q: Tensor, k: Tensor, v: Tensor, storage: str) -> Callable[[], float]:
    def run() -> float:
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        out = sinkhorn_attention(*leaves, options=SinkhornOptions(eps=1.0, max_iter=2, tol=None), storage=storage)
        loss = out.square().mean()
        loss.backward()
        return float(loss.detach())

    return run


def attention_suite(lengths: tuple[int, ...], dense_max: int, dim: int = 64, heads: int = 1) -> list[BenchRow]:
    """Sinkhorn attention (default options: eps 1, 2 iterations), forward+backward, streamed and, up to
    ``dense_max`` tokens, dense. A small warm-up run of each path comes first (first calls allocate caches)."""
    gen = torch.Generator().manual_seed(0)
    warm = [torch.randn(1, heads, 256, dim, generator=gen) for _ in range(3)]
    for storage in ("streaming", "dense"):
        _attention_run(*warm, storage)()
    rows = []
    for length in lengths:
        gen = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(1, heads, length, dim, generator=gen) for _ in range(3))
        for storage in ("streaming", "dense") if length <= dense_max else ("streaming",):
            ms, value, peak, info = _measure(_attention_run(q, k, v, storage), 1)
            console.log(f"attention L={length}: {storage} {ms:.0f} ms, {peak or 0:.1f} MB")
            rows.append(
                BenchRow(
                    suite="attention",
                    problem=f"L={length}, d={dim}, heads={heads}",
                    mode="forward+backward",
                    method=f"otkit {storage}",
                    ms=ms,
                    extra={"peak_mb": peak, "value": value, **info},
                )
            )
    return rows
