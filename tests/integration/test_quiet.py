"""Our programs are quiet by default: TensorFlow's C++ and absl lines only when the user asks.

NOTE [quiet TensorFlow] in tfpathloader/_tf.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT

from tfpathloader.tools.demo import make_demo

pytestmark = pytest.mark.tf

# What TensorFlow 2.x writes on import or first use when nothing silences it.
NOISE = ("absl::InitializeLog", "oneDNN custom operations", "cpu_feature_guard", "I0000 ")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("quiet")
    make_demo(out / "data", per_label=3, test_per_label=1, progress=False)
    return out


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return {**env, "PYTHONPATH": ROOT, **extra}


def _audit_tf(folder, env) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tfpathloader.tools.cli", "audit", "data/index.tfrecord"]
    cmd += ["--backend", "tf", "--batch-size", "8", "--out", "audit", "--force", "-q"]
    return subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def test_cli_importing_tensorflow_prints_no_tensorflow_logs(tiny):
    done = _audit_tf(tiny, _env())
    assert done.returncode == 0, done.stderr
    assert "| global |" in done.stdout
    assert not [n for n in NOISE if n in done.stderr], done.stderr


@pytest.mark.slow
def test_an_explicit_log_level_is_honoured(tiny):
    # The user asks for everything: TensorFlow's import lines come through (the check above
    # would see them).
    done = _audit_tf(tiny, _env(TF_CPP_MIN_LOG_LEVEL="0"))
    assert done.returncode == 0, done.stderr
    assert "absl::InitializeLog" in done.stderr or "I0000 " in done.stderr


@pytest.mark.slow
def test_train_py_with_the_tf_loader_prints_no_tensorflow_logs(tiny):
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), "loader=tf", "trainer.max_steps=2"]
    cmd += ["trainer.progress=false", "hydra.run.dir=run", "loader.batch_size=8"]
    done = subprocess.run(cmd, cwd=tiny, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not [n for n in NOISE if n in done.stderr], done.stderr
