"""Multi-prompt transport: every pixel's mass spread over the N prompts of each class by entropic OT."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from otkit._deprecation import warn_once
from otkit.dense import SinkhornResult
from otkit.dense.solve import solve_dense
from otkit.geometry.costs import unit_vectors
from otkit.options import SinkhornOptions, SinkhornSettings, Unpack, resolve_options

__all__ = ["MultiPromptTransport", "multi_prompt_transport"]


@dataclass(frozen=True)
class MultiPromptTransport:
    """Output of :func:`multi_prompt_transport`.

    Attributes:
        plan: ``(B, K, M, N)`` transport plan of each (image, class) problem; sums to the total mass (1 by default).
        score: ``(B, K, M)`` score map ``sum_n M * N * plan * similarity``.
        similarity: ``(B, K, M, N)`` cosine similarity between pixels and prompts.
        result: The underlying :class:`~otkit.SinkhornResult` over the ``(B, K)`` batch: potentials, iterations,
            convergence.

    Compatibility: otkit 0.1 returned a named tuple; unpacking ``plan, score, similarity, result = ...`` and
    indexing still work, with a ``FutureWarning`` the first time.

    Example:
        >>> import torch, otkit
        >>> mpt = otkit.multi_prompt_transport(torch.randn(2, 64, 16), torch.randn(3, 4, 16), eps=0.05)
        >>> mpt.plan.shape, mpt.score.shape  # (B, K, M, N), (B, K, M)
        (torch.Size([2, 3, 64, 4]), torch.Size([2, 3, 64]))
        >>> mpt.plan[0, 0].sum(0)  # every prompt takes 1/N of the mass
        tensor([0.2500, 0.2500, 0.2500, 0.2500])
    """

    plan: Tensor = field(repr=False)
    score: Tensor = field(repr=False)
    similarity: Tensor = field(repr=False)
    result: SinkhornResult

    def _fields(self) -> tuple[Tensor, Tensor, Tensor, SinkhornResult]:
        warn_once(
            "MultiPromptTransport as a tuple",
            "multi_prompt_transport returns a frozen dataclass since otkit 0.2: read .plan, .score, .similarity and "
            ".result instead of unpacking or indexing it.",
        )
        return self.plan, self.score, self.similarity, self.result

    def __iter__(self) -> Iterator[Tensor | SinkhornResult]:
        return iter(self._fields())

    def __getitem__(self, index: int) -> Tensor | SinkhornResult:
        return self._fields()[index]

    def __len__(self) -> int:
        return 4


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
    eps: float | None = None,
    *,
    pixel_weights: Tensor | None = None,
    prompt_weights: Tensor | None = None,
    options: SinkhornOptions | None = None,
    **settings: Unpack[SinkhornSettings],
) -> MultiPromptTransport:
    r"""Transport the pixels of each image onto the prompts of each class (OTSeg's multi-prompt Sinkhorn).

    For image ``b`` and class ``k`` the cost is ``C[m, n] = 1 - cos(pixel_m, prompt_kn)`` and the plan ``T``
    solves the entropic problem with marginals ``1/M`` over pixels and ``1/N`` over prompts (or the given
    weights), so each prompt claims an equal share of the image. The score map

    .. math:: S_{bkm} = \sum_n M N \, T_{bkmn} \, \mathrm{sim}_{bkmn}

    is a similarity weighted by how much of pixel ``m`` each prompt took (``M N T`` is 1 for a uniform plan).
    All ``B * K`` problems are solved as one batch by :func:`otkit.sinkhorn` on the cost ``1 - similarity``.

    Args:
        pixels: ``(B, M, C)`` pixel embeddings (normalised here).
        prompts: ``(K, N, C)`` shared, or ``(B, K, N, C)`` per-image prompt embeddings (normalised here).
        eps: Entropic regularisation on the cosine cost; ``None``: that of ``options`` (0.05 by default).
        pixel_weights: ``(M,)``, ``(B, M)`` or ``(B, K, M)`` weights over pixels; ``None``: uniform.
        prompt_weights: ``(N,)``, ``(K, N)`` or ``(B, K, N)`` weights over prompts; ``None``: uniform.
        options: All solver settings as one :class:`~otkit.SinkhornOptions`; ``None``: the defaults.
        **settings: Any other field of :class:`~otkit.SinkhornOptions` (see :func:`otkit.sinkhorn`). The rows of
            each problem are the pixels and the columns the prompts, so ``rho_a`` relaxes the pixel marginal and
            ``rho_b`` the prompt marginal (``None``: exact). ``max_iter`` must be >= 1.

    Returns:
        :class:`~otkit.MultiPromptTransport` with ``plan (B, K, M, N)``, ``score (B, K, M)``, ``similarity`` and
        ``result``.

    Example:
        >>> import torch, otkit
        >>> pixels, prompts = torch.randn(2, 64, 16), torch.randn(3, 4, 16)  # 2 images, 3 classes x 4 prompts
        >>> out = otkit.multi_prompt_transport(pixels, prompts, eps=0.05)
        >>> out.plan.shape, out.score.shape
        (torch.Size([2, 3, 64, 4]), torch.Size([2, 3, 64]))
        >>> torch.allclose(out.plan.sum(-2), torch.full((2, 3, 4), 1 / 4), atol=1e-5)  # each prompt gets 1/N
        True
    """
    if isinstance(eps, SinkhornOptions):  # otkit 0.1: multi_prompt_transport(pixels, prompts, options)
        warn_once(
            "multi_prompt_transport options positional",
            "multi_prompt_transport(pixels, prompts, options) is multi_prompt_transport(pixels, prompts, "
            "options=options) since otkit 0.2 (its third argument is eps).",
        )
        eps, options = None, eps
    options = resolve_options("otkit.multi_prompt_transport", options, eps, settings)
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
    res = solve_dense(1 - similarity, pixel_weights, prompt_weights, options)
    plan = res.plan
    score = (plan * similarity).sum(-1) * (n_pix * n_prompt)
    return MultiPromptTransport(plan=plan, score=score, similarity=similarity, result=res)
