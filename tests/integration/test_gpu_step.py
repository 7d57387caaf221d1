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
    argv += ["--workers", "1", "--loaders", "torch", "--models", "small_cnn,resnetish"]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "no CUDA device: skipped the CUDA parts" in done.stdout
    result = json.loads(out.read_text())
    assert result["cuda"] is False and len(result["runs"]) == 2
    for run in result["runs"]:
        assert run["steps"] == 3 and 0 <= run["wait_fraction"] <= 1 and run["images_per_s"] > 0
        assert run["pinned"] is False and "overlap" not in run


@pytest.mark.slow
def test_gpu_step_decodes_photos_on_the_device_path_and_with_dali_without_cuda(tmp_path):
    """The GPU rows run on the CPU too (nvImageCodec's CPU backend; DALI's CPU pipeline), or
    say in one line that their package is missing."""
    out = tmp_path / "gpu.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    script = os.path.join(ROOT, "benchmarks", "gpu_step.py")
    argv = [sys.executable, script, "--out", str(out), "--photos", "40", "--batch-size", "8",
            "--workers", "1", "--loaders", "torch-device,dali", "--models", "small_cnn"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    runs = {r["loader"]: r for r in json.loads(out.read_text())["runs"]}
    for name, run in runs.items():
        assert "skipped" in run or run["shape"] == [8, 3, 224, 224], (name, run)
