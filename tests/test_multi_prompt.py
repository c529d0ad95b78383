"""Multi-prompt transport (OTSeg's MPS): plans vs POT, the score map formula, shapes and weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import otkit
from otkit import SinkhornOptions

ot = pytest.importorskip("ot")


def _features(fixtures_dir=None, batch=2, n_cls=4, n_prompt=3, n_pix=40, dim=512, dtype=torch.float64):
    """Prompts near real CLIP class embeddings (when the fixture is there) and pixels near the prompts."""
    gen = torch.Generator().manual_seed(0)
    if fixtures_dir is not None:
        text = torch.from_numpy(np.load(fixtures_dir / "clip_text_embeddings" / "voc12_single.npy")).to(dtype)
        text = text[:n_cls]
    else:
        text = torch.randn(n_cls, dim, generator=gen, dtype=dtype)
    text = F.normalize(text, dim=-1)
    prompts = F.normalize(text[:, None] + 0.05 * torch.randn(n_cls, n_prompt, dim, generator=gen, dtype=dtype), dim=-1)
    owner = torch.randint(0, n_cls, (batch, n_pix), generator=gen)
    pixels = text[owner] + 0.08 * torch.randn(batch, n_pix, dim, generator=gen, dtype=dtype)
    return pixels, prompts


def test_plans_equal_pot_per_problem(fixtures_dir):
    pixels, prompts = _features(fixtures_dir)
    out = otkit.multi_prompt_transport(pixels, prompts, options=SinkhornOptions(eps=0.05, max_iter=5000, tol=1e-13))
    batch, n_cls, n_pix, n_prompt = out.plan.shape
    assert (batch, n_cls, n_pix, n_prompt) == (2, 4, 40, 3)
    cos = F.normalize(pixels, dim=-1) @ F.normalize(prompts, dim=-1).reshape(-1, 512).T  # (B, M, K*N)
    a, b = np.full(n_pix, 1 / n_pix), np.full(n_prompt, 1 / n_prompt)
    for i in range(batch):
        for k in range(n_cls):
            cost = 1 - cos[i, :, k * n_prompt : (k + 1) * n_prompt]
            ref = ot.bregman.sinkhorn_log(a, b, cost.numpy(), 0.05, numItermax=100000, stopThr=1e-15)
            torch.testing.assert_close(out.plan[i, k], torch.as_tensor(ref), rtol=0, atol=1e-10)


def test_score_map_is_the_formula():
    pixels, prompts = _features()
    out = otkit.multi_prompt_transport(pixels, prompts, options=SinkhornOptions(eps=0.05))
    n_pix, n_prompt = pixels.shape[1], prompts.shape[1]
    sim = torch.einsum("bmc,knc->bkmn", F.normalize(pixels, dim=-1), F.normalize(prompts, dim=-1))
    torch.testing.assert_close(out.similarity, sim)
    expected = torch.zeros(out.score.shape, dtype=torch.float64)
    for n in range(n_prompt):
        expected += n_pix * n_prompt * out.plan[..., n] * sim[..., n]
    torch.testing.assert_close(out.score, expected)


def test_shared_and_per_image_prompts_agree():
    pixels, prompts = _features()
    shared = otkit.multi_prompt_transport(pixels, prompts)
    per_image = otkit.multi_prompt_transport(pixels, prompts.expand(2, -1, -1, -1))
    torch.testing.assert_close(shared.plan, per_image.plan)
    torch.testing.assert_close(shared.score, per_image.score)


def test_marginals_and_weights():
    pixels, prompts = _features()
    options = SinkhornOptions(max_iter=1000, tol=1e-12)
    out = otkit.multi_prompt_transport(pixels, prompts, options=options)
    torch.testing.assert_close(out.plan.sum(-1), torch.full((2, 4, 40), 1 / 40, dtype=torch.float64))
    torch.testing.assert_close(out.plan.sum(-2), torch.full((2, 4, 3), 1 / 3, dtype=torch.float64))
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    weighted = otkit.multi_prompt_transport(pixels, prompts, options=options, prompt_weights=weights)
    torch.testing.assert_close(weighted.plan.sum(-2), weights.expand(2, 4, 3))
    pix_w = torch.rand(2, 40, dtype=torch.float64)
    pix_w = pix_w / pix_w.sum(-1, keepdim=True)
    pw = otkit.multi_prompt_transport(pixels, prompts, options=options, pixel_weights=pix_w)
    torch.testing.assert_close(pw.plan.sum(-1), pix_w[:, None].expand(2, 4, 40))


def test_unbalanced_prompts_relax_the_prompt_marginal():
    """Rows are pixels and columns prompts: ``rho_b`` relaxes the prompt marginal, ``rho_a`` the pixel one."""
    pixels, prompts = _features()
    out = otkit.multi_prompt_transport(pixels, prompts, options=SinkhornOptions(rho_b=0.1, max_iter=2000, tol=1e-12))
    torch.testing.assert_close(out.plan.sum(-1), torch.full((2, 4, 40), 1 / 40, dtype=torch.float64))
    assert float((out.plan.sum(-2) - 1 / 3).abs().max()) > 1e-3
    assert out.result.rho_b == 0.1 and out.result.rho_a is None
    pixel_relaxed = otkit.multi_prompt_transport(
        pixels, prompts, options=SinkhornOptions(rho_a=0.1, max_iter=2000, tol=1e-12)
    )
    torch.testing.assert_close(pixel_relaxed.plan.sum(-2), torch.full((2, 4, 3), 1 / 3, dtype=torch.float64))
    assert float((pixel_relaxed.plan.sum(-1) - 1 / 40).abs().max()) > 1e-5


@pytest.mark.parametrize(
    ("pixels", "prompts", "match"),
    [
        (torch.randn(2, 5), torch.randn(3, 2, 5), "pixels must be"),
        (torch.randn(2, 5, 8), torch.randn(3, 8), "prompts must be"),
        (torch.randn(2, 5, 8), torch.randn(3, 2, 4), "share the channel dim"),
        (torch.randn(2, 5, 8), torch.randn(3, 3, 2, 8), "batch size"),
    ],
)
def test_bad_shapes(pixels, prompts, match):
    with pytest.raises(ValueError, match=match):
        otkit.multi_prompt_transport(pixels, prompts)
