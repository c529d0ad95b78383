"""The doubly-stochastic benchmark scripts run from a fresh process and write the expected JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_bench_writes_json_with_equal_values(tmp_path):
    out = tmp_path / "ds.json"
    args = ["benchmarks/doubly_stochastic_bench.py", "--quick", "--no-compile", "--repeat", "1", "--out", str(out)]
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(out.read_text())
    assert {"torch", "threads", "device"} <= set(payload["environment"])
    rows = payload["rows"]
    assert {(r["problem"], r["method"]) for r in rows} == {
        (p, m) for p in ("1024x4x4", "64x16x16") for m in ("loop[eager]", "otkit")
    }
    for row in rows:
        assert row["extra"]["max_out_diff"] <= 1e-5 and row["extra"]["max_grad_diff"] <= 1e-5
        assert row["ms"] > 0
    saved = {(r["problem"], r["method"]): r["extra"]["saved_x_input"] for r in rows}
    assert saved[("1024x4x4", "otkit")] == 11.0  # 1 + n_iter (n + m) / (n m)
    assert saved[("1024x4x4", "otkit")] < saved[("1024x4x4", "loop[eager]")] / 4


def test_gpu_script_refuses_without_cuda():
    module = "benchmarks.gpu_doubly_stochastic_bench"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-m", module], cwd=ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode != 0 and "needs a CUDA device" in proc.stderr
