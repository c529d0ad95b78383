"""The benchmark scripts run from a fresh process, as documented, and write the expected JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    return proc


def test_quick_memory_suite_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = _run("benchmarks/sinkhorn_bench.py", "--quick", "--suite", "memory", "--out", str(out))
    assert "grad=implicit" in proc.stdout  # the table was printed
    payload = json.loads(out.read_text())
    assert {"torch", "python", "threads", "device"} <= set(payload["environment"])
    rows = payload["rows"]
    assert {r["suite"] for r in rows} == {"sinkhorn-memory"}
    assert all({"peak_x_cost", "backward_x_cost", "cost_bytes"} <= set(r["extra"]) for r in rows)
    peaks = {r["mode"]: r["extra"]["peak_x_cost"] for r in rows}
    assert set(peaks) == {"grad=unroll", "grad=implicit"}
    if peaks["grad=implicit"] is not None:  # glibc heap statistics available
        assert peaks["grad=implicit"] < peaks["grad=unroll"]


def test_quick_inference_bench_writes_json(tmp_path):
    out = tmp_path / "inference.json"
    proc = _run("benchmarks/inference_bench.py", "--quick", "--variant", "bf16", "--repeat", "1", "--out", str(out))
    assert "argmax" in proc.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [r["mode"] for r in rows] == ["fp32", "bf16"]  # fp32 is always there: the reference
    assert rows[0]["ratio"] == 1.0 and rows[0]["extra"]["max_prob_diff"] == 0.0
    assert 0 < rows[1]["extra"]["max_prob_diff"] < 0.05 and rows[1]["extra"]["argmax_agreement"] > 0.9


def test_quick_couplings_bench_writes_json_with_equal_values(tmp_path):
    out = tmp_path / "couplings.json"
    proc = _run("benchmarks/couplings_bench.py", "--quick", "--repeat", "1", "--out", str(out))
    assert "sample_plan" in proc.stdout
    rows = json.loads(out.read_text())["rows"]
    assert {(r["mode"], r["method"]) for r in rows} == {
        (m, s) for m in ("exact", "sinkhorn") for s in ("otkit", "torchcfm 1.0.7")
    }
    assert all(r["extra"]["relative_cost_gap"] < 1e-6 for r in rows if r["mode"] == "exact")
    assert all(r["extra"]["plan_l1_gap"] < 1e-4 for r in rows if r["mode"] == "sinkhorn")


def test_quick_gromov_memory_suite_writes_json(tmp_path):
    out = tmp_path / "gromov.json"
    proc = _run("benchmarks/gromov_bench.py", "--quick", "--suite", "memory", "--out", str(out))
    assert "peak working memory" in proc.stdout
    (row,) = json.loads(out.read_text())["rows"]
    assert row["suite"] == "gromov-memory" and row["extra"]["n_inner"] > 0
    if row["extra"]["peak_mb"] is not None:  # glibc heap statistics available
        assert row["extra"]["peak_mb"] < row["extra"]["one_dense_matrix_mb"]  # never an n x n matrix


def test_quick_barycenter_bench_writes_json_with_equal_values(tmp_path):
    out = tmp_path / "barycenter.json"
    proc = _run("benchmarks/barycenter_bench.py", "--quick", "--out", str(out))
    assert "convolutional" in proc.stdout
    rows = json.loads(out.read_text())["rows"]
    assert {r["suite"] for r in rows} == {"convolutional", "fixed"}
    ours = [r for r in rows if r["method"].startswith("otkit")]
    assert len(ours) == 5 and all(r["ratio"] > 0 for r in ours)
    assert {"otkit float64 (shifted)", "otkit float64 (blocked)"} <= {r["method"] for r in ours}
    assert all(r["extra"]["max_rel_diff_vs_pot_log"] < 1e-5 for r in ours)  # float32 included


def test_scripts_run_as_modules():
    modules = (
        "benchmarks.sinkhorn_bench",
        "benchmarks.couplings_bench",
        "benchmarks.gpu_sinkhorn_bench",
        "benchmarks.inference_bench",
        "benchmarks.points_bench",
        "benchmarks.gromov_bench",
        "benchmarks.barycenter_bench",
    )
    # started together: each spends its time importing torch
    procs = {
        module: subprocess.Popen(
            [sys.executable, "-m", module, "--help"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for module in modules
    }
    for module, proc in procs.items():
        out, err = proc.communicate()
        assert proc.returncode == 0 and "usage:" in out, f"{module}:\n{out}\n{err}"
