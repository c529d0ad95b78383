"""Sinkhorn attention: attention matrices normalised on both sides by entropic OT.

- :func:`sinkhorn_attention`: functional Sinkformer attention on ``(..., L, d)`` tensors with padding masks.
- :class:`SinkhornAttention`: multi-head self/cross-attention, a drop-in for ``nn.MultiheadAttention``
  (``batch_first=True``) with the same parameter names, so its state dict loads.
- :class:`MultiPromptSinkhornAttention`: OTSeg's MPSA, prompt tokens attending to pixel tokens through the
  multi-prompt transport plan.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from otkit._attention_stream import streamed_attention
from otkit._validation import check_cost, compute_dtype
from otkit.geometry import Geometry, check_points
from otkit.multi_prompt import multi_prompt_transport, unit_vectors
from otkit.options import SinkhornOptions
from otkit.points import Storage, check_spread, choose_storage

__all__ = ["ATTENTION_OPTIONS", "MultiPromptSinkhornAttention", "SinkhornAttention", "sinkhorn_attention"]

CostKind = Literal["dot", "cosine"]

# Sinkformer attention's default: softmax temperature 1, two Sinkhorn iterations (rows, columns, rows, columns,
# then the final row normalisation), a fixed count (no tolerance).
ATTENTION_OPTIONS = SinkhornOptions(eps=1.0, max_iter=2, tol=None)


def _padding_weights(mask: Tensor | None, shape: torch.Size, like: Tensor, name: str) -> Tensor | None:
    """Uniform weights over the unpadded positions (``mask`` True = padding), ``(..., L)``; ``None`` if no mask."""
    if mask is None:
        return None
    if mask.dtype != torch.bool:
        raise ValueError(f"{name} must be a bool tensor (True = padding), got {mask.dtype}.")
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
    """The streamed path of :func:`sinkhorn_attention` (:mod:`otkit._attention_stream`)."""
    dtype = compute_dtype(q.dtype)
    x, y = check_points(q.to(dtype), k.to(dtype), "dot", names=("q", "k"))
    batch, (n, m) = x.shape[:-2], (x.shape[-2], y.shape[-2])
    if cost == "dot":
        x = x / q.shape[-1] ** 0.5
    else:
        x, y = unit_vectors(x), unit_vectors(y)
    check_spread(Geometry(cost, x.detach(), y.detach()).spread(), options.eps, dtype)
    uniform = lambda size: x.new_full((size,), 1.0 / size).expand(*batch, size)  # noqa: E731
    a = _padding_weights(query_padding_mask, (*batch, n), x, "query_padding_mask")
    b = _padding_weights(key_padding_mask, (*batch, m), x, "key_padding_mask")
    a, b = uniform(n) if a is None else a, uniform(m) if b is None else b
    values = v.to(dtype).expand(*batch, m, v.shape[-1])
    flat = [t.reshape(-1, *t.shape[len(batch) :]) for t in (x, y, values, a, b)]
    out = streamed_attention(*flat, cost, options)
    return out.reshape(*batch, n, v.shape[-1]).to(v.dtype)


def sinkhorn_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    options: SinkhornOptions = ATTENTION_OPTIONS,
    key_padding_mask: Tensor | None = None,
    query_padding_mask: Tensor | None = None,
    cost: CostKind = "dot",
    dropout_p: float = 0.0,
    return_weights: bool = False,
    storage: Storage = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Sinkformer attention: softmax attention whose matrix is also normalised over the queries.

    The attention matrix is the row-normalised Sinkhorn iterate for the cost ``C = -q.k / sqrt(d)`` (or
    ``1 - cos(q, k)``) at temperature ``eps = options.eps``, with uniform marginals over the unpadded queries
    and keys:

    .. math:: A_{ij} = \mathrm{softmax}_j\big((g_j - C_{ij}) / \varepsilon + \log b_j\big)

    where ``g`` is the key potential after ``options.max_iter`` full Sinkhorn iterations. ``max_iter = 0`` is
    exactly softmax attention (row normalisation only, no solve); as ``max_iter`` grows every row still sums to
    1 and every column tends to ``L_q / L_k`` (doubly stochastic up to the marginals).

    Args:
        q: ``(..., L_q, d)`` queries.
        k: ``(..., L_k, d)`` keys.
        v: ``(..., L_k, d_v)`` values.
        options: Solver settings (:data:`ATTENTION_OPTIONS`: eps 1, 2 iterations, no tolerance). ``eps`` is the
            temperature (``1`` with ``cost="dot"`` is the usual softmax scaling), ``max_iter`` the number of full
            Sinkhorn iterations before the final row normalisation (so ``max_iter = k - 1`` makes ``k`` row
            normalisations). With a ``tol``, the iterations stop once the columns meet it. ``domain`` (``"auto"``
            becomes ``"log"`` under ``torch.compile``), ``grad`` and ``backend`` work as in
            :func:`otkit.sinkhorn`; ``rho_a``/``rho_b`` relax the query/key marginals.
        key_padding_mask: ``(..., L_k)`` bool, True marks padding: those keys get zero weight and no marginal mass.
        query_padding_mask: ``(..., L_q)`` bool, True marks padding: those queries are left out of the column
            marginals (their outputs are still finite).
        cost: ``"dot"`` for ``-q.k / sqrt(d)`` or ``"cosine"`` for ``1 - cos(q, k)``.
        dropout_p: Dropout on the attention weights.
        return_weights: Also return the attention matrix ``(..., L_q, L_k)``.
        storage: ``"dense"`` forms the ``L_q x L_k`` matrix; ``"streaming"`` never does: the iterations stream
            tiles of ``q k^T`` (log domain) and the backward recomputes them, with the gradient of the iterations
            run (``grad="unroll"``'s) and memory ``O(L (d + max_iter))``; it refuses ``return_weights`` and
            ``dropout_p > 0``. ``"auto"``: streaming when the matrices of the batch would take more than
            :data:`otkit.points.DENSE_MAX_BYTES` and neither is asked for.

    Returns:
        ``(..., L_q, d_v)``, and the attention weights if ``return_weights``.
    """
    if cost not in ("dot", "cosine"):
        raise ValueError(f"cost must be 'dot' or 'cosine', got {cost!r}.")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"shapes do not match: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}; need q (..., L_q, d), "
            "k (..., L_k, d), v (..., L_k, d_v)."
        )
    if _streams(storage, q, k, return_weights, dropout_p):
        return _streamed(q, k, v, options, key_padding_mask, query_padding_mask, cost)
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
        res = options.solve(c32, a, b)
        logits = logits + res.g.unsqueeze(-2) / options.eps
    weights = torch.softmax(logits, dim=-1)
    if dropout_p > 0:
        weights = F.dropout(weights, p=dropout_p, training=True)
    out = weights.to(v.dtype) @ v
    return (out, weights) if return_weights else out


class SinkhornAttention(nn.Module):
    """Multi-head Sinkformer attention with ``nn.MultiheadAttention``'s interface (``batch_first=True``).

    Parameters are named as in ``nn.MultiheadAttention`` (``in_proj_weight``, ``in_proj_bias``, ``out_proj``),
    so ``load_state_dict`` accepts an ``nn.MultiheadAttention`` state dict of the same size. ``attn_mask`` is not
    supported: a doubly stochastic plan under an arbitrary (e.g. causal) mask is a different problem.

    Args:
        embed_dim: Model width E.
        num_heads: Heads; E must be divisible by it.
        dropout: Dropout on the attention weights during training.
        bias: Biases in the projections.
        options: Solver settings of :func:`sinkhorn_attention` (``eps`` the temperature, ``max_iter`` the
            Sinkhorn iterations per forward, ``0`` = softmax attention), stored as ``self.options``.
        cost: ``"dot"`` or ``"cosine"``.
        storage: ``"auto"``, ``"dense"`` or ``"streaming"`` (see :func:`sinkhorn_attention`); long sequences
            stream when the weights are not asked for (``need_weights=False``) and dropout is off.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        *,
        options: SinkhornOptions = ATTENTION_OPTIONS,
        cost: CostKind = "dot",
        storage: Storage = "auto",
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads}).")
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.options, self.cost, self.storage = options, cost, storage
        self.batch_first = True
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim)) if bias else None
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        nn.init.xavier_uniform_(self.in_proj_weight)
        if bias:
            nn.init.zeros_(self.out_proj.bias)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend ``query (B, L, E)`` to ``key``/``value (B, S, E)``.

        Args:
            query: ``(B, L, E)``.
            key: ``(B, S, E)``.
            value: ``(B, S, E)``.
            key_padding_mask: ``(B, S)`` bool, True = padding. In self-attention (``query is key``) the padded
                positions are also dropped from the query marginal.
            need_weights: Return the attention weights.
            attn_mask: Not supported; must be None.
            average_attn_weights: Average the returned weights over heads.

        Returns:
            ``(B, L, E)`` output and ``(B, L, S)`` (or ``(B, heads, L, S)``) weights, or None.
        """
        if attn_mask is not None:
            raise ValueError(
                "SinkhornAttention does not support attn_mask; use key_padding_mask for padding. Causal or "
                "arbitrary masks change the transport problem and are not implemented."
            )
        if query.dim() != 3:
            raise ValueError(f"query must be (B, L, E) (batch_first), got shape {tuple(query.shape)}.")
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = (None, None, None) if self.in_proj_bias is None else self.in_proj_bias.chunk(3)
        heads, dim = self.num_heads, self.embed_dim // self.num_heads

        def split(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:  # (B, L, E) -> (B, heads, L, dim)
            return F.linear(x, w, b).unflatten(-1, (heads, dim)).transpose(1, 2)

        q, k, v = split(query, w_q, b_q), split(key, w_k, b_k), split(value, w_v, b_v)
        kpm = None if key_padding_mask is None else key_padding_mask[:, None, :]
        qpm = kpm if (key_padding_mask is not None and query is key) else None
        attended = sinkhorn_attention(
            q,
            k,
            v,
            options=self.options,
            key_padding_mask=kpm,
            query_padding_mask=qpm,
            cost=self.cost,
            dropout_p=self.dropout if self.training else 0.0,
            return_weights=need_weights,
            storage=self.storage,
        )
        out, weights = attended if need_weights else (attended, None)
        out = self.out_proj(out.transpose(1, 2).flatten(2))
        if not need_weights:
            return out, None
        return out, weights.mean(1) if average_attn_weights else weights


class MultiPromptSinkhornAttention(nn.Module):
    """OTSeg's multi-prompt Sinkhorn attention (MPSA): K*N prompt queries attend to M pixel tokens.

    Single head on the full width, no ``1/sqrt(d)`` scale: ``q``, ``k``, ``v`` projections (with bias), ``q`` and
    ``k`` L2-normalised, cost ``1 - cos``, and for every (image, class) the plan ``T (M, N)`` of
    :func:`~otkit.multi_prompt.multi_prompt_transport` replaces the softmax. Output
    ``x[k, n] = sum_m dropout(T)[m, n] v_m`` (T not rescaled: each prompt's column sums to 1/N), then the output
    projection. Also returns the per-layer mask logits ``sum_n M N T sim``.

    Submodules are named ``q``, ``k``, ``v``, ``proj`` (as in OTSeg's checkpoints).

    Args:
        dim: Width C of queries and pixel tokens.
        options: Solver settings of :func:`~otkit.multi_prompt.multi_prompt_transport` (default OTSeg's: eps
            0.05, at most 100 iterations, tol 1e-6), stored as ``self.options``.
        attn_drop: Dropout on the plan during training (0.1).
        proj_drop: Dropout after the output projection.
        bias: Biases in the projections.
    """

    def __init__(
        self,
        dim: int = 512,
        *,
        options: SinkhornOptions = SinkhornOptions(),
        attn_drop: float = 0.1,
        proj_drop: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.options = options
        self.q = nn.Linear(dim, dim, bias=bias)
        self.k = nn.Linear(dim, dim, bias=bias)
        self.v = nn.Linear(dim, dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, queries: Tensor, pixels: Tensor, need_output: bool = True) -> tuple[Tensor | None, Tensor]:
        """Attend prompt tokens to pixels.

        Args:
            queries: ``(B, K, N, C)`` prompt (relationship-descriptor) tokens.
            pixels: ``(B, M, C)`` pixel tokens.
            need_output: Compute the attended tokens (``False``: only the mask logits, skipping the value and
                output projections).

        Returns:
            ``(B, K, N, C)`` attended tokens (``None`` without ``need_output``) and ``(B, K, M)`` mask logits.
        """
        if queries.dim() != 4 or pixels.dim() != 3:
            raise ValueError(
                f"queries must be (B, K, N, C) and pixels (B, M, C), got {tuple(queries.shape)} and "
                f"{tuple(pixels.shape)}."
            )
        transport = multi_prompt_transport(self.k(pixels), self.q(queries), self.options)
        if not need_output:
            return None, transport.score
        plan = self.attn_drop(transport.plan)  # (B, K, M, N)
        values = self.v(pixels)  # (B, M, C)
        attended = plan.transpose(-1, -2).to(values.dtype) @ values.unsqueeze(1)  # (B, K, N, C)
        return self.proj_drop(self.proj(attended)), transport.score
