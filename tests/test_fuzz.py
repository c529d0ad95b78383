"""Adversarial inputs: every call returns finite results that meet their marginals (or are flagged as not
converged with a warning), or raises a ValueError that names the problem. No NaN escapes silently."""

from __future__ import annotations

import math
import os
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import otkit
from otkit import SinkhornOptions

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
FUZZ = settings(
    max_examples=int(os.environ.get("OTKIT_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@st.composite
def problems(draw):
    batch = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    n, m = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    kind = draw(st.sampled_from(["uniform", "constant", "huge", "negative-huge", "wide", "nan", "inf"]))
    cost = torch.rand(*batch, n, m, generator=gen, dtype=torch.float64)
    if kind == "constant":
        cost = torch.full_like(cost, draw(st.sampled_from([0.0, 1.0, -5.0, 1e6])))
    elif kind == "huge":
        cost = cost * 1e6
    elif kind == "negative-huge":
        cost = -1e6 + cost
    elif kind == "wide":
        cost = cost * draw(st.sampled_from([10.0, 1e3]))
    elif kind in ("nan", "inf"):
        cost.view(-1)[draw(st.integers(0, cost.numel() - 1))] = math.nan if kind == "nan" else math.inf
    eps = 10 ** draw(st.floats(-4, 3))
    weights = draw(st.sampled_from(["uniform", "random", "zeros", "tiny", "zero-mass"]))
    a = b = None
    if weights != "uniform":
        a = torch.rand(*batch, n, generator=gen, dtype=torch.float64) + 0.1
        b = torch.rand(*batch, m, generator=gen, dtype=torch.float64) + 0.1
        if weights == "zeros" and n > 1 and m > 1:
            a[..., 0], b[..., -1] = 0.0, 0.0
        elif weights == "tiny":
            a[..., 0], b[..., 0] = 1e-30, 1e-30
        elif weights == "zero-mass":
            a = torch.zeros_like(a)
        a, b = (a / a.sum(-1, keepdim=True) if a.sum() > 0 else a), b / b.sum(-1, keepdim=True)
    relax = draw(st.sampled_from([(None, None), (1.0, None), (None, 0.1), (0.5, 5.0)]))
    return cost.to(dtype), a, b, eps, relax, kind


@FUZZ
@given(problems())
def test_sinkhorn_fuzz(problem):
    cost, a, b, eps, (rho_a, rho_b), kind = problem
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = otkit.sinkhorn(cost, a, b, eps, rho_a=rho_a, rho_b=rho_b, max_iter=300, tol=1e-4)
        except ValueError as err:
            assert str(err)  # a message naming the problem
            assert kind in ("nan", "inf", "huge", "negative-huge", "wide", "constant") or a is not None
            return
    assert kind not in ("nan", "inf"), "NaN/Inf costs must raise"
    for t in (res.f, res.g, res.plan, res.value):
        assert bool(torch.isfinite(t).all())
    assert bool((res.plan >= 0).all())
    rows, cols = res.marginal_error
    mass = res.a.sum(-1)
    converged = res.converged
    # converged problems meet their marginal conditions; the others were reported with a warning
    assert bool(((rows / mass)[converged] <= 1e-2).all()) and bool(((cols / mass)[converged] <= 1e-2).all())
    if not bool(converged.all()):
        assert any(issubclass(w.category, otkit.ConvergenceWarning) for w in caught)


@FUZZ
@given(
    st.integers(1, 2),
    st.integers(1, 3),
    st.integers(1, 4),
    st.integers(1, 40),
    st.sampled_from(DTYPES),
    st.floats(-3, 1),
    st.sampled_from(["normal", "large", "nan", "zero"]),
)
def test_multi_prompt_transport_fuzz(batch, n_cls, n_prompt, n_pix, dtype, log_eps, kind):
    gen = torch.Generator().manual_seed(batch * 100 + n_pix)
    pixels = torch.randn(batch, n_pix, 8, generator=gen)
    prompts = torch.randn(n_cls, n_prompt, 8, generator=gen)
    if kind == "large":
        pixels = pixels * 1e4
    elif kind == "nan":
        pixels[0, 0, 0] = math.nan
    elif kind == "zero":
        pixels[0, 0] = 0.0  # a zero feature: cosine 0 (normalisation keeps it finite)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            options = SinkhornOptions(eps=10**log_eps, max_iter=300)
            out = otkit.multi_prompt_transport(pixels.to(dtype), prompts.to(dtype), options=options)
        except ValueError as err:
            assert kind == "nan" and "NaN" in str(err)
            return
    assert kind != "nan"
    assert out.plan.shape == (batch, n_cls, n_pix, n_prompt) and out.score.shape == (batch, n_cls, n_pix)
    assert bool(torch.isfinite(out.plan).all() & torch.isfinite(out.score).all())
    rows, cols = out.result.marginal_error
    converged = out.result.converged
    assert bool((rows[converged] <= 1e-3).all()) and bool((cols[converged] <= 1e-3).all())
    if not bool(converged.all()):
        assert any(issubclass(w.category, otkit.ConvergenceWarning) for w in caught)


@FUZZ
@given(
    st.integers(1, 3),
    st.integers(1, 12),
    st.integers(0, 5),
    st.sampled_from([torch.float32, torch.float64, torch.float16]),
    st.floats(-2, 2),
    st.sampled_from(["normal", "large", "nan", "padded"]),
)
def test_sinkhorn_attention_fuzz(heads, length, max_iter, dtype, log_eps, kind):
    gen = torch.Generator().manual_seed(length * 10 + heads)
    q, k, v = (torch.randn(2, heads, length, 4, generator=gen) for _ in range(3))
    mask = None
    if kind == "large":
        q = q * 30
    elif kind == "nan":
        k[0, 0, 0, 0] = math.nan
    elif kind == "padded" and length > 1:
        mask = torch.zeros(2, 1, length, dtype=torch.bool)
        mask[..., -1] = True
    options = SinkhornOptions(eps=10**log_eps, max_iter=max_iter, tol=None)
    try:
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
        out = otkit.sinkhorn_attention(q, k, v, options=options, key_padding_mask=mask)
        w = otkit.sinkhorn_attention_weights(q, k, options=options, key_padding_mask=mask)
    except ValueError as err:
        assert kind in ("nan", "large") and str(err)
        return
    assert kind != "nan"
    assert bool(torch.isfinite(out).all() & torch.isfinite(w).all())
    torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)), rtol=1e-3, atol=1e-3)
    if mask is not None:
        assert bool((w[..., -1] == 0).all())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_extremes_stay_finite(dtype):
    cost = torch.tensor([[6.0e4, 0.0], [0.0, 6.0e4]]).to(dtype)  # near float16's largest value
    res = otkit.sinkhorn(cost, eps=1e3, max_iter=500)
    assert bool(torch.isfinite(res.plan).all()) and res.plan.dtype == torch.float32
    with pytest.raises(ValueError, match="Inf"):
        otkit.sinkhorn(torch.tensor([[1e5, 0.0]]).to(torch.float16), eps=1.0)  # overflowed to inf on the way in


def test_precision_limit_is_explained():
    with pytest.raises(ValueError, match=r"max \|cost\| / eps .* Subtract a constant"):
        otkit.sinkhorn(torch.full((3, 4), 1e6), eps=1.0)
    res = otkit.sinkhorn(torch.full((3, 4), 1e6) - 1e6, eps=1.0)  # shifted as the message says
    torch.testing.assert_close(res.plan, torch.full((3, 4), 1 / 12))
