"""Sinkhorn iterations in the log and the kernel (scaling) domain.

Both loops solve the same fixed point. With ``lam = rho / (rho + eps)`` (``1`` for a balanced side)::

    f_i = -lam_a * eps * LSE_j(log b_j + (g_j - C_ij) / eps)
    g_j = -lam_b * eps * LSE_i(log a_i + (f_i - C_ij) / eps)

starting from ``g`` (the initial ``f`` only serves as the kernel domain's reference point).

Layout: the cost is stored with its longer axis last and contiguous, so that both half-iterations run as
vectorised passes along memory (a batched vector-matrix product for one side, a contiguous dot product for the
other). On the multi-prompt shape (many problems of 1024 pixels x 6-8 prompts) this layout is several times
faster than the naive one.

Stopping follows the one rule of :mod:`otkit._convergence`: every ``check_every`` iterations the relative L1
violation of the column condition, ``|P^T 1 - b * exp(-g / rho_b)|_1 / |b|_1``, is computed on the device for
every problem; the host reads its maximum (one synchronisation per check) and stops once every problem is below
``tol``. While ``torch.compile`` traces the loop it runs the full ``max_iter`` iterations with no synchronisation
at all.
"""

from __future__ import annotations

import torch
from torch import Tensor

from otkit._checks import is_tracing
from otkit._convergence import is_check, lams, marginal_error, should_stop
from otkit._solution import Iterate
from otkit.options import SinkhornOptions

__all__ = [
    "KERNEL_SAFE_SPREAD",
    "kernel_domain_is_safe",
    "kernel_reference",
    "solve",
    "solve_kernel",
    "solve_log",
]

# Largest spread of the kernel exponent (C - f0 - g0) / eps for which the scaling domain cannot overflow or
# underflow: scalings stay within exp(+-spread) and the kernel within [exp(-spread), 1].
KERNEL_SAFE_SPREAD = {torch.float32: 50.0, torch.float64: 300.0}


def solve_log(cost: Tensor, a: Tensor, b: Tensor, options: SinkhornOptions, g_init: Tensor | None) -> Iterate:
    """Log-domain Sinkhorn. Shapes: cost ``(*batch, n, m)``, a ``(*batch, n)``, b ``(*batch, m)``.

    All tensors are in the compute dtype. Autograd records the iterations when the inputs require grad.
    """
    n, m = cost.shape[-2:]
    eps, rho_b = options.eps, options.rho_b
    lam_a, lam_b = lams(options)
    transposed = m < n
    # Z: -C / eps, longer axis last. (*batch, m, n) if transposed else (*batch, n, m).
    z = -(cost.transpose(-1, -2) if transposed else cost) / eps
    z = z.contiguous()
    log_a, log_b = torch.log(a), torch.log(b)
    ge = torch.zeros_like(b) if g_init is None else g_init / eps  # g / eps, (*batch, m)
    fe = torch.zeros_like(a)
    errors = []
    n_iter = options.max_iter
    for it in range(options.max_iter):
        if transposed:
            fe = -lam_a * torch.logsumexp(z + (log_b + ge).unsqueeze(-1), dim=-2)
            lse = torch.logsumexp(z + (log_a + fe).unsqueeze(-2), dim=-1)
        else:
            fe = -lam_a * torch.logsumexp(z + (log_b + ge).unsqueeze(-2), dim=-1)
            lse = torch.logsumexp(z + (log_a + fe).unsqueeze(-1), dim=-2)
        check = is_check(it, options)
        if check:
            with torch.no_grad():
                errors.append(marginal_error(torch.exp(log_b + ge + lse), b, ge * eps, rho_b))
        ge = -lam_b * lse
        if check and should_stop(errors[-1], options):
            n_iter = it + 1
            break
    return Iterate(f=fe * eps, g=ge * eps, n_iter=n_iter, errors=torch.stack(errors))


def kernel_reference(cost: Tensor, f_init: Tensor | None, g_init: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Reference potentials ``(f0, g0)`` of the kernel domain: the warm start, or (row minima of C, None = 0)."""
    if f_init is not None and g_init is not None:
        return f_init, g_init
    return cost.amin(-1), None


def kernel_domain_is_safe(cost: Tensor, eps: float, unbalanced: bool, f0: Tensor, g0: Tensor | None) -> bool:
    """Whether the scaling domain is free of overflow for this problem batch (one host synchronisation).

    Balanced: the spread of ``(C - f0 - g0) / eps`` must stay under :data:`KERNEL_SAFE_SPREAD` for the dtype.
    Unbalanced sides move mass by factors up to ``exp(|C| / eps)``, so without a warm start ``max |C| / eps``
    must stay under it as well; a warm-started unbalanced problem always runs in the log domain.
    """
    limit = KERNEL_SAFE_SPREAD[cost.dtype]
    if g0 is not None:  # warm start
        if unbalanced:
            return False
        z = (cost - f0.unsqueeze(-1) - g0.unsqueeze(-2)) / eps
        spread = (z.amax((-2, -1)) - z.amin((-2, -1))).max()
    else:  # f0 = row minima, g0 = 0: the exponent spans each row's range
        spread = (cost.amax(-1) - f0).max() / eps
    if unbalanced:
        spread = torch.maximum(spread, cost.abs().max() / eps)
    return bool(spread <= limit)


def _kernel_matrix(cost: Tensor, f0: Tensor, g0: Tensor | None, eps: float, transposed: bool) -> Tensor:
    """``K = exp((f0_i + g0_j - C_ij) / eps)`` stored longer axis last; two passes when autograd is off.

    ``exp``, not ``exp2`` of ``x log2(e)``: that product rounds the exponent, and at exponents of tens the plan
    entries lost an order of magnitude of relative precision, enough to move the demo's training by a point.
    """
    f0 = f0.unsqueeze(-2) if transposed else f0.unsqueeze(-1)
    g0 = None if g0 is None else (g0.unsqueeze(-1) if transposed else g0.unsqueeze(-2))
    layout = cost.transpose(-1, -2) if transposed else cost  # (*batch, m, n) or (*batch, n, m)
    if torch.is_grad_enabled() and cost.requires_grad:
        log_k = (f0 - layout) if g0 is None else (f0 + g0 - layout)
        return torch.exp(log_k / eps).contiguous()
    kernel = torch.empty(layout.shape, dtype=cost.dtype, device=cost.device)
    torch.sub(f0 / eps, layout, alpha=1 / eps, out=kernel)
    if g0 is not None:
        kernel.add_(g0 / eps)
    return kernel.exp_()


def solve_kernel(
    cost: Tensor, a: Tensor, b: Tensor, options: SinkhornOptions, f0: Tensor, g0: Tensor | None
) -> Iterate:
    """Scaling-domain Sinkhorn around reference potentials ``f0 (*batch, n)``, ``g0 (*batch, m)`` (None: 0).

    With ``K_ij = exp((f0_i + g0_j - C_ij) / eps)``, ``u = exp((f - f0) / eps)`` and ``v = exp((g - g0) / eps)``
    the updates read ``u = alpha / (K (b v))^lam_a`` and ``v = beta / (K^T (a u))^lam_b``, where
    ``alpha = exp(-f0 / (rho_a + eps))`` (``1`` when balanced) and likewise ``beta``. The marginals stay out of
    the kernel, so zero weights are harmless. Only call it where :func:`kernel_domain_is_safe` holds.
    """
    n, m = cost.shape[-2:]
    eps, rho_a, rho_b = options.eps, options.rho_a, options.rho_b
    lam_a, lam_b = lams(options)
    transposed = m < n
    kernel = _kernel_matrix(cost, f0, g0, eps, transposed)
    # log alpha, log beta: offsets of the unbalanced updates (None on a balanced side or a zero reference)
    log_alpha = None if rho_a is None else -f0 / (rho_a + eps)
    log_beta = None if (rho_b is None or g0 is None) else -g0 / (rho_b + eps)

    # Both products are a row vector times a matrix: on one thread, w^T K^T ran 2x to 10x faster than
    # linalg.vecdot(K, w) (which forms K * w) and than K @ w (a slow batched path) at 1024^2 to 4096^2 and 16 x 256^2.
    def rows(w: Tensor) -> Tensor:  # (K w)_i = sum_j K_ij w_j, w (*batch, m) -> (*batch, n)
        return (w.unsqueeze(-2) @ (kernel if transposed else kernel.transpose(-1, -2))).squeeze(-2)

    def cols(w: Tensor) -> Tensor:  # (K^T w)_j = sum_i K_ij w_i, w (*batch, n) -> (*batch, m)
        return (w.unsqueeze(-2) @ (kernel.transpose(-1, -2) if transposed else kernel)).squeeze(-2)

    def log_scaling(s: Tensor, lam: float, log_offset: Tensor | None) -> Tensor:  # log u = log alpha - lam log s
        log_s = torch.log(s)
        return -lam * log_s if log_offset is None else log_offset - lam * log_s

    # The loop carries the weighted scalings a*u and b*v (one fused op per balanced update).
    a_alpha = a if log_alpha is None else a * torch.exp(log_alpha)
    b_beta = b if log_beta is None else b * torch.exp(log_beta)

    def weighted(s: Tensor, lam: float, weights: Tensor) -> Tensor:
        return weights / s if lam == 1.0 else weights * s.pow(-lam)

    bv = b  # v = 1 at the start: g = g0
    ktu = None
    errors = []
    n_iter = options.max_iter
    for it in range(options.max_iter):
        kbv = rows(bv)
        au = weighted(kbv, lam_a, a_alpha)
        ktu_prev, ktu = ktu, cols(au)
        check = is_check(it, options)
        if check:
            with torch.no_grad():
                g = torch.zeros_like(b) if g0 is None else g0  # the potential of bv, for a relaxed side's target
                if rho_b is not None and ktu_prev is not None:
                    g = g + eps * log_scaling(ktu_prev, lam_b, log_beta)
                errors.append(marginal_error(bv * ktu, b, g, rho_b))
        bv = weighted(ktu, lam_b, b_beta)
        if check and should_stop(errors[-1], options):
            n_iter = it + 1
            break
    f = f0 + eps * log_scaling(kbv, lam_a, log_alpha)
    g = eps * log_scaling(ktu, lam_b, log_beta)
    if g0 is not None:
        g = g + g0
    return Iterate(f=f, g=g, n_iter=n_iter, errors=torch.stack(errors))


# Problems are solved in groups whose cost fits in a CPU's cache: every group runs all its iterations while its
# kernel stays cache-resident, instead of streaming the whole batch from memory twice per iteration.
CPU_CHUNK_BYTES = 4 * 2**20


def _stack_errors(traces: list[Tensor]) -> Tensor:
    """Concatenate per-group error traces ``(n_checks_k, batch_k)`` along the batch, padding short ones."""
    length = max(t.shape[0] for t in traces)
    padded = [torch.cat([t, t[-1:].expand(length - t.shape[0], -1)]) for t in traces]
    return torch.cat(padded, dim=1)


def solve(
    kind: str,
    cost: Tensor,
    a: Tensor,
    b: Tensor,
    options: SinkhornOptions,
    f_init: Tensor | None,
    g_init: Tensor | None,
) -> Iterate:
    """Run the ``kind`` (``"log"`` or ``"kernel"``) loop over a batch ``(*batch, n, m)``, cache-blocked on CPUs.

    ``f_init``/``g_init`` are the warm start of the log domain (only ``g`` is used) and the reference potentials
    of the kernel domain (``f_init`` required there, see :func:`kernel_reference`).

    This is the PyTorch backend of :func:`otkit.sinkhorn`. On CUDA, small-``m`` problems may run in the fused
    kernel of :mod:`otkit.dense.kernel` instead (the rule is :func:`otkit.dense.backend.select_backend`); on the CPU
    ``backend="auto"`` always comes here, where the cache blocking below makes it the fastest path.
    """
    batch, (n, m) = cost.shape[:-2], cost.shape[-2:]
    flat = (cost.reshape(-1, n, m), a.reshape(-1, n), b.reshape(-1, m))
    inits = (
        None if f_init is None else f_init.reshape(-1, n),
        None if g_init is None else g_init.reshape(-1, m),
    )
    total = flat[0].shape[0]
    step = total
    if cost.device.type == "cpu" and not is_tracing():
        step = max(1, CPU_CHUNK_BYTES // (n * m * cost.element_size()))
    parts = []
    for start in range(0, total, step):
        c, wa, wb = (t[start : start + step] for t in flat)
        fi, gi = (None if t is None else t[start : start + step] for t in inits)
        if kind == "log":
            parts.append(solve_log(c, wa, wb, options, gi))
        else:
            parts.append(solve_kernel(c, wa, wb, options, fi, gi))
    if len(parts) == 1:
        f, g, errors = parts[0].f, parts[0].g, parts[0].errors
    else:
        f = torch.cat([p.f for p in parts])
        g = torch.cat([p.g for p in parts])
        errors = _stack_errors([p.errors for p in parts])
    return Iterate(
        f=f.reshape(*batch, n),
        g=g.reshape(*batch, m),
        n_iter=max(p.n_iter for p in parts),
        errors=errors.reshape(-1, *batch),
    )
