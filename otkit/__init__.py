"""otkit: fast, batched, differentiable entropic optimal transport for PyTorch."""

from otkit.result import SinkhornResult
from otkit.sinkhorn import ConvergenceWarning, sinkhorn

__all__ = ["ConvergenceWarning", "SinkhornResult", "sinkhorn"]

__version__ = "0.1.0"
