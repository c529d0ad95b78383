"""Sinkhorn attention: softmax identity, double stochasticity, masks, modules, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import otkit
from otkit import SinkhornOptions


def _iters(max_iter, eps=1.0):
    """Options for ``max_iter`` full Sinkhorn iterations (``max_iter + 1`` row normalisations), no tolerance."""
    return SinkhornOptions(eps=eps, max_iter=max_iter, tol=None)


def _qkv(batch=2, heads=3, lq=7, lk=9, dim=8, dtype=torch.float64):
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.randn(batch, heads, length, dim, generator=gen, dtype=dtype) for length in (lq, lk, lk))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_iteration_is_softmax_attention(dtype):
    q, k, v = _qkv(dtype=dtype)
    out = otkit.sinkhorn_attention(q, k, v, options=_iters(0))
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), rtol=0, atol=1e-6)


@pytest.mark.parametrize("eps", [1.0, 0.3])
def test_zero_iterations_is_exactly_softmax_attention(eps):
    q, k, v = _qkv(dtype=torch.float32)
    out = otkit.sinkhorn_attention(q, k, v, options=_iters(0, eps))
    weights = otkit.sinkhorn_attention_weights(q, k, options=_iters(0, eps))
    expected = torch.softmax((q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5 / eps, dim=-1)
    assert torch.equal(weights, expected)
    assert torch.equal(out, expected @ v)


def test_converged_attention_is_doubly_stochastic():
    q, k, _ = _qkv()
    weights = otkit.sinkhorn_attention_weights(q, k, options=_iters(499))
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 7, dtype=torch.float64))
    torch.testing.assert_close(weights.sum(-2), torch.full((2, 3, 9), 7 / 9, dtype=torch.float64))


def test_cosine_cost_and_temperature():
    q, k, _ = _qkv()
    weights = otkit.sinkhorn_attention_weights(q, k, options=_iters(0, eps=0.1), cost="cosine")
    cos = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-1, -2)
    torch.testing.assert_close(weights, torch.softmax(cos / 0.1, dim=-1))


def test_padded_keys_get_no_weight_and_do_not_change_real_outputs():
    q, k, v = _qkv(lk=6)
    ref = otkit.sinkhorn_attention(q, k, v, options=_iters(19))
    pad = torch.randn(2, 3, 4, 8, dtype=torch.float64) * 5
    k_pad, v_pad = torch.cat([k, pad], dim=2), torch.cat([v, pad], dim=2)
    mask = torch.zeros(2, 1, 10, dtype=torch.bool)
    mask[..., 6:] = True
    out = otkit.sinkhorn_attention(q, k_pad, v_pad, options=_iters(19), key_padding_mask=mask)
    weights = otkit.sinkhorn_attention_weights(q, k_pad, options=_iters(19), key_padding_mask=mask)
    assert bool((weights[..., 6:] == 0).all())
    torch.testing.assert_close(out, ref)


def test_self_attention_module_ignores_padding():
    torch.manual_seed(0)
    attn = otkit.SinkhornAttention(16, 4, options=_iters(9)).double().eval()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    ref, _ = attn(x, x, x)
    padded = torch.cat([x, torch.randn(2, 3, 16, dtype=torch.float64)], dim=1)
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[:, 5:] = True
    out, weights = attn(padded, padded, padded, key_padding_mask=mask)
    torch.testing.assert_close(out[:, :5], ref)
    assert bool((weights[:, :, 5:] == 0).all())
    # padded queries are left out of the column marginals: real columns keep their mass
    _, full = attn(padded, padded, padded, key_padding_mask=mask, average_attn_weights=False)
    torch.testing.assert_close(
        full[:, :, :5, :5].sum(-2), torch.ones(2, 4, 5, dtype=torch.float64), rtol=1e-3, atol=1e-3
    )


def test_module_loads_multihead_attention_weights_and_matches_it_at_one_iteration():
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(16, 4, batch_first=True).eval()
    attn = otkit.SinkhornAttention(16, 4, options=_iters(0)).eval()
    attn.load_state_dict(mha.state_dict())
    x, y = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    ref, ref_w = mha(x, y, y)
    out, w = attn(x, y, y)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w, ref_w, rtol=1e-5, atol=1e-6)


def test_module_errors():
    with pytest.raises(ValueError, match="divisible"):
        otkit.SinkhornAttention(10, 3)
    attn = otkit.SinkhornAttention(8, 2)
    x = torch.randn(1, 3, 8)
    with pytest.raises(ValueError, match="attn_mask"):
        attn(x, x, x, attn_mask=torch.zeros(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="every position"):
        attn(x, x, x, key_padding_mask=torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="max_iter must be an int >= 0"):
        otkit.sinkhorn_attention(x, x, x, options=_iters(-1))


def test_module_inputs_are_checked_like_multihead_attention():
    """Wrong sizes raise a ValueError naming what was expected, not a matmul error from inside."""
    attn = otkit.SinkhornAttention(16, 4)
    x, y = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    with pytest.raises(ValueError, match=r"query must be \(B, L, E\) .* E = embed_dim = 16, got \(2, 5, 12\)"):
        attn(torch.randn(2, 5, 12), y, y)
    with pytest.raises(ValueError, match=r"value must be .* embed_dim = 16, got \(2, 7\)"):
        attn(x, y, y[..., 0])
    with pytest.raises(ValueError, match="same batch size B, got 2, 3 and 3"):
        attn(x, torch.randn(3, 7, 16), torch.randn(3, 7, 16))
    with pytest.raises(ValueError, match="same sequence length S, got 7 and 6"):
        attn(x, y, y[:, :6])
    with pytest.raises(ValueError, match=r"key_padding_mask must be a bool tensor \(B, S\) = \(2, 7\), got \(2, 5\)"):
        attn(x, y, y, key_padding_mask=torch.zeros(2, 5, dtype=torch.bool))


def test_modules_store_their_options():
    assert otkit.ATTENTION_OPTIONS == SinkhornOptions(eps=1.0, max_iter=2, tol=None)  # 3 row normalisations
    assert otkit.SinkhornAttention(8, 2).options is otkit.ATTENTION_OPTIONS
    assert otkit.MultiPromptSinkhornAttention(8).options == SinkhornOptions()
    options = SinkhornOptions(eps=0.2, max_iter=7)
    assert otkit.MultiPromptSinkhornAttention(8, options=options).options is options


@pytest.mark.parametrize("grad", ["unroll", "implicit"])
def test_gradcheck_sinkhorn_attention_module(grad):
    torch.manual_seed(0)
    attn = otkit.SinkhornAttention(8, 2, options=SinkhornOptions(eps=1.0, max_iter=3, tol=None, grad=grad))
    attn = attn.double().eval()
    x = torch.randn(2, 4, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: attn(t, t, t)[0], (x,))


@pytest.mark.parametrize("grad", ["unroll", "implicit"])
def test_gradcheck_mpsa_module(grad):
    torch.manual_seed(0)
    options = SinkhornOptions(eps=0.5, max_iter=3000, tol=1e-13, grad=grad)
    mpsa = otkit.MultiPromptSinkhornAttention(8, options=options).double().eval()
    queries = torch.randn(1, 2, 3, 8, dtype=torch.float64, requires_grad=True)
    pixels = torch.randn(1, 6, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda qq, pp: torch.cat([t.flatten() for t in mpsa(qq, pp)]), (queries, pixels))


def test_mpsa_output_is_plan_times_values():
    torch.manual_seed(0)
    mpsa = otkit.MultiPromptSinkhornAttention(16).double().eval()
    queries, pixels = torch.randn(2, 3, 4, 16, dtype=torch.float64), torch.randn(2, 30, 16, dtype=torch.float64)
    out, logits = mpsa(queries, pixels)
    transport = otkit.multi_prompt_transport(mpsa.k(pixels), mpsa.q(queries))
    expected = torch.einsum("bkmn,bmc->bknc", transport.plan, mpsa.v(pixels))
    torch.testing.assert_close(out, mpsa.proj(expected))
    torch.testing.assert_close(logits, transport.score)
    assert out.shape == (2, 3, 4, 16) and logits.shape == (2, 3, 30)
