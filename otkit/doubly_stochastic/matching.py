"""``matching``: the hard maximising assignment of a batch of score matrices, by otkit.couplings' solver."""

from __future__ import annotations

import torch
from torch import Tensor

from otkit._checks import all_finite
from otkit.couplings.assignment import linear_assignment
from otkit.doubly_stochastic.projection import check_log_alpha

__all__ = ["matching"]


def matching(log_alpha: Tensor) -> Tensor:
    r"""The assignment of rows to distinct columns with the largest total score, for every matrix of a batch.

    .. math::
        \sigma^\star = \arg\max_{\sigma} \sum_i \mathrm{log\_alpha}_{i, \sigma(i)}

    over the injective maps ``sigma`` from the ``n`` rows to the ``m >= n`` columns (the permutations when
    ``n = m``): the limit of :func:`otkit.sinkhorn_knopp` as ``tau -> 0``, used to evaluate Sinkhorn and
    Gumbel-Sinkhorn networks. Solved in float64 by :func:`otkit.couplings.linear_assignment` on the square cost
    ``-log_alpha`` padded with ``m - n`` zero rows (the auction algorithm, compiled on the CPU; on the GPU the
    Hungarian method for ``m <= 16`` and a torch auction above). It reads the progress of its searches on the
    host, so keep it out of ``torch.compile``'d regions and CUDA graphs (it is not differentiable either).

    Args:
        log_alpha: ``(..., n, m)`` scores with ``n <= m``, finite, any leading batch dims.

    Returns:
        ``(..., n)`` int64: ``sigma[..., i]``, the column assigned to row ``i``. The permutation matrix is
        ``torch.nn.functional.one_hot(sigma, m)``.

    Raises:
        ValueError: when ``log_alpha`` is not a floating ``(..., n, m)`` tensor, has ``n > m`` (match the
            transpose) or holds NaN or infinite entries.

    Example:
        >>> import torch, otkit
        >>> scores = torch.tensor([[1.0, 5.0, 0.0], [4.0, 4.5, 0.0], [0.0, 0.0, 1.0]])
        >>> otkit.matching(scores)  # 5 + 4 + 1 beats the row-wise argmax, which takes column 1 twice
        tensor([1, 0, 2])
    """
    check_log_alpha(log_alpha)
    n, m = log_alpha.shape[-2:]
    if n > m:
        raise ValueError(
            f"matching assigns every row to a distinct column and needs n <= m, got shape {tuple(log_alpha.shape)}. "
            "Match the transpose (log_alpha.transpose(-1, -2)) instead."
        )
    if not all_finite(log_alpha):
        raise ValueError(
            "log_alpha holds infinite entries; matching needs finite scores: give forbidden pairs a very low finite "
            "score instead of -inf."
        )
    batch = log_alpha.shape[:-2]
    cost = torch.zeros((*batch, m, m), dtype=torch.float64, device=log_alpha.device)
    cost[..., :n, :] = -log_alpha.detach()  # the m - n dummy rows take the columns left over, at no cost
    return linear_assignment(cost)[..., :n]
