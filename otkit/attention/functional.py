"""Sinkformer attention as functions: attention matrices normalised on both sides by entropic OT.

- :func:`sinkhorn_attention`: the attended values, on ``(..., L, d)`` tensors with padding masks, dense or
  streamed;
- :func:`sinkhorn_attention_weights`: the attention matrix itself.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from otkit._checks import check_cost, check_spread, compute_dtype
from otkit._deprecation import warn_once
from otkit.attention.streamed import streamed_attention
from otkit.dense.solve import solve_dense
from otkit.geometry.costs import Geometry, check_points, unit_vectors
from otkit.geometry.storage import Storage, choose_storage
from otkit.options import SinkhornOptions, SinkhornSettings, Unpack, resolve_options

__all__ = ["ATTENTION_OPTIONS", "CostKind", "sinkhorn_attention", "sinkhorn_attention_weights"]

CostKind = Literal["dot", "cosine"]

#: Sinkformer attention's default: softmax temperature 1, two Sinkhorn iterations (rows, columns, rows, columns,
#: then the final row normalisation), a fixed count (no tolerance).
ATTENTION_OPTIONS = SinkhornOptions(eps=1.0, max_iter=2, tol=None)


def _padding_weights(mask: Tensor | None, shape: torch.Size, like: Tensor, name: str) -> Tensor | None:
    """Uniform weights over the unpadded positions (``mask`` True = padding), ``(..., L)``; ``None`` if no mask."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"{name} must be a bool tensor (True = padding), got {got}.")
    try:
        keep = (~mask).expand(shape)
    except RuntimeError:
        raise ValueError(f"{name} of shape {tuple(mask.shape)} does not broadcast to {tuple(shape)}.") from None
    weights = keep.to(like.dtype)
    count = weights.sum(-1, keepdim=True)
    if not torch.compiler.is_compiling() and bool((count == 0).any()):
        raise ValueError(f"{name} masks every position of some sequence; keep at least one token per sequence.")
    return weights / count.clamp_min(1)


def _streams(storage: Storage, q: Tensor, k: Tensor, return_weights: bool, dropout_p: float) -> bool:
    """Whether :func:`sinkhorn_attention` takes the streamed path."""
    entries = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2]).numel() * q.shape[-2] * k.shape[-2]
    if storage == "streaming" and (return_weights or dropout_p > 0):
        raise ValueError(
            "storage='streaming' never forms the attention matrix, so it cannot return it or drop entries of it: "
            "pass return_weights=False and dropout_p=0, or storage='dense'."
        )
    streamed = not choose_storage(storage, "dot", entries, compute_dtype(q.dtype))
    return streamed and not (return_weights or dropout_p > 0)


def _streamed(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    options: SinkhornOptions,
    key_padding_mask: Tensor | None,
    query_padding_mask: Tensor | None,
    cost: CostKind,
) -> Tensor:
    """The streamed path of :func:`sinkhorn_attention` (:mod:`otkit.attention.streamed`)."""
    dtype = compute_dtype(q.dtype)
    x, y = check_points(q.to(dtype), k.to(dtype), "dot", names=("q", "k"))
    batch, (n, m) = x.shape[:-2], (x.shape[-2], y.shape[-2])
    if cost == "dot":
        x = x / q.shape[-1] ** 0.5
    else:
        x, y = unit_vectors(x), unit_vectors(y)
    check_spread(Geometry(cost, x.detach(), y.detach()).spread(), options.eps, dtype)  # spread: needs no backend
    uniform = lambda size: x.new_full((size,), 1.0 / size).expand(*batch, size)  # noqa: E731
    a = _padding_weights(query_padding_mask, (*batch, n), x, "query_padding_mask")
    b = _padding_weights(key_padding_mask, (*batch, m), x, "key_padding_mask")
    a, b = uniform(n) if a is None else a, uniform(m) if b is None else b
    values = v.to(dtype).expand(*batch, m, v.shape[-1])
    flat = [t.reshape(-1, *t.shape[len(batch) :]) for t in (x, y, values, a, b)]
    out = streamed_attention(*flat, cost, options)
    return out.reshape(*batch, n, v.shape[-1]).to(v.dtype)


def _check_inputs(q: Tensor, k: Tensor, v: Tensor | None) -> None:
    """Shapes of ``q (..., L_q, d)``, ``k (..., L_k, d)`` and ``v (..., L_k, d_v)``, with broadcastable batch dims."""
    named = [("q", q), ("k", k)] + ([] if v is None else [("v", v)])
    for name, t in named:
        if not isinstance(t, Tensor) or t.dim() < 2:
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a tensor of shape (..., L, d), got {got}.")
    if q.shape[-1] != k.shape[-1] or (v is not None and k.shape[-2] != v.shape[-2]):
        raise ValueError(
            f"shapes do not match: q {tuple(q.shape)}, k {tuple(k.shape)}"
            + ("" if v is None else f", v {tuple(v.shape)}")
            + "; need q (..., L_q, d), k (..., L_k, d), v (..., L_k, d_v)."
        )
    try:
        torch.broadcast_shapes(*(t.shape[:-2] for _, t in named))
    except RuntimeError:
        raise ValueError(
            "the batch dims of q, k and v do not broadcast: "
            + ", ".join(f"{name} {tuple(t.shape[:-2])}" for name, t in named)
            + "."
        ) from None


def _dense_logits(
    q: Tensor,
    k: Tensor,
    options: SinkhornOptions,
    key_padding_mask: Tensor | None,
    query_padding_mask: Tensor | None,
    cost: CostKind,
) -> Tensor:
    """The attention logits ``(..., L_q, L_k)`` in float32 at least: ``log b_j + (g_j - C_ij) / eps``."""
    if cost == "dot":
        c = -(q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    else:
        c = 1 - unit_vectors(q) @ unit_vectors(k).transpose(-1, -2)
    check_cost(c, "attention cost (from q and k)")  # NaN/Inf in q or k: an error, also at max_iter=0
    c32 = c.float() if c.dtype in (torch.float16, torch.bfloat16) else c  # weights and plan in float32 at least
    a = _padding_weights(query_padding_mask, c32.shape[:-1], c32, "query_padding_mask")
    b = _padding_weights(key_padding_mask, c32.shape[:-2] + c32.shape[-1:], c32, "key_padding_mask")
    logits = -c32 / options.eps  # (..., L_q, L_k)
    if b is not None:
        logits = logits + torch.log(b).unsqueeze(-2)  # padded keys: -inf, zero weight
    if options.max_iter > 0:
        res = solve_dense(c32, a, b, options)
        logits = logits + res.g.unsqueeze(-2) / options.eps
    return logits


def _check_cost_kind(cost: str) -> None:
    if cost not in ("dot", "cosine"):
        raise ValueError(f"cost must be 'dot' or 'cosine', got {cost!r}.")


def sinkhorn_attention_weights(
    q: Tensor,
    k: Tensor,
    eps: float | None = None,
    *,
    key_padding_mask: Tensor | None = None,
    query_padding_mask: Tensor | None = None,
    cost: CostKind = "dot",
    options: SinkhornOptions | None = None,
    **settings: Unpack[SinkhornSettings],
) -> Tensor:
    r"""The Sinkformer attention matrix ``(..., L_q, L_k)`` of :func:`sinkhorn_attention` (rows sum to 1).

    .. math:: A_{ij} = \mathrm{softmax}_j\big((g_j - C_{ij}) / \varepsilon + \log b_j\big)

    Args:
        q: ``(..., L_q, d)`` queries.
        k: ``(..., L_k, d)`` keys.
        eps: The temperature; ``None``: that of ``options`` (:data:`~otkit.ATTENTION_OPTIONS`: 1).
        key_padding_mask: ``(..., L_k)`` bool, True marks padding (zero weight, no marginal mass).
        query_padding_mask: ``(..., L_q)`` bool, True marks padding (left out of the column marginals).
        cost: ``"dot"`` for ``-q.k / sqrt(d)`` or ``"cosine"`` for ``1 - cos(q, k)``.
        options: All solver settings; ``None``: :data:`~otkit.ATTENTION_OPTIONS` (eps 1, 2 iterations, no tol).
        **settings: Any other field of :class:`~otkit.SinkhornOptions`, as in :func:`sinkhorn_attention`.

    Returns:
        ``(..., L_q, L_k)`` float32 (float64 for float64 inputs), differentiable.

    Example:
        >>> import torch, otkit
        >>> q, k = torch.randn(2, 8, 16), torch.randn(2, 8, 16)
        >>> w = otkit.sinkhorn_attention_weights(q, k, max_iter=20)
        >>> torch.allclose(w.sum(-1), torch.ones(2, 8)), torch.allclose(w.sum(-2), torch.ones(2, 8), atol=1e-3)
        (True, True)
    """
    options = resolve_options("otkit.sinkhorn_attention_weights", options, eps, settings, ATTENTION_OPTIONS)
    _check_cost_kind(cost)
    _check_inputs(q, k, None)
    return torch.softmax(_dense_logits(q, k, options, key_padding_mask, query_padding_mask, cost), dim=-1)


def sinkhorn_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    eps: float | None = None,
    *,
    key_padding_mask: Tensor | None = None,
    query_padding_mask: Tensor | None = None,
    cost: CostKind = "dot",
    dropout_p: float = 0.0,
    storage: Storage = "auto",
    options: SinkhornOptions | None = None,
    return_weights: bool = False,
    **settings: Unpack[SinkhornSettings],
) -> Tensor:
    r"""Sinkformer attention: softmax attention whose matrix is also normalised over the queries.

    The attention matrix is the row-normalised Sinkhorn iterate for the cost ``C = -q.k / sqrt(d)`` (or
    ``1 - cos(q, k)``) at temperature ``eps``, with uniform marginals over the unpadded queries and keys:

    .. math:: A_{ij} = \mathrm{softmax}_j\big((g_j - C_{ij}) / \varepsilon + \log b_j\big)

    where ``g`` is the key potential after ``max_iter`` full Sinkhorn iterations. ``max_iter = 0`` is exactly
    softmax attention (row normalisation only, no solve); as ``max_iter`` grows every row still sums to 1 and
    every column tends to ``L_q / L_k`` (doubly stochastic up to the marginals).

    Args:
        q: ``(..., L_q, d)`` queries.
        k: ``(..., L_k, d)`` keys.
        v: ``(..., L_k, d_v)`` values.
        eps: The temperature (``1`` with ``cost="dot"`` is the usual softmax scaling); ``None``: that of
            ``options``.
        key_padding_mask: ``(..., L_k)`` bool, True marks padding: those keys get zero weight and no marginal mass.
        query_padding_mask: ``(..., L_q)`` bool, True marks padding: those queries are left out of the column
            marginals (their outputs are still finite).
        cost: ``"dot"`` for ``-q.k / sqrt(d)`` or ``"cosine"`` for ``1 - cos(q, k)``.
        dropout_p: Dropout on the attention weights.
        storage: ``"dense"`` forms the ``L_q x L_k`` matrix; ``"streaming"`` never does: the iterations stream
            tiles of ``q k^T`` (log domain) and the backward recomputes them, with the gradient of the iterations
            run (``grad="unroll"``'s) and memory ``O(L (d + max_iter))``; it refuses ``dropout_p > 0``.
            ``"auto"``: streaming when the matrices of the batch would take more than
            :data:`otkit.geometry.DENSE_MAX_BYTES` and dropout is off.
        options: All solver settings; ``None``: :data:`~otkit.ATTENTION_OPTIONS` (eps 1, 2 iterations, no
            tolerance: Sinkformer's).
        return_weights: Deprecated (otkit 0.1): also return the weights, as a tuple. Call
            :func:`sinkhorn_attention_weights` for them.
        **settings: Any other field of :class:`~otkit.SinkhornOptions`: ``max_iter``, the number of full
            Sinkhorn iterations before the final row normalisation (``max_iter = k - 1`` makes ``k`` row
            normalisations); ``tol`` (the iterations stop once the columns meet it); ``domain`` (``"auto"``
            becomes ``"log"`` under ``torch.compile``), ``grad`` and ``backend`` as in :func:`otkit.sinkhorn`;
            ``rho_a``/``rho_b`` relax the query/key marginals.

    Returns:
        ``(..., L_q, d_v)``: the attended values.

    Raises:
        ValueError: on shapes that do not match (naming the expected ones), masks that do not broadcast or mask
            every key, NaN/Inf in ``q`` or ``k``, or a bad setting.

    Example:
        >>> import torch, otkit
        >>> q, k, v = torch.randn(2, 8, 16), torch.randn(2, 10, 16), torch.randn(2, 10, 4)
        >>> otkit.sinkhorn_attention(q, k, v).shape  # Sinkformer: eps 1, 2 Sinkhorn iterations
        torch.Size([2, 8, 4])
    """
    options = resolve_options("otkit.sinkhorn_attention", options, eps, settings, ATTENTION_OPTIONS)
    _check_cost_kind(cost)
    _check_inputs(q, k, v)
    if return_weights:
        warn_once(
            "sinkhorn_attention return_weights",
            "sinkhorn_attention(..., return_weights=True) is deprecated since otkit 0.2: it returns the output "
            "only; call otkit.sinkhorn_attention_weights for the weights.",
        )
    if _streams(storage, q, k, return_weights, dropout_p):
        return _streamed(q, k, v, options, key_padding_mask, query_padding_mask, cost)
    weights = torch.softmax(_dense_logits(q, k, options, key_padding_mask, query_padding_mask, cost), dim=-1)
    if dropout_p > 0:
        weights = F.dropout(weights, p=dropout_p, training=True)
    out = weights.to(v.dtype) @ v
    return (out, weights) if return_weights else out
