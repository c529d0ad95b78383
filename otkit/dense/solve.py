"""Entropic optimal transport on dense cost matrices: balanced, unbalanced and semi-unbalanced Sinkhorn."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from otkit._checks import (
    check_cost,
    check_masses,
    check_precision,
    compute_dtype,
    is_tracing,
    prepare_init,
    prepare_marginal,
)
from otkit._convergence import check_finite_potentials, warn_unconverged
from otkit._solution import Iterate
from otkit.dense.backend import select_backend, solve_triton
from otkit.dense.implicit import ImplicitSinkhorn
from otkit.dense.loops import kernel_domain_is_safe, kernel_reference
from otkit.dense.loops import solve as solve_iterations
from otkit.dense.result import SinkhornResult
from otkit.options import SinkhornOptions, SinkhornSettings, Unpack, resolve_options

__all__ = ["PROFILER_RANGE", "sinkhorn", "solve_dense"]

# Every solve runs inside a torch.profiler range of this name (free when no profiler is recording): a profiler
# run sums the solver's share of a model's time from it (benchmarks/model_bench.py does).
PROFILER_RANGE = "otkit.sinkhorn"
_FINITE_HINT = "Check the cost scale against eps and the marginal weights."


def _check_plan_range(result: SinkhornResult) -> None:
    """An unbalanced optimum may hold more mass than the dtype can represent (very negative costs): refuse it."""
    with torch.no_grad():
        log_plan = (result.f.unsqueeze(-1) + result.g.unsqueeze(-2) - result.cost) / result.eps
        log_plan = log_plan + torch.log(result.a).unsqueeze(-1) + torch.log(result.b).unsqueeze(-2)
        largest = float(log_plan.max())
    if largest > math.log(torch.finfo(result.cost.dtype).max):
        raise ValueError(
            f"the unbalanced optimum has plan entries near exp({largest:.3g}), beyond {result.cost.dtype}: with "
            "relaxed marginals, very negative costs make it worth creating mass without bound. Raise the cost "
            "(unbalanced solutions depend on its offset), raise rho_a/rho_b or eps, or use float64."
        )


def sinkhorn(
    cost: Tensor,
    a: Tensor | None = None,
    b: Tensor | None = None,
    eps: float | None = None,
    *,
    init: tuple[Tensor, Tensor] | None = None,
    options: SinkhornOptions | None = None,
    **settings: Unpack[SinkhornSettings],
) -> SinkhornResult:
    r"""Solve a batch of entropic optimal transport problems with Sinkhorn iterations.

    .. math::
        \min_{P \ge 0}\ \langle P, C\rangle + \varepsilon\,\mathrm{KL}(P \,|\, a \otimes b)
        + \rho_a \mathrm{KL}(P 1 \,|\, a) + \rho_b \mathrm{KL}(P^\top 1 \,|\, b)

    where:

    - ``C`` is the cost ``(..., n, m)``; every leading dim is a batch of independent problems;
    - ``a`` ``(..., n)`` and ``b`` ``(..., m)`` are non-negative marginals (uniform by default);
    - ``KL(p|q) = sum p log(p/q) - p + q`` is the generalised Kullback-Leibler divergence;
    - a side with ``rho = None`` is a hard constraint (``P 1 = a``), so ``rho_a = rho_b = None`` is balanced
      OT, one ``None`` is semi-unbalanced, and two weights are unbalanced OT. ``rho`` is POT's ``reg_m`` and
      geomloss's ``reach ** p``.

    The solution is ``P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps)`` with potentials ``f``, ``g`` in cost
    units, obtained by alternating ``f = -lam_a eps LSE_j(log b_j + (g_j - C_ij) / eps)`` and the symmetric
    update of ``g`` (``lam = rho / (rho + eps)``, ``1`` when balanced), from ``g = 0`` or ``init``.

    Args:
        cost: ``(..., n, m)`` cost matrices, float16/bfloat16/float32/float64. Half precision is computed in
            float32; potentials and plan come back in float32.
        a: ``(n,)`` or ``(..., n)`` row weights, broadcast over the batch; ``None`` gives ``1/n``.
        b: ``(m,)`` or ``(..., m)`` column weights; ``None`` gives ``1/m``.
        eps: Entropic regularisation (> 0), in cost units; ``None``: that of ``options`` (0.05 by default).
        init: Warm start ``(f, g)`` in cost units, e.g. ``(res.f, res.g)`` of a nearby problem.
        options: All solver settings as one :class:`~otkit.SinkhornOptions`; ``None``: the defaults.
        **settings: Any other field of :class:`~otkit.SinkhornOptions`, changing that of ``options`` for this call:

            - ``rho_a``, ``rho_b``: KL weights relaxing the row and column marginals; ``None`` (default) or ``inf``
              keeps a marginal exact.
            - ``max_iter`` (1000): maximum number of iterations (one iteration updates ``f`` then ``g``).
            - ``tol`` (1e-6): stop once every problem's relative L1 column violation
              ``|P^T 1 - b exp(-g / rho_b)|_1 / |b|_1`` is at most ``tol``; ``None`` runs exactly ``max_iter``.
            - ``domain`` (``"auto"``): ``"log"`` (log-sum-exp, always stable), ``"kernel"`` (scaling updates,
              several times faster, stable only when ``(C - f0 - g0) / eps`` spans a moderate range) or
              ``"auto"``: the kernel domain when that range is safe for the dtype (a spread of 50 in float32,
              300 in float64), else log.
            - ``grad`` (``"unroll"``): ``"unroll"`` backpropagates through every iteration (memory grows with
              ``n_iter``); ``"implicit"`` differentiates the fixed point, with a backward whose memory does not
              depend on the number of iterations. Both give gradients for ``cost``, ``a``, ``b``.
            - ``check_every`` (10): iterations between convergence checks (each check reads one number on the
              host, except on the triton backend, which checks on the device).
            - ``backend`` (``"auto"``): where the iterations run. ``"torch"``: the PyTorch loops. ``"triton"``: a
              fused GPU kernel that runs all log-domain iterations of a problem on chip; it needs a CUDA cost
              with ``m <= 64`` columns in float32/float16/bfloat16, ``domain`` ``"log"`` or ``"auto"``, and
              ``grad="implicit"`` when autograd needs gradients. There each problem stops at its own first
              converged check: ``n_iter`` is the largest count and ``errors`` holds the last check only.
              ``"auto"``: the kernel when it can run and the problem has at most ``2**17`` entries, else the
              PyTorch loops, always on the CPU and for ``grad="unroll"`` under autograd.

    Returns:
        A :class:`~otkit.SinkhornResult` with ``f``, ``g``, ``plan``, ``value``, ``n_iter``,
        ``converged`` and ``marginal_error``.

    Raises:
        ValueError: on NaN/Inf costs or weights, negative or zero-mass marginals, unequal masses in a balanced
            problem, shapes that do not match, ``eps <= 0``, an empty dimension, ``max |C| / eps`` beyond the
            dtype's resolution (1e5 in float32, 1e13 in float64), or ``backend="triton"`` where
            the kernel cannot run. The message names the argument and the fix.

    Example:
        >>> import torch, otkit
        >>> cost = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
        >>> res = otkit.sinkhorn(cost, eps=0.1)  # the same: options=otkit.SinkhornOptions(eps=0.1)
        >>> res.plan
        tensor([[4.9998e-01, 2.2699e-05],
                [2.2699e-05, 4.9998e-01]], dtype=torch.float64)

    Convergence:
        If a problem does not reach ``tol`` within ``max_iter`` iterations a :class:`~otkit.ConvergenceWarning` is
        issued and ``converged`` is ``False`` for it; the returned plan is still the last iterate, finite.
        Usual causes: ``eps`` small compared with the cost scale (iterations needed grow like
        ``range(C) / eps``: raise ``max_iter``, rescale the cost, or warm start from a larger ``eps``);
        marginals with very uneven weights; a tolerance below the float32 noise floor (about 1e-7 times the
        number of points; use float64 or a larger ``tol``). Under ``torch.compile`` the loop always runs
        ``max_iter`` iterations without host synchronisation and the data-dependent input checks are skipped;
        ``domain="auto"`` then means ``"log"``, since choosing the kernel domain reads the data.

    Zero weights: entries with ``a_i = 0`` (or ``b_j = 0``) get empty plan rows (columns); their potentials are
    still defined by the update formula. With ``grad="implicit"`` on problems larger than 256 on both sides,
    gradients that reach the potentials of zero-weight points directly (not through the plan) are dropped.

    References:
        Cuturi (2013), Sinkhorn distances; Chizat, Peyre, Schmitzer, Vialard (2018), Scaling algorithms for
        unbalanced optimal transport problems; Sejourne et al. (2019), Sinkhorn divergences for unbalanced OT.
    """
    return solve_dense(cost, a, b, resolve_options("otkit.sinkhorn", options, eps, settings), init)


def solve_dense(
    cost: Tensor,
    a: Tensor | None,
    b: Tensor | None,
    options: SinkhornOptions,
    init: tuple[Tensor, Tensor] | None = None,
) -> SinkhornResult:
    """The solver behind :func:`sinkhorn`, with its options resolved, in the range :data:`PROFILER_RANGE`.

    Shapes: cost ``(..., n, m)``, a ``(..., n)`` or ``None``, b ``(..., m)`` or ``None``.
    """
    if options.max_iter < 1:
        raise ValueError(
            f"max_iter must be >= 1 for sinkhorn, got {options.max_iter}: a solve needs at least one iteration "
            "(max_iter=0 is for sinkhorn_attention, where it means plain softmax attention)."
        )
    with torch.profiler.record_function(PROFILER_RANGE):
        check_cost(cost)
        eps, rho_a, rho_b, domain = options.eps, options.rho_a, options.rho_b, options.domain

        work = cost.to(compute_dtype(cost.dtype))
        check_precision(work, eps)
        a = prepare_marginal(a, work.shape[:-1], work, "a", "n")
        b = prepare_marginal(b, work.shape[:-2] + work.shape[-1:], work, "b", "m")
        if rho_a is None and rho_b is None and not is_tracing():
            check_masses(a, b)
        f_init, g_init = prepare_init(init, work.shape[:-1], work.shape[:-2] + work.shape[-1:], work)
        unbalanced = rho_a is not None or rho_b is not None
        use_triton = select_backend(options, work, a, b) == "triton"

        f_ref = g_ref = None  # kernel-domain reference potentials, computed once for the whole batch
        if domain != "log" and not use_triton and not (domain == "auto" and is_tracing()):
            f_ref, g_ref = kernel_reference(work.detach(), f_init, g_init)

        def run(kind: str, c: Tensor, wa: Tensor, wb: Tensor) -> Iterate:
            if use_triton:
                return solve_triton(c, wa, wb, options, g_init)
            fi, gi = (f_init, g_init) if kind == "log" else (f_ref, g_ref)
            return solve_iterations(kind, c, wa, wb, options, fi, gi)

        kind = domain
        if use_triton:
            kind = "log"  # the kernel iterates in the log domain
        elif domain == "auto" and is_tracing():
            kind = "log"  # the safety check reads the data; a traced graph takes the always-stable domain
        elif domain == "auto":
            safe = kernel_domain_is_safe(work.detach(), eps, unbalanced, f_ref, g_ref)
            kind = "kernel" if safe else "log"

        def solve(kind: str) -> Iterate:
            if options.grad == "implicit":
                holder: list[Iterate] = []
                f, g = ImplicitSinkhorn.apply(work, a, b, lambda c, wa, wb: run(kind, c, wa, wb), holder, options)
                return Iterate(f=f, g=g, n_iter=holder[0].n_iter, errors=holder[0].errors)
            return run(kind, work, a, b)

        iterate = solve(kind)
        if not is_tracing() and not bool(torch.isfinite(iterate.f).all() & torch.isfinite(iterate.g).all()):
            if domain == "auto" and kind == "kernel":
                kind = "log"
                iterate = solve(kind)
            hint = "Use domain='log' or 'auto'." if kind == "kernel" else _FINITE_HINT
            check_finite_potentials(iterate.f, iterate.g, eps, f"In the {kind} domain. {hint}")
        result = SinkhornResult(
            f=iterate.f,
            g=iterate.g,
            cost=work,
            a=a,
            b=b,
            options=options,
            n_iter=iterate.n_iter,
            errors=iterate.errors,
            domain=kind,
            backend="triton" if use_triton else "torch",
        )
        if unbalanced and not is_tracing():
            _check_plan_range(result)
        if not is_tracing():
            warn_unconverged([result.error], options)
        return result
