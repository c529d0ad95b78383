"""Entropic Wasserstein barycenters of histograms on a fixed support: :func:`sinkhorn_barycenter`."""

from __future__ import annotations

from torch import Tensor

from otkit._checks import check_cost, check_precision
from otkit.barycenter.ibp import solve_barycenter
from otkit.barycenter.inputs import check_iteration_options, prepare_hists, prepare_weights
from otkit.barycenter.kernels import DenseKernel
from otkit.barycenter.result import BarycenterResult
from otkit.options import SinkhornOptions, SinkhornSettings, Unpack, resolve_options

__all__ = ["sinkhorn_barycenter"]


def sinkhorn_barycenter(
    hists: Tensor,
    cost: Tensor,
    weights: Tensor | None = None,
    eps: float | None = None,
    *,
    debiased: bool = False,
    options: SinkhornOptions | None = None,
    **settings: Unpack[SinkhornSettings],
) -> BarycenterResult:
    r"""Entropic Wasserstein barycenters of histograms, by iterative Bregman projections in the log domain.

    .. math::
        b = \arg\min_b \sum_k w_k\, W_\varepsilon(a_k, b), \qquad
        W_\varepsilon(a, b) = \min_{P 1 = a,\ P^\top 1 = b} \langle P, C\rangle
        + \varepsilon \sum_{ij} P_{ij} (\log P_{ij} - 1)

    (Benamou et al. 2015), or with ``debiased=True`` the barycenter of the debiased costs
    ``W_eps(a_k, b) - W_eps(b, b) / 2`` (Janati et al. 2020), whose barycenter of a single input is that input
    (the plain one is blurred by about ``sqrt(eps)``).

    Convention: ``eps`` is POT's ``reg`` (``ot.bregman.barycenter(A, M, reg, method="sinkhorn_log")`` and
    ``ot.bregman.barycenter_debiased`` solve the same problems, with ``A = hists.T`` and ``M = cost``). The
    entropy is that of ``P`` itself, as in POT, not :func:`otkit.sinkhorn`'s ``KL(P | a x b)``: the two differ by
    ``eps (H(a_k) + H(b))``, which depends on ``b`` and would sharpen the barycenter.

    Args:
        hists: ``(..., k, n)`` the ``k`` input histograms of each problem, >= 0, all of the same mass; leading
            dims are a batch of independent problems.
        cost: ``(n, m)`` or ``(..., n, m)`` (one per problem) the cost between the inputs' support and the
            barycenter's; ``debiased=True`` needs one support: a square, symmetric cost.
        weights: ``(k,)`` or ``(..., k)`` barycentric weights, normalised to sum to 1; ``None``: ``1 / k``.
        eps: Entropic regularisation (> 0), in cost units; ``None``: that of ``options`` (0.05 by default).
        debiased: Compute the debiased barycenter.
        options: Settings as one :class:`~otkit.SinkhornOptions`; ``None``: the defaults.
        **settings: ``max_iter`` (1000), ``tol`` (1e-6: stop once ``sum_k w_k |P_k^T 1 - b|_1 / |b|_1`` is at
            most ``tol`` in every problem; ``None`` runs ``max_iter`` iterations) and ``check_every`` (10). The
            iterations are in the log domain and differentiated by unrolling: ``rho_a``/``rho_b``,
            ``domain="kernel"``, ``grad="implicit"`` and ``backend="triton"`` are refused.

    Returns:
        A :class:`~otkit.BarycenterResult`: ``barycenter (..., m)``, ``n_iter``, ``errors``, ``converged``.
        The barycenter is differentiable in ``hists``, ``cost`` and ``weights`` (autograd records the
        iterations).

    Raises:
        ValueError: on NaN/Inf, negative or zero-mass inputs, inputs of unequal masses, shapes that do not match,
            a non-square cost with ``debiased=True``, ``max |C| / eps`` beyond the dtype's resolution, or a
            refused setting. The message names the argument and the fix.

    Example:
        >>> import torch, otkit
        >>> t = torch.linspace(0, 1, 50, dtype=torch.float64)
        >>> hists = torch.stack([torch.exp(-(t - 0.2) ** 2 / 0.01), torch.exp(-(t - 0.8) ** 2 / 0.01)])
        >>> hists = hists / hists.sum(-1, keepdim=True)
        >>> res = otkit.sinkhorn_barycenter(hists, (t[:, None] - t) ** 2, eps=0.01)
        >>> round(float((res.barycenter * t).sum()), 3), bool(res.converged)
        (0.5, True)

    Convergence: a :class:`~otkit.ConvergenceWarning` names the problems that did not reach ``tol``. The
    iterations needed grow like ``range(C) / eps``; in float32 the errors stop near ``1e-7`` times the support
    size.
    """
    caller = "otkit.sinkhorn_barycenter"
    options = resolve_options(caller, options, eps, settings)
    check_iteration_options(options, caller)
    hists = prepare_hists(hists, 1, "hists", "(..., k, n)")
    check_cost(cost)
    cost = cost.to(dtype=hists.dtype, device=hists.device)
    n, m = cost.shape[-2:]
    if hists.shape[-1] != n:
        raise ValueError(f"hists (..., k, n) must have n = {n} (cost.shape[-2]), got shape {tuple(hists.shape)}.")
    if debiased and n != m:
        raise ValueError(f"debiased=True needs one support, a square cost (n, n); got cost of shape {(n, m)}.")
    if cost.dim() > 2:
        if cost.shape[:-2] != hists.shape[:-2]:
            raise ValueError(
                f"a batched cost (..., n, m) must have the batch dims {tuple(hists.shape[:-2])} of hists, got "
                f"shape {tuple(cost.shape)}; pass one (n, m) cost for every problem."
            )
        cost = cost.unsqueeze(-3)  # shared by the k inputs of a problem
    check_precision(cost, options.eps)
    w = prepare_weights(weights, hists.shape[:-1], hists)
    kernel = DenseKernel(cost, options.eps)
    return solve_barycenter(hists, w.unsqueeze(-1), kernel, (m,), options, debiased)
