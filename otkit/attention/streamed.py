"""Sinkhorn attention without the ``L_q x L_k`` matrix: streamed iterations, and a backward by recomputation.

The forward runs the iterations of :func:`otkit.dense.loops.solve_log` from ``g = 0`` on a ``"dot"`` (or
``"cosine"``) :class:`~otkit.geometry.Geometry` of query and key features (the loop of
:func:`otkit.geometry.loops.solve_pair`), keeping only the potentials of each
iteration (``O(L)`` each), then streams ``out_i = sum_j A_ij v_j`` with ``A_ij = softmax_j(log b_j + (g_j -
C_ij) / eps)``. The backward replays the iterations in reverse from the kept potentials: with ``S``, ``R`` the
row and column soft-maxes of iteration ``t`` (``f_t`` from ``g_{t-1}``, then ``g_t`` from ``f_t``)::

    df_t/dg_{t-1} = -lam_a S,  df_t/dC = lam_a S (per row),   dg_t/df_t = -lam_b R^T,  dg_t/dC = lam_b R (per column)

so every step is a plan-times-matrix product of :mod:`otkit.geometry.tiles`. The output step is FlashAttention's
backward: ``dS = A * (dO v^T - D)`` per tile with ``D_i = dO_i . out_i``. Memory: the features, the potentials of every
iteration and one tile. The gradient is that of the iterations run (``grad="unroll"``'s), for any ``options.grad``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from otkit._convergence import lams
from otkit.geometry.costs import Geometry
from otkit.geometry.loops import solve_pair
from otkit.geometry.tiles import exp_sums, exp_tiles, log_weights, lse
from otkit.options import SinkhornOptions

__all__ = ["streamed_attention"]


def _output(geom: Geometry, col: Tensor, v: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """``(out (B, n, d_v), shift (B, n))`` with ``A = exp(col_j - C_ij / eps - shift_i)`` row-stochastic."""
    shift = lse(geom, col, eps)
    sums = exp_sums(geom, -shift, col, eps, torch.cat([v, v.new_ones((*v.shape[:-1], 1))], -1))
    return sums[..., :-1] / sums[..., -1:], shift + torch.log(sums[..., -1])


def _output_backward(
    geom: Geometry, col: Tensor, shift: Tensor, v: Tensor, out: Tensor, grad_out: Tensor, eps: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """FlashAttention's backward of the output step: gradients for the features, ``v`` and ``g``."""
    x, y = geom.x, geom.y
    dx, dy, dv = torch.zeros_like(x), torch.zeros_like(y), torch.zeros_like(v)
    dg = torch.zeros_like(col)
    delta = (grad_out * out).sum(-1, keepdim=True)  # (B, n, 1)
    for bs, rs, cs, tile in exp_tiles(geom, -shift, col, eps):
        go = grad_out[bs, rs]
        dv[bs, cs].baddbmm_(tile.transpose(1, 2), go)
        ds = torch.bmm(go, v[bs, cs].transpose(1, 2)).sub_(delta[bs, rs]).mul_(tile)  # dL/dz on the tile
        dx[bs, rs].baddbmm_(ds, y[bs, cs], alpha=1 / eps)  # z = ... - C / eps and C = -<x, y> (+ const)
        dy[bs, cs].baddbmm_(ds.transpose(1, 2), x[bs, rs], alpha=1 / eps)
        dg[bs, cs] += ds.sum(1) / eps
    return dx, dy, dv, dg


def _iterations_backward(
    geom: Geometry,
    log_a: Tensor,
    log_b: Tensor,
    trace: list[tuple[Tensor, Tensor]],
    dg: Tensor,
    options: SinkhornOptions,
) -> tuple[Tensor, Tensor]:
    """Gradients for the features from ``dL/dg_T``, replaying the iterations of ``trace`` in reverse."""
    eps = options.eps
    lam_a, lam_b = lams(options)
    x, y = geom.x, geom.y
    transposed = geom.transpose()
    dx, dy = torch.zeros_like(x), torch.zeros_like(y)
    for t in range(len(trace) - 1, -1, -1):
        f, g = trace[t]
        g_prev = trace[t - 1][1] if t > 0 else torch.zeros_like(g)
        # g_t from f_t: R_ij = exp(log a_i + f_i / eps - C_ij / eps + g_j / (lam_b eps))
        row, col = log_a + f / eps, g / (lam_b * eps)
        sums = exp_sums(geom, row, col, eps, torch.cat([dg.unsqueeze(-1) * y, dg.unsqueeze(-1)], -1))
        df = -lam_b * sums[..., -1]
        dx -= lam_b * sums[..., :-1]
        dy -= lam_b * dg.unsqueeze(-1) * exp_sums(transposed, col, row, eps, x)
        # f_t from g_{t-1}: S_ij = exp(log b_j + g_prev_j / eps - C_ij / eps + f_i / (lam_a eps))
        row, col = f / (lam_a * eps), log_b + g_prev / eps
        dx -= lam_a * df.unsqueeze(-1) * exp_sums(geom, row, col, eps, y)
        sums = exp_sums(transposed, col, row, eps, torch.cat([df.unsqueeze(-1) * x, df.unsqueeze(-1)], -1))
        dy -= lam_a * sums[..., :-1]
        dg = -lam_a * sums[..., -1]
    return dx, dy


class _StreamedAttention(torch.autograd.Function):
    """Streamed Sinkhorn attention ``(x, y, v) -> (B, n, d_v)`` for the cost ``-<x, y>`` (plus a constant).

    Shapes: ``x (B, n, d)``, ``y (B, m, d)``, ``v (B, m, d_v)``; ``a (B, n)`` and ``b (B, m)`` are constant weights.
    """

    @staticmethod
    def forward(ctx, x, y, v, a, b, kind, options):
        geom = Geometry(kind, x, y).with_backend(options.backend)
        log_a, log_b = log_weights(a), log_weights(b)
        trace: list[tuple[Tensor, Tensor]] = []
        g = torch.zeros_like(b)
        if options.max_iter > 0:
            g = solve_pair(geom, b, log_a, log_b, options, [], None, trace).g
        col = log_b + g / options.eps
        out, shift = _output(geom, col, v, options.eps)
        ctx.save_for_backward(x, y, v, log_a, log_b, out, shift, *(t for pair in trace for t in pair))
        ctx.kind, ctx.options, ctx.backend = kind, options, geom.backend
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, y, v, log_a, log_b, out, shift, *flat = ctx.saved_tensors
        options, eps = ctx.options, ctx.options.eps
        trace = list(zip(flat[0::2], flat[1::2], strict=True))
        geom = Geometry(ctx.kind, x, y, backend=ctx.backend)
        g = trace[-1][1] if trace else torch.zeros_like(log_b)
        dx, dy, dv, dg = _output_backward(geom, log_b + g / eps, shift, v, out, grad_out, eps)
        if trace:
            ix, iy = _iterations_backward(geom, log_a, log_b, trace, dg, options)
            dx, dy = dx + ix, dy + iy
        return dx, dy, dv, None, None, None, None


def streamed_attention(
    x: Tensor, y: Tensor, v: Tensor, a: Tensor, b: Tensor, kind: str, options: SinkhornOptions
) -> Tensor:
    """Sinkhorn attention ``(B, n, d_v)`` without the ``n x m`` matrix, differentiable in ``x``, ``y``, ``v``.

    The cost is ``-<x_i, y_j>`` (``"dot"``) or ``1 - <x_i, y_j>`` (``"cosine"``, unit vectors), the weights
    ``a (B, n)`` and ``b (B, m)``.

    Runs in the dtype of ``x`` (float32 or float64); the iterations are those of ``options`` (see
    :func:`otkit.sinkhorn_attention`), in the log domain.
    """
    return _StreamedAttention.apply(x, y, v, a, b, kind, options)
