"""Sinkhorn attention as ``nn.Module`` layers.

- :class:`SinkhornAttention`: multi-head self/cross-attention, a drop-in for ``nn.MultiheadAttention``
  (``batch_first=True``) with the same parameter names, so its state dict loads.
- :class:`MultiPromptSinkhornAttention`: multi-prompt Sinkhorn attention (OTSeg's MPSA), prompt tokens attending to
  pixel tokens through the multi-prompt transport plan.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from otkit.attention.functional import (
    ATTENTION_OPTIONS,
    CostKind,
    sinkhorn_attention,
    sinkhorn_attention_weights,
)
from otkit.attention.multi_prompt import multi_prompt_transport
from otkit.geometry.storage import Storage
from otkit.options import SinkhornOptions, SinkhornSettings, Unpack, resolve_options

__all__ = ["MultiPromptSinkhornAttention", "SinkhornAttention"]


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
        eps: The temperature; ``None``: that of ``options`` (1 by default).
        cost: ``"dot"`` or ``"cosine"``.
        storage: ``"auto"``, ``"dense"`` or ``"streaming"`` (see :func:`~otkit.sinkhorn_attention`); long
            sequences stream when the weights are not asked for (``need_weights=False``) and dropout is off.
        options: All solver settings; ``None``: :data:`~otkit.ATTENTION_OPTIONS` (eps 1, 2 iterations per forward,
            no tolerance). Stored, resolved, as ``self.options``.
        **settings: Any other field of :class:`~otkit.SinkhornOptions` (``max_iter``: Sinkhorn iterations per
            forward, ``0`` = softmax attention; ...).

    Example:
        >>> import torch, otkit
        >>> attn = otkit.SinkhornAttention(16, num_heads=4, max_iter=3)
        >>> x = torch.randn(2, 10, 16)
        >>> out, weights = attn(x, x, x)
        >>> out.shape, weights.shape
        (torch.Size([2, 10, 16]), torch.Size([2, 10, 10]))
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        *,
        eps: float | None = None,
        cost: CostKind = "dot",
        storage: Storage = "auto",
        options: SinkhornOptions | None = None,
        **settings: Unpack[SinkhornSettings],
    ) -> None:
        super().__init__()
        for name, value in (("embed_dim", embed_dim), ("num_heads", num_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads}).")
        if cost not in ("dot", "cosine"):
            raise ValueError(f"cost must be 'dot' or 'cosine', got {cost!r}.")
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.options = resolve_options("otkit.SinkhornAttention", options, eps, settings, ATTENTION_OPTIONS)
        self.cost, self.storage = cost, storage
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
        self._check_inputs(query, key, value, key_padding_mask)
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = (None, None, None) if self.in_proj_bias is None else self.in_proj_bias.chunk(3)
        heads, dim = self.num_heads, self.embed_dim // self.num_heads

        def split(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:  # (B, L, E) -> (B, heads, L, dim)
            return F.linear(x, w, b).unflatten(-1, (heads, dim)).transpose(1, 2)

        q, k, v = split(query, w_q, b_q), split(key, w_k, b_k), split(value, w_v, b_v)
        kpm = None if key_padding_mask is None else key_padding_mask[:, None, :]
        qpm = kpm if (key_padding_mask is not None and query is key) else None
        dropout_p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            if self.storage == "streaming":
                raise ValueError(
                    "storage='streaming' never forms the attention matrix, so it cannot return it: pass "
                    "need_weights=False, or storage='dense' or 'auto'."
                )
            masks = {"key_padding_mask": kpm, "query_padding_mask": qpm}
            weights = sinkhorn_attention_weights(q, k, options=self.options, cost=self.cost, **masks)
            if dropout_p > 0:  # the weights returned are those applied, after dropout (as nn.MultiheadAttention)
                weights = F.dropout(weights, p=dropout_p, training=True)
            out = weights.to(v.dtype) @ v
        else:
            out = sinkhorn_attention(
                q,
                k,
                v,
                options=self.options,
                key_padding_mask=kpm,
                query_padding_mask=qpm,
                cost=self.cost,
                dropout_p=dropout_p,
                storage=self.storage,
            )
        out = self.out_proj(out.transpose(1, 2).flatten(2))
        if not need_weights:
            return out, None
        return out, weights.mean(1) if average_attn_weights else weights

    def _check_inputs(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None) -> None:
        """``query (B, L, E)``, ``key`` and ``value (B, S, E)`` with ``E = embed_dim``, ``key_padding_mask (B, S)``."""
        e = self.embed_dim
        for name, t in (("query", query), ("key", key), ("value", value)):
            if not isinstance(t, Tensor) or t.dim() != 3 or t.shape[-1] != e:
                got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(
                    f"{name} must be (B, L, E) with batch first and embedding size E = embed_dim = {e}, got {got}."
                )
        if not (query.shape[0] == key.shape[0] == value.shape[0]):
            raise ValueError(
                f"query, key and value must have the same batch size B, got {query.shape[0]}, {key.shape[0]} and "
                f"{value.shape[0]}."
            )
        if key.shape[1] != value.shape[1]:
            raise ValueError(
                f"key and value must have the same sequence length S, got {key.shape[1]} and {value.shape[1]}."
            )
        if key_padding_mask is not None:
            expected = (key.shape[0], key.shape[1])
            if not isinstance(key_padding_mask, Tensor) or tuple(key_padding_mask.shape) != expected:
                got = tuple(key_padding_mask.shape) if isinstance(key_padding_mask, Tensor) else key_padding_mask
                raise ValueError(f"key_padding_mask must be a bool tensor (B, S) = {expected}, got {got}.")


class MultiPromptSinkhornAttention(nn.Module):
    """OTSeg's multi-prompt Sinkhorn attention (MPSA): K*N prompt queries attend to M pixel tokens.

    Single head on the full width, no ``1/sqrt(d)`` scale: ``q``, ``k``, ``v`` projections (with bias), ``q`` and
    ``k`` L2-normalised, cost ``1 - cos``, and for every (image, class) the plan ``T (M, N)`` of
    :func:`~otkit.multi_prompt_transport` replaces the softmax. Output
    ``x[k, n] = sum_m dropout(T)[m, n] v_m`` (T not rescaled: each prompt's column sums to 1/N), then the output
    projection. Also returns the per-layer mask logits ``sum_n M N T sim``.

    Submodules are named ``q``, ``k``, ``v``, ``proj`` (as in OTSeg's checkpoints).

    Args:
        dim: Width C of queries and pixel tokens.
        eps: Entropic regularisation of the plan; ``None``: that of ``options`` (0.05 by default).
        attn_drop: Dropout on the plan during training.
        proj_drop: Dropout after the output projection.
        bias: Biases in the projections.
        options: All solver settings of :func:`~otkit.multi_prompt_transport`; ``None``: the defaults of
            :class:`~otkit.SinkhornOptions`. Stored, resolved, as ``self.options``.
        **settings: Any other field of :class:`~otkit.SinkhornOptions`.

    Example:
        >>> import torch, otkit
        >>> mpsa = otkit.MultiPromptSinkhornAttention(32)
        >>> tokens, logits = mpsa(torch.randn(2, 3, 4, 32), torch.randn(2, 64, 32))  # (B, K, N, C), (B, M, C)
        >>> tokens.shape, logits.shape
        (torch.Size([2, 3, 4, 32]), torch.Size([2, 3, 64]))
    """

    def __init__(
        self,
        dim: int = 512,
        *,
        eps: float | None = None,
        attn_drop: float = 0.1,
        proj_drop: float = 0.0,
        bias: bool = True,
        options: SinkhornOptions | None = None,
        **settings: Unpack[SinkhornSettings],
    ) -> None:
        super().__init__()
        self.options = resolve_options("otkit.MultiPromptSinkhornAttention", options, eps, settings)
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
        transport = multi_prompt_transport(self.k(pixels), self.q(queries), options=self.options)
        if not need_output:
            return None, transport.score
        plan = self.attn_drop(transport.plan)  # (B, K, M, N)
        values = self.v(pixels)  # (B, M, C)
        attended = plan.transpose(-1, -2).to(values.dtype) @ values.unsqueeze(1)  # (B, K, N, C)
        return self.proj_drop(self.proj(attended)), transport.score
