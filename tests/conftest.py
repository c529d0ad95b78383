"""Shared test fixtures: seeded RNG, the shared fixtures folder, float64 helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# POT would import jax (installed for the ott-jax references) on `import ot` for a backend no test uses: 1.4 s of
# CPU per process. The ott-jax tests import jax themselves.
os.environ.setdefault("POT_BACKEND_DISABLE_JAX", "1")

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Run single-threaded: for small problems, where on a shared CPU each parallel region can wait for a core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fixtures_dir() -> Path:
    """The shared real-data fixtures (ADE20K sample, CLIP text embeddings); skips when absent."""
    if not FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    return FIXTURES


def random_problem(batch, n, m, dtype=torch.float64, zero_weights=False, seed=0):
    """A cost (*batch, n, m) in [0, 1) and normalised positive marginals; optionally some zero weights."""
    gen = torch.Generator().manual_seed(seed)
    cost = torch.rand(*batch, n, m, generator=gen, dtype=dtype)
    a = torch.rand(*batch, n, generator=gen, dtype=dtype) + 0.2
    b = torch.rand(*batch, m, generator=gen, dtype=dtype) + 0.2
    if zero_weights:
        a[..., 0] = 0
        b[..., -1] = 0
    return cost, a / a.sum(-1, keepdim=True), b / b.sum(-1, keepdim=True)


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory) -> Path:
    """A random otseg-tiny model file recording a synthetic world and its split, as a trained one does."""
    from otseg.build import load_otseg
    from otseg.checkpoint import save_model
    from otseg.data.synthetic import SyntheticWorld, diagonal_split

    split = diagonal_split(SyntheticWorld(image_size=64))
    model, _ = load_otseg("otseg-tiny", allow_random_clip=True)
    meta = {
        "class_names": list(split.class_names),
        "unseen": list(split.unseen),
        "dataset": "synthetic",
        "synthetic": {"image_size": 64},
        "step": 0,
        "inference": {"short_side": None, "mode": "whole", "crop": 64, "stride": 64},
    }
    return save_model(model, tmp_path_factory.mktemp("serve") / "tiny.safetensors", meta=meta)


def random_clouds(batch=(), n=37, m=29, d=3, seed=0, dtype=torch.float64):
    """Clouds ``x (*batch, n, d)`` in the unit cube and ``y (*batch, m, d)`` in a shifted smaller cube, with
    normalised positive weights ``a (*batch, n)``, ``b (*batch, m)``."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(*batch, n, d, generator=gen, dtype=dtype)
    y = torch.rand(*batch, m, d, generator=gen, dtype=dtype) * 0.8 + 0.3
    a = torch.rand(*batch, n, generator=gen, dtype=dtype) + 0.2
    b = torch.rand(*batch, m, generator=gen, dtype=dtype) + 0.2
    return x, y, a / a.sum(-1, keepdim=True), b / b.sum(-1, keepdim=True)
