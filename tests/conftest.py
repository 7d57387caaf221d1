"""Shared fixtures: tiny image folders and indexes made in tmp_path by the library's own writers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

import tfpathloader
from tfpathloader import PathIndex, write_index

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The benchmarks' helpers (photos.py, peers.py, remote_bench.py) live beside the package, not in
# it; the tests import them by name, as the benchmark scripts do.
sys.path.append(os.path.join(ROOT, "benchmarks"))


def make_images(folder, n, *, classes=3, size=(8, 8), mode="L", ext=".png", seed=0):
    """Write n small images into folder/<class>/<i>.png; return (relative paths, labels)."""
    rng = np.random.default_rng(seed)
    paths, labels = [], []
    for i in range(n):
        c = i * classes // n
        rel = f"{c}/{i:05d}{ext}"
        full = os.path.join(folder, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        shape = (*size, 3) if mode == "RGB" else size
        Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode=None).save(full)
        paths.append(rel)
        labels.append(c)
    return paths, labels


def plan_batch(transform, seed, epoch, ids, heights, widths):
    """The plans of a batch as arrays: boxes ``[B, 4]`` (top, left, h, w), flips ``[B]``."""
    from tfpathloader.transforms import plan_rng

    plans = [
        transform.plan(int(h), int(w), plan_rng(transform, seed, epoch, i))
        for i, h, w in zip(ids, heights, widths, strict=True)
    ]
    return np.array([p.box for p in plans], dtype=np.int32), np.array([p.flip for p in plans])


@pytest.fixture
def image_dir(tmp_path):
    """A folder of 30 grey 8x8 PNGs in 3 class folders, and its index (label-sorted)."""
    paths, labels = make_images(tmp_path, 30)
    index = write_index(tmp_path / "index.tfrecord", paths, labels, classes=["a", "b", "c"])
    return tmp_path, index


def run_python(
    code: str, *, env_extra: dict | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter (for import-order and no-framework checks)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=ROOT,
    )


# Both backends as a test parameter: a failure names its backend, and the tf case skips (the one
# way to skip without TensorFlow: the `tf` marker, NOTE [test tiers]).
BACKENDS = ["torch", pytest.param("tf", marks=pytest.mark.tf)]


def has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


__all__ = ["BACKENDS", "PathIndex", "make_images", "run_python", "tfpathloader"]


# NOTE [test tiers]: the default run (`python -m pytest -q`) skips tests marked `slow` so that it
# stays under five minutes on a 2-core machine; `--runslow` (or TFPATHLOADER_RUNSLOW=1) runs
# them too, and .ci/run does. Tests marked `tf` skip cleanly when TensorFlow is not installed,
# `gpu` tests when no CUDA device is present.
def pytest_addoption(parser):
    parser.addoption(
        "--runslow",
        action="store_true",
        default=os.environ.get("TFPATHLOADER_RUNSLOW") == "1",
        help="also run the slow tier (TF property tests, train.py subprocesses, full demo)",
    )


def pytest_collection_modifyitems(config, items):
    skip_slow = pytest.mark.skip(reason="slow tier: run with --runslow")
    skip_tf = pytest.mark.skip(reason="TensorFlow is not installed")
    have_tf = has_module("tensorflow")
    have_cuda = False
    if any("gpu" in item.keywords for item in items):
        import torch

        have_cuda = torch.cuda.is_available()
    skip_gpu = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "tf" in item.keywords and not have_tf:
            item.add_marker(skip_tf)
        if "gpu" in item.keywords and not have_cuda:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    """The full demo data set (70,000 images), made once per test session."""
    from tfpathloader.tools.demo import make_demo

    out = tmp_path_factory.mktemp("demo")
    make_demo(out, progress=False)
    return out
