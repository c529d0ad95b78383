"""Multi-prompt transport: every pixel's mass spread over the N prompts of each class by entropic OT."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from otkit.options import SinkhornOptions
from otkit.result import SinkhornResult

__all__ = ["MultiPromptTransport", "multi_prompt_transport", "unit_vectors"]


def unit_vectors(x: Tensor, dim: int = -1) -> Tensor:
    """L2-normalise along ``dim`` in float32 (half precision cannot hold the norm's floor), back in x's dtype.

    A zero vector stays zero instead of becoming NaN.
    """
    work = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    return F.normalize(work, dim=dim).to(x.dtype)


class MultiPromptTransport(NamedTuple):
    """Output of :func:`multi_prompt_transport`.

    Attributes:
        plan: ``(B, K, M, N)`` transport plan of each (image, class) problem; sums to the total mass (1 by default).
        score: ``(B, K, M)`` score map ``sum_n M * N * plan * similarity``.
        similarity: ``(B, K, M, N)`` cosine similarity between pixels and prompts.
        result: The underlying :class:`~otkit.result.SinkhornResult` over the ``(B, K)`` batch.
    """

    plan: Tensor
    score: Tensor
    similarity: Tensor
    result: SinkhornResult


def _check_features(pixels: Tensor, prompts: Tensor) -> None:
    if pixels.dim() != 3:
        raise ValueError(f"pixels must be (B, M, C), got shape {tuple(pixels.shape)}.")
    if prompts.dim() not in (3, 4):
        raise ValueError(f"prompts must be (K, N, C) or (B, K, N, C), got shape {tuple(prompts.shape)}.")
    if prompts.shape[-1] != pixels.shape[-1]:
        raise ValueError(
            f"pixels and prompts must share the channel dim C, got {pixels.shape[-1]} and {prompts.shape[-1]}."
        )
    if prompts.dim() == 4 and prompts.shape[0] != pixels.shape[0]:
        raise ValueError(
            f"prompts (B, K, N, C) must have the batch size of pixels, got {prompts.shape[0]} and {pixels.shape[0]}."
        )


def multi_prompt_transport(
    pixels: Tensor,
    prompts: Tensor,
    options: SinkhornOptions = SinkhornOptions(),
    *,
    pixel_weights: Tensor | None = None,
    prompt_weights: Tensor | None = None,
) -> MultiPromptTransport:
    r"""Transport the pixels of each image onto the prompts of each class (OTSeg's multi-prompt Sinkhorn).

    For image ``b`` and class ``k`` the cost is ``C[m, n] = 1 - cos(pixel_m, prompt_kn)`` and the plan ``T``
    solves the entropic problem with marginals ``1/M`` over pixels and ``1/N`` over prompts (or the given
    weights), so each prompt claims an equal share of the image. The score map

    .. math:: S_{bkm} = \sum_n M N \, T_{bkmn} \, \mathrm{sim}_{bkmn}

    is a similarity weighted by how much of pixel ``m`` each prompt took (``M N T`` is 1 for a uniform plan).
    All ``B * K`` problems are solved as one batch, ``options.solve(1 - similarity, ...)``.

    Args:
        pixels: ``(B, M, C)`` pixel embeddings (normalised here).
        prompts: ``(K, N, C)`` shared, or ``(B, K, N, C)`` per-image prompt embeddings (normalised here).
        options: Solver settings; the defaults are OTSeg's (eps 0.05, at most 100 iterations, tol 1e-6). The
            rows of each problem are the pixels and the columns the prompts, so ``options.rho_a`` relaxes the
            pixel marginal and ``options.rho_b`` the prompt marginal (``None``: exact). ``max_iter`` must be
            >= 1.
        pixel_weights: ``(M,)``, ``(B, M)`` or ``(B, K, M)`` weights over pixels; ``None``: uniform.
        prompt_weights: ``(N,)``, ``(K, N)`` or ``(B, K, N)`` weights over prompts; ``None``: uniform.

    Returns:
        :class:`MultiPromptTransport` with ``plan (B, K, M, N)``, ``score (B, K, M)``, ``similarity``, ``result``.
    """
    _check_features(pixels, prompts)
    batch, n_pix, _ = pixels.shape
    n_cls, n_prompt = prompts.shape[-3:-1]
    # The similarity is the cost: built in float32 at least, outside autocast (at eps 0.05, bfloat16 rounding of
    # the cosines would move the plan by percents). It is small next to the features that produce it.
    work = torch.promote_types(pixels.dtype, torch.float32)
    with torch.autocast(pixels.device.type, enabled=False):
        pix = unit_vectors(pixels.to(work))
        txt = unit_vectors(prompts.to(work))
        # (B, K, N, M): the pixel axis, the long one, contiguous (the solver's preferred layout).
        if txt.dim() == 3:
            sim_t = (txt.reshape(n_cls * n_prompt, -1) @ pix.transpose(1, 2)).view(batch, n_cls, n_prompt, n_pix)
        else:
            sim_t = txt.reshape(batch, n_cls * n_prompt, -1) @ pix.transpose(1, 2)
            sim_t = sim_t.view(batch, n_cls, n_prompt, n_pix)
    similarity = sim_t.transpose(-1, -2)  # (B, K, M, N)
    if pixel_weights is not None and pixel_weights.dim() == 2:
        pixel_weights = pixel_weights.unsqueeze(1)  # (B, M) -> (B, 1, M)
    res = options.solve(1 - similarity, pixel_weights, prompt_weights)
    plan = res.plan
    score = (plan * similarity).sum(-1) * (n_pix * n_prompt)
    return MultiPromptTransport(plan=plan, score=score, similarity=similarity, result=res)
