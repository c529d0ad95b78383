"""Differentiable sorting as entropic OT to a sorted target: soft_sort, soft_rank and soft_quantile.

Modules: ``soft`` (the three operators and their targets).
"""

from otkit.sorting.soft import soft_quantile, soft_rank, soft_sort

__all__ = ["soft_quantile", "soft_rank", "soft_sort"]
