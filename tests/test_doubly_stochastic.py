"""otkit.sinkhorn_knopp: marginals, the plain loop of the papers, otkit.sinkhorn, gradients, memory, compile."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import otkit
from otkit.doubly_stochastic import unrolled
from otkit.doubly_stochastic.unrolled import SinkhornKnopp, batch_last

F64 = torch.float64


def plain_loop(log_alpha, n_iter=20, tau=1.0):
    """Sinkhorn-Knopp as the papers write it (Mena et al. 2018; mHC), autograd through every iteration."""
    n, m = log_alpha.shape[-2:]
    x = log_alpha / tau
    for _ in range(n_iter):
        x = x - torch.logsumexp(x, dim=-1, keepdim=True)
        x = x - torch.logsumexp(x, dim=-2, keepdim=True) + math.log(n / m)
    return torch.exp(x)


# (shape, tau): batch-last CPU layout (many small matrices), natural layout (one matrix, or n * m > 256),
# rectangular both ways, extra batch dims
CASES = [
    ((40, 4, 4), 1.0),
    ((6, 16, 16), 0.3),
    ((1, 5, 5), 0.5),
    ((3, 18, 17), 1.0),
    ((2, 3, 4, 7), 0.7),
    ((5, 7, 3), 2.0),
]


@pytest.mark.parametrize(("shape", "tau"), CASES)
def test_outputs_and_gradients_equal_the_plain_loop(shape, tau):
    log_alpha = torch.randn(shape, dtype=F64, requires_grad=True)
    weights = torch.randn(shape, dtype=F64)
    out = otkit.sinkhorn_knopp(log_alpha, 20, tau)
    ref = plain_loop(log_alpha, 20, tau)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    (grad,) = torch.autograd.grad((out * weights).sum(), log_alpha)
    (grad_ref,) = torch.autograd.grad((ref * weights).sum(), log_alpha)
    torch.testing.assert_close(grad, grad_ref, rtol=0, atol=1e-11)


@pytest.mark.parametrize("n_iter", [1, 2, 5, 6, 7, 11, 53])
@pytest.mark.parametrize("shape", [(12, 4, 4), (2, 12, 30)])
def test_every_iteration_count_equals_the_plain_loop(n_iter, shape):
    """The scaled iterations re-anchor every few iterations: counts on and off those boundaries, both layouts."""
    log_alpha = (2 * torch.randn(shape, dtype=F64)).requires_grad_()
    weights = torch.randn(shape, dtype=F64)
    out, ref = otkit.sinkhorn_knopp(log_alpha, n_iter, 0.4), plain_loop(log_alpha, n_iter, 0.4)
    (grad,) = torch.autograd.grad((out * weights).sum(), log_alpha)
    (grad_ref,) = torch.autograd.grad((ref * weights).sum(), log_alpha)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad, grad_ref, rtol=0, atol=1e-11)


@pytest.mark.parametrize("shape", [(40, 4, 4), (7, 9, 10)])
def test_cache_blocks_give_the_same_result(shape, monkeypatch):
    log_alpha = torch.randn(shape, dtype=F64, requires_grad=True)
    weights = torch.randn(shape, dtype=F64)
    out = otkit.sinkhorn_knopp(log_alpha, 20, 0.5)
    (grad,) = torch.autograd.grad((out * weights).sum(), log_alpha)
    monkeypatch.setattr(unrolled, "CPU_BLOCK_ELEMENTS", 3 * shape[1] * shape[2])  # blocks of 3, the last shorter
    assert unrolled.block_size(log_alpha) == 3
    blocked = otkit.sinkhorn_knopp(log_alpha, 20, 0.5)
    (grad_blocked,) = torch.autograd.grad((blocked * weights).sum(), log_alpha)
    torch.testing.assert_close(blocked, out, rtol=0, atol=1e-14)
    torch.testing.assert_close(grad_blocked, grad, rtol=0, atol=1e-14)


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize(
    ("shape", "tau", "scale"), [((64, 4, 4), 0.01, 1.0), ((8, 5, 9), 0.005, 1.0), ((9, 4, 4), 1, 300.0)]
)
def test_peaked_inputs_where_entries_underflow(shape, tau, scale, dtype):
    """exp(log_alpha / tau) spans far beyond the dtype's range: the log-domain iterate loses nothing."""
    log_alpha = (scale * torch.randn(shape, dtype=F64)).to(dtype).requires_grad_()
    weights = torch.randn(shape, dtype=dtype)
    out, ref = otkit.sinkhorn_knopp(log_alpha, 20, tau), plain_loop(log_alpha, 20, tau)
    (grad,) = torch.autograd.grad((out * weights).sum(), log_alpha)
    (grad_ref,) = torch.autograd.grad((ref * weights).sum(), log_alpha)
    rtol = 1e-12 if dtype == F64 else 2e-5
    torch.testing.assert_close(out, ref, rtol=0, atol=rtol)
    assert float((grad - grad_ref).abs().max() / grad_ref.abs().max()) < rtol


def test_both_layouts_are_exercised():
    assert batch_last(torch.zeros(40, 4, 4)) and batch_last(torch.zeros(6, 16, 16))
    assert not batch_last(torch.zeros(1, 5, 5)) and not batch_last(torch.zeros(3, 18, 17))


def test_float32_matches_the_plain_loop_at_1e5():
    log_alpha = torch.randn(256, 4, 4, requires_grad=True)
    weights = torch.randn(256, 4, 4)
    out, ref = otkit.sinkhorn_knopp(log_alpha), plain_loop(log_alpha)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    (grad,) = torch.autograd.grad((out * weights).sum(), log_alpha)
    (grad_ref,) = torch.autograd.grad((ref * weights).sum(), log_alpha)
    torch.testing.assert_close(grad, grad_ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("n", "m"), [(4, 4), (3, 6), (6, 2)])
def test_marginals(n, m):
    out = otkit.sinkhorn_knopp(torch.randn(20, n, m, dtype=F64), n_iter=500)
    torch.testing.assert_close(out.sum(-2), torch.full((20, m), n / m, dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(out.sum(-1), torch.ones(20, n, dtype=F64), rtol=0, atol=1e-9)
    few = otkit.sinkhorn_knopp(torch.randn(20, n, m, dtype=F64), n_iter=3)  # columns exact after any n_iter
    torch.testing.assert_close(few.sum(-2), torch.full((20, m), n / m, dtype=F64), rtol=0, atol=1e-12)


def test_same_iterates_as_otkit_sinkhorn():
    """C = -log_alpha, eps = tau, uniform marginals, tol=None, max_iter=n_iter: the plan is the output / n."""
    log_alpha = torch.randn(7, 5, 3, dtype=F64)
    for n_iter in (1, 20):
        res = otkit.sinkhorn(-log_alpha, eps=0.4, tol=None, max_iter=n_iter, domain="log")
        torch.testing.assert_close(otkit.sinkhorn_knopp(log_alpha, n_iter, 0.4), 5 * res.plan, rtol=0, atol=1e-12)


@pytest.mark.parametrize("grad", ["unroll", "implicit"])
def test_gradcheck(grad):
    log_alpha = torch.randn(3, 4, 3, dtype=F64, requires_grad=True)
    n_iter = 6 if grad == "unroll" else 200
    assert torch.autograd.gradcheck(lambda x: otkit.sinkhorn_knopp(x, n_iter, 0.7, grad=grad), (log_alpha,))
    single = torch.randn(1, 5, 5, dtype=F64, requires_grad=True)  # the natural layout
    assert torch.autograd.gradcheck(lambda x: otkit.sinkhorn_knopp(x, n_iter, 0.7, grad=grad), (single,))


def test_implicit_gradient_is_that_of_the_converged_projection():
    log_alpha = torch.randn(4, 6, 5, dtype=F64, requires_grad=True)
    weights = torch.randn(4, 6, 5, dtype=F64)
    implicit = otkit.sinkhorn_knopp(log_alpha, 400, grad="implicit")
    unrolled = otkit.sinkhorn_knopp(log_alpha, 400)
    torch.testing.assert_close(implicit, unrolled, rtol=0, atol=1e-12)
    (g_implicit,) = torch.autograd.grad((implicit * weights).sum(), log_alpha)
    (g_unrolled,) = torch.autograd.grad((unrolled * weights).sum(), log_alpha)
    torch.testing.assert_close(g_implicit, g_unrolled, rtol=0, atol=1e-9)
    # and that of otkit.sinkhorn's implicit mode on the same problem
    cost = (-log_alpha).detach().requires_grad_()
    plan = otkit.sinkhorn(cost, eps=1.0, tol=None, max_iter=400, grad="implicit", domain="log").plan
    (g_dense,) = torch.autograd.grad((6 * plan * weights).sum(), cost)
    torch.testing.assert_close(g_implicit, -g_dense, rtol=0, atol=1e-9)


def _saved_bytes(fn, x):
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(x)
    return total, out


@pytest.mark.parametrize(("n", "layout_batch"), [(4, 64), (16, 8), (24, 1)])
def test_backward_keeps_the_last_iterate_and_the_normalisers_only(n, layout_batch):
    n_iter = 20
    x = torch.randn(layout_batch, n, n, requires_grad=True)
    saved, out = _saved_bytes(lambda t: otkit.sinkhorn_knopp(t, n_iter), x)
    input_bytes = x.numel() * x.element_size()
    assert saved == input_bytes + layout_batch * n_iter * 2 * n * x.element_size()  # n m + n_iter (n + m)
    assert saved <= (1 + 2 * n_iter / n) * input_bytes
    plain, _ = _saved_bytes(lambda t: plain_loop(t, n_iter), x)
    assert plain >= 2 * n_iter * input_bytes  # autograd keeps more than two matrices per iteration
    assert saved <= plain / 4
    out.sum().backward()  # the saved tensors suffice
    implicit, _ = _saved_bytes(lambda t: otkit.sinkhorn_knopp(t, n_iter, grad="implicit"), x)
    assert implicit <= 5 * input_bytes  # independent of n_iter


class _HostReads(TorchDispatchMode):
    """Counts the ATen ops that read a tensor's value on the host (``.item()``, ``bool(t)``)."""

    def __init__(self):
        super().__init__()
        self.reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.reads += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("shape", [(32, 4, 4), (1, 9, 9)])
def test_no_host_synchronisation_in_forward_and_backward(shape):
    x = torch.randn(shape, requires_grad=True)
    with _HostReads() as mode:
        out = SinkhornKnopp.apply(x, 20, 0.5, torch.float32)
        out.sum().backward()
    assert mode.reads == 0
    meta = torch.randn(shape, device="meta", requires_grad=True)  # a device without data: any read would fail
    otkit.sinkhorn_knopp(meta, 20, 0.5).sum().backward()
    assert meta.grad.shape == shape


def test_fullgraph_compile_matches_eager():
    x = torch.randn(8, 4, 4, requires_grad=True)
    compiled = torch.compile(lambda t: otkit.sinkhorn_knopp(t, 5, 0.5), backend="aot_eager", fullgraph=True)
    out = compiled(x)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    ref = otkit.sinkhorn_knopp(x, 5, 0.5)
    (grad_ref,) = torch.autograd.grad(ref.square().sum(), x)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(grad, grad_ref)


def test_half_precision_computes_in_float32():
    x = torch.randn(16, 4, 4)
    out = otkit.sinkhorn_knopp(x.bfloat16().requires_grad_())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), otkit.sinkhorn_knopp(x.bfloat16().float()), rtol=0, atol=4e-3)


def test_minus_infinity_entries_stay_zero():
    x = torch.randn(10, 4, 4, dtype=F64)
    x[:, 0, 1] = -math.inf
    x.requires_grad_()
    out = otkit.sinkhorn_knopp(x, 50)
    assert bool((out[:, 0, 1] == 0).all()) and bool(torch.isfinite(out).all())
    torch.testing.assert_close(out.sum(-1), torch.ones(10, 4, dtype=F64), rtol=0, atol=1e-6)
    (grad,) = torch.autograd.grad((out * torch.randn_like(out)).sum(), x)
    assert bool(torch.isfinite(grad).all()) and bool((grad[:, 0, 1] == 0).all())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"log_alpha": [[0.0]]}, "torch.Tensor"),
        ({"log_alpha": torch.zeros(3, 3, dtype=torch.int64)}, "floating"),
        ({"log_alpha": torch.zeros(3)}, r"\(\.\.\., n, m\)"),
        ({"log_alpha": torch.zeros(0, 3, 3)}, "empty"),
        ({"log_alpha": torch.tensor([[0.0, math.nan], [0.0, 0.0]])}, "NaN"),
        ({"log_alpha": torch.tensor([[0.0, math.inf], [0.0, 0.0]])}, r"\+inf"),
        ({"n_iter": 0}, "n_iter"),
        ({"n_iter": 2.0}, "n_iter"),
        ({"tau": 0.0}, "tau"),
        ({"tau": math.nan}, "tau"),
        ({"grad": "backprop"}, "grad"),
    ],
)
def test_bad_input_raises(kwargs, match):
    args = {"log_alpha": torch.zeros(2, 3, 3), **kwargs}
    with pytest.raises(ValueError, match=match):
        otkit.sinkhorn_knopp(**args)
