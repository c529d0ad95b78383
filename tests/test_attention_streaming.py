"""Sinkhorn attention without the L x L matrix: equal to the dense path, outputs and gradients."""

from __future__ import annotations

import pytest
import torch

import otkit
from otkit import SinkhornOptions
from otkit.geometry import tiles as _tiles

pytestmark = pytest.mark.usefixtures("one_thread")


def _qkv(shape, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*shape, generator=gen, dtype=dtype) for _ in range(3))


def _run(q, k, v, storage, **kw):
    """Output and the gradients of a fixed random projection of it, for q, k, v."""
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out = otkit.sinkhorn_attention(*leaves, storage=storage, **kw)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=out.dtype)
    (out * weight).sum().backward()
    return [out.detach()] + [t.grad for t in leaves]


def _assert_equal(streamed, dense, tol):
    for s, d in zip(streamed, dense, strict=True):
        torch.testing.assert_close(s, d, rtol=tol, atol=tol * float(d.abs().max()))


def test_streamed_equals_dense_at_2048_tokens():
    """L = 2048, float32, default options (eps 1, two iterations): outputs and gradients to 1e-5."""
    q, k, v = _qkv((1, 2, 2048, 16))
    _assert_equal(_run(q, k, v, "streaming"), _run(q, k, v, "dense"), 1e-5)


@pytest.mark.parametrize("cost", ["dot", "cosine"])
@pytest.mark.parametrize(
    "options",
    [
        SinkhornOptions(eps=0.5, max_iter=0, tol=None),
        SinkhornOptions(eps=0.2, max_iter=6, tol=None),
        SinkhornOptions(eps=0.5, max_iter=50, tol=1e-4, check_every=3),
        SinkhornOptions(eps=0.5, rho_a=2.0, rho_b=0.7, max_iter=4, tol=None),
    ],
)
def test_streamed_equals_dense_float64(cost, options, monkeypatch):
    """Many tiles (small tile size), lengths not multiples of the tile, softmax (0 iterations), tol, unbalanced."""
    monkeypatch.setattr(_tiles, "TILE_ENTRIES", 300)
    monkeypatch.setattr(_tiles, "COL_BLOCK", 32)
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(2, 3, 45, 8, generator=gen, dtype=torch.float64)
    k, v = (torch.randn(2, 3, 70, 8, generator=gen, dtype=torch.float64) for _ in range(2))
    kw = dict(options=options, cost=cost)
    _assert_equal(_run(q, k, v, "streaming", **kw), _run(q, k, v, "dense", **kw), 1e-10)


def test_streamed_padding_masks_equal_dense():
    q, k, v = _qkv((2, 2, 40, 8), dtype=torch.float64, seed=3)
    key_mask = torch.zeros(2, 1, 40, dtype=torch.bool)
    key_mask[0, :, 30:] = True
    query_mask = key_mask.clone()
    query_mask[1, :, :5] = True
    options = SinkhornOptions(eps=1.0, max_iter=5, tol=None)
    kw = dict(options=options, key_padding_mask=key_mask, query_padding_mask=query_mask)
    _assert_equal(_run(q, k, v, "streaming", **kw), _run(q, k, v, "dense", **kw), 1e-10)


def test_module_streams_without_weights():
    torch.manual_seed(0)
    layer = otkit.SinkhornAttention(16, 2, storage="streaming").double()
    dense = otkit.SinkhornAttention(16, 2, storage="dense").double()
    dense.load_state_dict(layer.state_dict())
    x = torch.randn(2, 33, 16, dtype=torch.float64)
    out, weights = layer(x, x, x, need_weights=False)
    assert weights is None
    torch.testing.assert_close(out, dense(x, x, x)[0], rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="cannot return it"):
        layer(x, x, x)


@pytest.mark.filterwarnings("ignore:sinkhorn_attention.*return_weights:FutureWarning")
def test_streaming_refuses_weights_dropout_and_bad_inputs():
    q, k, v = _qkv((1, 20, 4))
    with pytest.raises(ValueError, match="cannot return it or drop entries"):
        otkit.sinkhorn_attention(q, k, v, storage="streaming", return_weights=True)  # the otkit 0.1 spelling
    with pytest.raises(ValueError, match="cannot return it or drop entries"):
        otkit.sinkhorn_attention(q, k, v, storage="streaming", dropout_p=0.1)
    bad = q.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="q contains NaN"):
        otkit.sinkhorn_attention(bad, k, v, storage="streaming")
    with pytest.raises(ValueError, match="storage must be"):
        otkit.sinkhorn_attention(q, k, v, storage="tiles")
