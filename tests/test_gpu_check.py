"""benchmarks/gpu_check.py, the one command a session lent a GPU runs, cannot rot: the same code on CPU at tiny
sizes, end to end (its two sweeps and the input path through a real local Ray, one at a time)."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_gpu_check_runs_on_cpu_at_tiny_sizes(tmp_path):
    out, rows = tmp_path / "out", tmp_path / "gpu_check.csv"
    r = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "gpu_check.py"), "--device", "cpu", "--tiny",
                        "--out", str(out), "--csv", str(rows)], capture_output=True, text=True, timeout=900, cwd=REPO)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    result = json.loads((out / "gpu_check.json").read_text())
    assert result["machine"]["gpu"] is None and result["machine"]["torch"]
    assert {m["preset"] for m in result["models"]} == {"transfer_tiny", "mvt_tiny"}
    assert all(m["model_images_s"] > 0 and m["gflops_per_step"] > 0 for m in result["models"])
    shared, alone = result["sweeps"]
    assert (shared["trials"], alone["trials"]) == (2, 1) and len(shared["per_trial"]) == 2
    assert shared["total_images_s"] > 0 and alone["total_images_s"] > 0
    assert result["input"]["ratio"] > 0 and 0 <= result["input"]["ray_data_wait_frac"] <= 1
    header, row = rows.read_text().splitlines()
    assert header.startswith("date,commit,cores") and "gpu_check.py --device cpu --tiny" in row
