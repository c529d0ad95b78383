"""The operators under torch.compile (fullgraph: no graph break in the iteration loop) and autocast."""

from __future__ import annotations

import pytest
import torch

import otkit
from otkit import SinkhornOptions


@pytest.mark.parametrize("grad", ["unroll", "implicit"])
def test_sinkhorn_compiles_without_graph_breaks(grad):
    cost = torch.rand(3, 20, 5, requires_grad=True)

    def fn(c):
        res = otkit.sinkhorn(c, eps=0.1, max_iter=8, tol=1e-6, grad=grad)  # traced: fixed 8 iterations, log
        return res.plan, res.value

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    plan, value = compiled(cost)
    eager = otkit.sinkhorn(cost, eps=0.1, max_iter=8, tol=None, domain="log", grad=grad)
    torch.testing.assert_close(plan, eager.plan)
    torch.testing.assert_close(value, eager.value)
    (grad_c,) = torch.autograd.grad(plan.square().sum(), cost)
    assert bool(torch.isfinite(grad_c).all())


@pytest.mark.parametrize("grad", ["unroll", "implicit"])
def test_modules_compile_fullgraph(grad):
    torch.manual_seed(0)
    mpsa = otkit.MultiPromptSinkhornAttention(16, options=SinkhornOptions(max_iter=5, tol=None, grad=grad)).eval()
    attn = otkit.SinkhornAttention(16, 2, options=SinkhornOptions(eps=1.0, max_iter=2, tol=None, grad=grad)).eval()
    queries, pixels = torch.randn(2, 3, 4, 16), torch.randn(2, 25, 16)
    out, logits = torch.compile(mpsa, fullgraph=True, backend="aot_eager")(queries, pixels)
    ref_out, ref_logits = mpsa(queries, pixels)
    # eager "auto" may take the kernel domain; traced graphs take the log domain: same fixed point
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)
    x = torch.randn(2, 6, 16, requires_grad=True)
    y, _ = torch.compile(attn, fullgraph=True, backend="aot_eager")(x, x, x)
    torch.testing.assert_close(y, attn(x, x, x)[0], rtol=1e-4, atol=1e-5)
    y.sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())


def test_inductor_compiles_attention():
    attn = otkit.SinkhornAttention(16, 2, options=SinkhornOptions(eps=1.0, max_iter=2, tol=None)).eval()
    x = torch.randn(2, 6, 16)
    y, _ = torch.compile(attn, fullgraph=True)(x, x, x)
    torch.testing.assert_close(y, attn(x, x, x)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast(dtype):
    torch.manual_seed(0)
    mpsa = otkit.MultiPromptSinkhornAttention(32)
    attn = otkit.SinkhornAttention(32, 4)
    queries, pixels = torch.randn(2, 3, 4, 32), torch.randn(2, 40, 32)
    with torch.autocast("cpu", dtype=dtype):
        out, logits = mpsa(queries, pixels)
        y, w = attn(pixels, pixels, pixels)
    assert out.dtype == dtype and y.dtype == dtype
    assert logits.dtype == torch.float32 and w.dtype == torch.float32  # plans stay in float32
    for t in (out, logits, y, w):
        assert bool(torch.isfinite(t).all())
    (out.float().sum() + y.float().sum()).backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in [*mpsa.parameters(), *attn.parameters()])
