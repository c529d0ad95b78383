"""Exponentials in base 2: ``exp(x) = exp2(x log2(e))``, several times faster than ``exp`` in PyTorch's CPU kernels.

On 2**20 float32 entries, one thread: ``exp`` 0.98 ms, ``exp2`` 0.33 ms, a multiply 0.10 ms (float64: 2.09, 0.98,
0.33 ms). The product ``x log2(e)`` rounds the exponent, so this is for exponents near 0 or entries that only
matter in sums (the doubly-stochastic iterations, the Triton kernels); the dense solver's kernel and plan keep
``exp``.
"""

from __future__ import annotations

import math

__all__ = ["LOG2_E"]

LOG2_E = 1 / math.log(2)  # log2(e): exp(x) = exp2(x * LOG2_E)
