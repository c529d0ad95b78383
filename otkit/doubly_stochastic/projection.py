"""``sinkhorn_knopp``: a fixed number of Sinkhorn-Knopp iterations as a differentiable layer."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from otkit._checks import check_positive_float, compute_dtype, is_tracing
from otkit._solution import Iterate
from otkit.dense.implicit import ImplicitSinkhorn
from otkit.doubly_stochastic.backend import run_triton, select_backend
from otkit.doubly_stochastic.unrolled import SinkhornKnopp, iterate
from otkit.options import Backend, GradMode, SinkhornOptions

__all__ = ["check_log_alpha", "check_n_iter", "sinkhorn_knopp"]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_log_alpha(log_alpha: Tensor, name: str = "log_alpha") -> None:
    """Check a ``(..., n, m)`` floating tensor; on the CPU (a free host read) also that it holds no NaN or +inf.

    ``-inf`` entries are allowed: they are zeros of the matrix (forbidden pairs).
    """
    if not isinstance(log_alpha, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (..., n, m), got {type(log_alpha).__name__}.")
    if log_alpha.dtype not in _FLOAT_DTYPES:
        raise ValueError(
            f"{name} must be a floating tensor (float16, bfloat16, float32 or float64), got {log_alpha.dtype}. "
            f"Convert it with {name}.float()."
        )
    if log_alpha.dim() < 2 or log_alpha.numel() == 0:
        raise ValueError(
            f"{name} must have shape (..., n, m) with n, m >= 1 and no empty batch dim, got {tuple(log_alpha.shape)}."
        )
    if log_alpha.device.type == "cpu" and not is_tracing():
        total = log_alpha.detach().sum()  # NaN if any entry is NaN (or +inf meets -inf), +inf if one is +inf
        if bool(torch.isnan(total) | (total == math.inf)):
            bad = "NaN" if bool(torch.isnan(log_alpha).any()) else "+inf"
            raise ValueError(
                f"{name} contains {bad} entries. Its entries are log-weights: use finite values, or -inf for a "
                "pair that must get zero weight."
            )


def check_n_iter(n_iter: int) -> int:
    """Return ``n_iter`` after checking that it is an int >= 1."""
    if not isinstance(n_iter, int) or isinstance(n_iter, bool) or n_iter < 1:
        raise ValueError(f"n_iter must be an int >= 1 (the number of row-and-column normalisations), got {n_iter!r}.")
    return n_iter


def _implicit(log_alpha: Tensor, n_iter: int, tau: float, dtype: torch.dtype) -> Tensor:
    """The same iterations, differentiated at the fixed point by :class:`otkit.dense.implicit.ImplicitSinkhorn`.

    The balanced problem of :func:`otkit.sinkhorn` with ``C = -log_alpha``, ``eps = tau`` and uniform marginals
    has the plan ``P / n``; its potentials are ``f = -tau (F - log n)``, ``g = -tau G`` where ``F``, ``G`` sum the
    row and column normalisers of the iterations.
    """
    b, n, m = log_alpha.shape
    cost = -log_alpha.to(dtype)
    a = torch.full((n,), 1.0 / n, dtype=dtype, device=cost.device).expand(b, n)
    w = torch.full((m,), 1.0 / m, dtype=dtype, device=cost.device).expand(b, m)

    def run(cost: Tensor, a: Tensor, w: Tensor) -> Iterate:
        rows, cols = iterate(-cost / tau, n_iter, False)[1].totals()
        f = -tau * (rows.squeeze(-1) - math.log(n))
        g = -tau * cols.squeeze(-2)
        return Iterate(f=f, g=g, n_iter=n_iter, errors=f.new_zeros((0, b)))

    options = SinkhornOptions(eps=tau, max_iter=n_iter, tol=None)
    f, g = ImplicitSinkhorn.apply(cost, a, w, run, [], options)
    plan = torch.exp((f.unsqueeze(-1) + g.unsqueeze(-2) - cost) / tau - math.log(m))
    return plan.to(log_alpha.dtype)


def sinkhorn_knopp(
    log_alpha: Tensor,
    n_iter: int = 20,
    tau: float = 1.0,
    *,
    grad: GradMode = "unroll",
    backend: Backend = "auto",
) -> Tensor:
    r"""Project ``exp(log_alpha / tau)`` towards the doubly-stochastic matrices in ``n_iter`` Sinkhorn steps.

    The layer of Sinkhorn networks, Gumbel-Sinkhorn and manifold-constrained hyper-connections (mHC).

    Each iteration normalises the rows of the matrix to sum to 1, then its columns to sum to ``n / m``, in the log
    domain (one ``log_softmax`` over each axis)::

        X = log_alpha / tau
        repeat n_iter times:  X = X - LSE_j(X)  (rows);  X = X - LSE_i(X) + log(n / m)  (columns)
        return exp(X)

    The output's columns sum to ``n / m`` exactly (the last step normalises them) and its rows to 1 up to the
    error left after ``n_iter`` iterations; square matrices are doubly stochastic. The number of iterations is
    fixed: there is no tolerance, no convergence report, and no host synchronisation (no ``.item()``, no
    data-dependent control flow), so the layer runs under ``torch.compile(fullgraph=True)`` and inside CUDA
    graphs.

    Relation to :func:`otkit.sinkhorn`: this is the same problem with cost ``C = -log_alpha``, ``eps = tau`` and
    uniform marginals ``a = 1/n``, ``b = 1/m``, whose plan is ``P / n``: after the same number of iterations
    (``tol=None, max_iter=n_iter``) the two agree. :func:`otkit.sinkhorn` is the solver (a tolerance, potentials,
    a result object, any marginals); this is the layer (a fixed cost per call, a matrix out, nothing to check).

    Args:
        log_alpha: ``(..., n, m)`` log-weights (scores), any leading batch dims; float16/bfloat16 are computed
            in float32. ``-inf`` entries stay exact zeros (every row and column needs a finite entry).
        n_iter: Number of row-then-column normalisations (>= 1); 20 as in the papers.
        tau: Temperature (> 0): the matrix normalised is ``exp(log_alpha / tau)``; as ``tau -> 0`` the output
            tends to the permutation matrix of :func:`otkit.matching`.
        grad: ``"unroll"`` (default): the exact gradient of the ``n_iter`` iterations, what the papers train
            with, by a reverse pass that keeps ``n m + n_iter (n + m)`` numbers per matrix instead of autograd's
            ``2 n_iter`` matrices. ``"implicit"``: the gradient of the fixed point (the converged projection),
            by one linear solve of :func:`otkit.sinkhorn`'s implicit differentiation; equal to ``"unroll"`` once
            the iterations have converged, and independent of ``n_iter`` in memory. Its backward checks its
            linear solve on the host, so CUDA graphs need ``"unroll"``.
        backend: ``"auto"`` (default), ``"torch"`` or ``"triton"``: where the iterations run. ``"triton"``: fused
            kernels for CUDA tensors, forward and backward each one launch that runs every iteration of a group
            of matrices on chip; they take ``n, m <= 16``, float32/float16/bfloat16 and ``grad="unroll"``, and
            not ``torch.compile`` tracing. ``"auto"``: the kernels where they can run on CUDA, the PyTorch
            iterations otherwise (on the CPU: cache-blocked, batch-last for matrices up to 16 x 16).

    Returns:
        ``(..., n, m)`` in the dtype of ``log_alpha``: rows summing to 1 (up to the iteration error), columns to
        ``n / m``.

    Raises:
        ValueError: when ``log_alpha`` is not a floating tensor ``(..., n, m)`` with non-empty dims, holds NaN or
            ``+inf`` (checked on the CPU only, where it costs no synchronisation), or when ``n_iter``, ``tau`` or
            ``grad`` is out of range, or ``backend="triton"`` where the kernels cannot run.

    Example:
        >>> import torch, otkit
        >>> gen = torch.Generator().manual_seed(0)
        >>> p = otkit.sinkhorn_knopp(torch.randn(1000, 4, 4, generator=gen), n_iter=20)
        >>> columns, rows = p.sum(-2), p.sum(-1)
        >>> p.shape, float((columns - 1).abs().max()) < 1e-6, float((rows - 1).abs().max()) < 1e-2
        (torch.Size([1000, 4, 4]), True, True)

    References:
        Sinkhorn and Knopp (1967); Adams and Zemel (2011), Ranking via Sinkhorn propagation; Mena, Belanger,
        Linderman, Snoek (2018), Learning latent permutations with Gumbel-Sinkhorn networks.
    """
    check_log_alpha(log_alpha)
    n_iter = check_n_iter(n_iter)
    tau = check_positive_float(tau, "tau")
    if grad not in ("unroll", "implicit"):
        raise ValueError(f"grad must be 'unroll' or 'implicit', got {grad!r}.")
    shape = log_alpha.shape
    flat = log_alpha.reshape(-1, *shape[-2:])
    dtype = compute_dtype(log_alpha.dtype)
    if select_backend(backend, log_alpha, grad) == "triton":
        return run_triton(flat, n_iter, tau).reshape(shape)
    if grad == "implicit":
        return _implicit(flat, n_iter, tau, dtype).reshape(shape)
    return SinkhornKnopp.apply(flat, n_iter, tau, dtype).reshape(shape)
