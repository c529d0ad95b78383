"""``gumbel_sinkhorn``: samples of the Gumbel-Sinkhorn distribution over (relaxed) permutations."""

from __future__ import annotations

import torch
from torch import Tensor

from otkit._checks import check_positive_float, compute_dtype
from otkit.doubly_stochastic.projection import check_log_alpha, sinkhorn_knopp
from otkit.options import GradMode

__all__ = ["gumbel_noise", "gumbel_sinkhorn"]


def gumbel_noise(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard Gumbel noise ``-log E``, ``E ~ Exp(1)``, of ``shape`` on ``like``'s device (float32 for halves)."""
    noise = torch.empty(shape, dtype=compute_dtype(like.dtype), device=like.device)
    return noise.exponential_(generator=generator).log_().neg_()


def gumbel_sinkhorn(
    log_alpha: Tensor,
    tau: float = 1.0,
    n_iter: int = 20,
    n_samples: int = 1,
    generator: torch.Generator | None = None,
    *,
    noise_scale: float = 1.0,
    grad: GradMode = "unroll",
) -> Tensor:
    r"""Draw ``n_samples`` Gumbel-Sinkhorn samples: :func:`otkit.sinkhorn_knopp` of Gumbel-perturbed scores.

    .. math::
        S = \mathrm{sinkhorn\_knopp}\big((\mathrm{log\_alpha} + s\,G) / \tau\big), \qquad
        G_{ij} \sim \mathrm{Gumbel}(0, 1) \text{ i.i.d.}

    with ``s = noise_scale`` (Mena et al. 2018). As ``tau -> 0`` a sample tends to the permutation matrix of
    ``otkit.matching(log_alpha + s G)``, a sample of the Gumbel-matching distribution; at ``tau > 0`` it is a
    differentiable relaxation of it (gradients reach ``log_alpha``; the noise is a constant).

    Args:
        log_alpha: ``(..., n, m)`` scores, any leading batch dims.
        tau: Temperature (> 0).
        n_iter: Sinkhorn-Knopp iterations (>= 1).
        n_samples: Independent samples per matrix (>= 1); they form a new leading dim.
        generator: Random generator for the noise (on ``log_alpha``'s device), for reproducible samples.
        noise_scale: Scale ``s`` of the noise (>= 0; ``0`` gives ``sinkhorn_knopp`` itself, repeated).
        grad: ``"unroll"`` or ``"implicit"``, as in :func:`otkit.sinkhorn_knopp`.

    Returns:
        ``(n_samples, ..., n, m)``, samples first even when ``n_samples = 1``; rows sum to 1 (up to the
        iteration error), columns to ``n / m``.

    Raises:
        ValueError: for a bad ``log_alpha``, ``tau``, ``n_iter`` or ``grad`` (as :func:`otkit.sinkhorn_knopp`),
            ``n_samples < 1`` or ``noise_scale < 0``.

    Example:
        >>> import torch, otkit
        >>> gen = torch.Generator().manual_seed(0)
        >>> s = otkit.gumbel_sinkhorn(torch.randn(8, 5, 5), tau=0.5, n_samples=3, generator=gen)
        >>> s.shape, round(float(s.sum(-2).mean()), 4)
        (torch.Size([3, 8, 5, 5]), 1.0)

    References:
        Mena, Belanger, Linderman, Snoek (2018), Learning latent permutations with Gumbel-Sinkhorn networks.
    """
    check_log_alpha(log_alpha)
    if not isinstance(n_samples, int) or isinstance(n_samples, bool) or n_samples < 1:
        raise ValueError(f"n_samples must be an int >= 1, got {n_samples!r}.")
    if noise_scale != 0:
        noise_scale = check_positive_float(noise_scale, "noise_scale")
    noise = gumbel_noise((n_samples, *log_alpha.shape), log_alpha, generator)
    perturbed = (log_alpha + noise_scale * noise).to(log_alpha.dtype)
    return sinkhorn_knopp(perturbed, n_iter, tau, grad=grad)
