"""Wasserstein barycenters: of histograms on a fixed support, of images on a grid, and of point clouds.

Modules: ``fixed`` (:func:`sinkhorn_barycenter`), ``convolutional`` (:func:`convolutional_barycenter`),
``free_support`` (:func:`free_support_barycenter`), ``result`` (the results), ``ibp`` (the log-domain Bregman
projections), ``kernels`` (Gibbs kernels applied in the log domain) and ``inputs`` (checks).
"""

from otkit.barycenter.convolutional import convolutional_barycenter
from otkit.barycenter.fixed import sinkhorn_barycenter
from otkit.barycenter.free_support import free_support_barycenter
from otkit.barycenter.result import BarycenterResult, FreeSupportBarycenterResult

__all__ = [
    "BarycenterResult",
    "FreeSupportBarycenterResult",
    "convolutional_barycenter",
    "free_support_barycenter",
    "sinkhorn_barycenter",
]
