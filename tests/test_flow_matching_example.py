"""The OT-CFM example runs and shows what it claims: OT pairs give straighter learned paths than random pairs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "flow_matching.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("flow_matching_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("method", ["sinkhorn", "exact"])
def test_ot_pairs_give_straighter_paths(example, method):
    results = example.compare(steps=120, batch=32 if method == "exact" else 64, method=method)
    random, ot = results["random"], results[method]
    assert ot["curvature"] < 0.3 * random["curvature"]
    assert ot["one_step_error"] < 0.3 * random["one_step_error"]
    assert ot["distance_to_target"] < 2.0  # both learned the target ring (radius 4), not a collapse
