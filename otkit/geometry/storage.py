"""Whether a problem's cost is stored as a matrix or streamed tile by tile (``storage=``)."""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["DENSE_MAX_BYTES", "DENSE_MIN_DIM", "Storage", "choose_storage"]

Storage = Literal["auto", "dense", "streaming"]

#: ``storage="auto"`` keeps a cost matrix while it takes at most this many bytes (per matrix, whole batch): above it,
#: tiles are recomputed at every iteration and memory stays O((n + m) d).
DENSE_MAX_BYTES = 2**28
#: ``storage="auto"`` stores it only for points of at least this dimension: below it, recomputing a tile (a
#: matrix product with d + 2 terms per entry) costs less than reading it from memory. Measured on a 2-core AVX-512
#: CPU (sinkhorn_points value and sinkhorn_divergence, forward+backward, 1 and 2 threads): at n = m = 5000
#: streaming is 2.2x faster at d = 16, 1.2-1.3x at d = 64, about equal at d = 96 and 1.2x slower at d = 128; at
#: n = m = 1000 the stored matrix (4 MB, in cache) wins from d = 64 (up to 1.3x) and by 1.3-1.6x at d = 96.
DENSE_MIN_DIM = 96


def choose_storage(storage: Storage, cost: object, entries: int, dtype: torch.dtype, dim: int | None = None) -> bool:
    """Whether to store the cost densely (``True``) or stream it.

    ``cost`` is the cost name or callable, ``entries`` is ``B n m`` and ``dim`` is ``d`` (``None``: the size alone
    decides).

    Raises:
        ValueError: for an unknown ``storage`` or a callable cost with ``storage="streaming"``.
    """
    if storage not in ("auto", "dense", "streaming"):
        raise ValueError(f"storage must be 'auto', 'dense' or 'streaming', got {storage!r}.")
    if callable(cost):
        if storage == "streaming":
            raise ValueError(
                "a callable cost can only be stored densely (storage='dense' or 'auto'); for streaming, use one of "
                "'sqeuclidean', 'euclidean', 'cosine' or 'dot'."
            )
        return True
    if storage == "auto":
        fits = entries * torch.finfo(dtype).bits // 8 <= DENSE_MAX_BYTES
        return fits and (dim is None or dim >= DENSE_MIN_DIM)
    return storage == "dense"
