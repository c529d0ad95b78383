"""Entropic Wasserstein barycenters of images: :func:`convolutional_barycenter`, the kernel as 1-D convolutions."""

from __future__ import annotations

from torch import Tensor

from otkit.barycenter.ibp import solve_barycenter
from otkit.barycenter.inputs import check_iteration_options, prepare_hists, prepare_weights
from otkit.barycenter.kernels import GridKernel
from otkit.barycenter.result import BarycenterResult
from otkit.options import SinkhornOptions, SinkhornSettings, Unpack, resolve_options

__all__ = ["convolutional_barycenter"]


def convolutional_barycenter(
    images: Tensor,
    weights: Tensor | None = None,
    eps: float | None = None,
    *,
    debiased: bool = False,
    options: SinkhornOptions | None = None,
    **settings: Unpack[SinkhornSettings],
) -> BarycenterResult:
    r"""Entropic Wasserstein barycenters of images, the Gibbs kernel applied as separable 1-D convolutions.

    The problem of :func:`otkit.sinkhorn_barycenter` on the pixel grid
    ``x_ij = (i / (H - 1), j / (W - 1))`` (the unit square, POT's convention) with the squared Euclidean cost
    ``C = |x - y|^2``:

    .. math::
        b = \arg\min_b \sum_k w_k \min_{P_k 1 = a_k,\ P_k^\top 1 = b} \langle P_k, C\rangle
        + \varepsilon \sum P_k (\log P_k - 1)

    solved by log-domain Bregman projections (Benamou et al. 2015) in which ``K = exp(-C / eps)`` factors as
    ``K_H (x) K_W`` and is applied as a 1-D log-convolution along each axis (Solomon et al. 2015): ``O(HW (H + W))``
    operations per image and no ``(HW) x (HW)`` matrix. ``debiased=True`` computes the debiased barycenter
    (Janati et al. 2020).

    Convention: ``eps`` is POT's ``reg``: ``ot.bregman.convolutional_barycenter2d(images, reg,
    method="sinkhorn_log")`` and ``ot.bregman.convolutional_barycenter2d_debiased`` solve the same problems
    (POT's images are ``(k, H, W)``, its grid the same unit square, whatever ``H`` and ``W``).

    Args:
        images: ``(..., k, H, W)`` the ``k`` input images of each problem, >= 0, all of the same mass; leading
            dims are a batch of independent problems.
        weights: ``(k,)`` or ``(..., k)`` barycentric weights, normalised to sum to 1; ``None``: ``1 / k``.
        eps: Entropic regularisation (> 0) in squared units of the unit square; ``None``: that of ``options``
            (0.05 by default). Features of the barycenter are blurred over about ``sqrt(eps)``.
        debiased: Compute the debiased barycenter.
        options: Settings as one :class:`~otkit.SinkhornOptions`; ``None``: the defaults.
        **settings: ``max_iter``, ``tol``, ``check_every``, as for :func:`otkit.sinkhorn_barycenter`.

    Returns:
        A :class:`~otkit.BarycenterResult` with ``barycenter (..., H, W)``, differentiable in ``images`` and
        ``weights``. While ``1 / eps`` is at most 600 the convolutions are max-shifted matrix products (in
        float64 beyond 60, the float32 limit), exact to rounding (``method="shifted"``); beyond, products over
        blocks of pixels within which the kernel spans at most that range, combined by a log-sum-exp, exact in
        the same way and a few times slower (``"blocked"``; at 256 x 256 and eps 0.001, 3x); and when a block
        would hold one pixel (``eps < 1 / (300 (size - 1))``), plain log-sum-exps (``"lse"``).

    Raises:
        ValueError: on NaN/Inf, negative or zero-mass images, images of unequal masses, weights that do not
            match ``k``, or a refused setting (see :func:`otkit.sinkhorn_barycenter`).

    Example:
        >>> import torch, otkit
        >>> images = torch.zeros(2, 32, 32)
        >>> images[0, 4:10, 4:10] = 1.0
        >>> images[1, 20:28, 20:28] = 1.0
        >>> images = images / images.sum((-1, -2), keepdim=True)
        >>> res = otkit.convolutional_barycenter(images, eps=0.004, tol=1e-4)
        >>> res.barycenter.shape, round(float(res.barycenter.sum()), 3)
        (torch.Size([32, 32]), 1.0)
    """
    caller = "otkit.convolutional_barycenter"
    options = resolve_options(caller, options, eps, settings)
    check_iteration_options(options, caller)
    images = prepare_hists(images, 2, "images", "(..., k, H, W)")
    height, width = images.shape[-2:]
    w = prepare_weights(weights, images.shape[:-2], images)
    kernel = GridKernel(height, width, options.eps, images)
    return solve_barycenter(images, w[..., None, None], kernel, (height, width), options, debiased)
