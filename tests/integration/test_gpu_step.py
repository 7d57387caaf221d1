"""benchmarks/gpu_step.py runs on a machine without CUDA: a few CPU steps, one clear line, JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

pytest.importorskip("torch")


@pytest.mark.slow
def test_gpu_step_runs_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    script = os.path.join(ROOT, "benchmarks", "gpu_step.py")
    argv = [sys.executable, script, "--out", str(out), "--per-label", "4", "--batch-size", "8"]
    argv += ["--workers", "1", "--backends", "torch", "--models", "small_cnn,resnetish"]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "no CUDA device: skipped the CUDA parts" in done.stdout
    result = json.loads(out.read_text())
    assert result["cuda"] is False and len(result["runs"]) == 2
    for run in result["runs"]:
        assert run["steps"] == 3 and 0 <= run["wait_fraction"] <= 1
        assert run["pinned"] is False and "overlap" not in run
