"""Wasserstein barycenters: of histograms on a fixed support, of images on a grid, and of point clouds.

Modules: ``fixed`` (:func:`sinkhorn_barycenter`), ``convolutional`` (:func:`convolutional_barycenter`),
``result`` (:class:`BarycenterResult`), ``ibp`` (the log-domain Bregman projections), ``kernels`` (Gibbs kernels
applied in the log domain) and ``inputs`` (checks).
"""

from otkit.barycenter.convolutional import convolutional_barycenter
from otkit.barycenter.fixed import sinkhorn_barycenter
from otkit.barycenter.result import BarycenterResult, FreeSupportBarycenterResult

__all__ = ["BarycenterResult", "FreeSupportBarycenterResult", "convolutional_barycenter", "sinkhorn_barycenter"]
