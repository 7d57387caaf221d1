"""The article's dataset: label-sorted 28x28 grey digit PNGs, a path index and an image TFRecord.

By default the digits are made from scikit-learn's bundled handwritten digits (1,797 8x8 scans),
upsampled to MNIST's 20x20-in-28x28 layout; each copy is jittered by its own small random affine
transform and pixel noise, so no two images are equal. Source digits are split first, so the
held-out test images come from *other* scans than the training images (no leakage). With
``mnist=DIR`` real MNIST IDX files are used instead.

Layout of ``OUT_DIR``::

    train/<label>/<id>.png     70,000 images; record i has label i // per_label
    test/<label>/<id>.png      held-out images from other source digits
    index.tfrecord             path index of train/ (root: OUT_DIR)
    test.tfrecord              path index of test/
    images.tfrecord            the article's image TFRecord: index, label, image_string (raw bytes)
    demo.json                  what was made, and from what
"""

from __future__ import annotations

import gzip
import hashlib
import json
import multiprocessing as mp
import os
import struct
from collections.abc import Iterable
from contextlib import ExitStack
from typing import Any

import numpy as np
from PIL import Image

from .._utils import optional_import, progress_bar
from ..index import write_index
from ..index._proto import Example
from ..index._records import RecordWriter

__all__ = ["DEMO_FILES", "make_demo"]

DEMO_FILES = ("index.tfrecord", "test.tfrecord", "images.tfrecord", "demo.json")
_SIZE = 28
_BOX = 20


# --------------------------------------------------------------------------- sources


def _sklearn_sources(
    seed: int, test_fraction: float
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Source digits per label as 28x28 uint8 images, split into train and test scans."""
    datasets = optional_import("sklearn.datasets", "demo", "the demo data")
    digits = datasets.load_digits()
    images = np.asarray(digits.images, dtype=np.float64)  # (1797, 8, 8), values 0..16
    labels = np.asarray(digits.target, dtype=np.int64)
    rng = np.random.default_rng([seed, 0])
    train: dict[int, np.ndarray] = {}
    test: dict[int, np.ndarray] = {}
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = max(1, round(len(idx) * test_fraction))
        up = np.stack([_upsample(images[i]) for i in idx])
        test[c], train[c] = up[:n_test], up[n_test:]
    return train, test


def _upsample(img8: np.ndarray) -> np.ndarray:
    """An 8x8 scan (0..16) as a 28x28 image with the digit in the central 20x20 box."""
    small = Image.fromarray(np.clip(img8 * 16, 0, 255).astype(np.uint8))
    box = small.resize((_BOX, _BOX), Image.Resampling.BICUBIC)
    canvas = np.zeros((_SIZE, _SIZE), dtype=np.uint8)
    o = (_SIZE - _BOX) // 2
    canvas[o : o + _BOX, o : o + _BOX] = np.asarray(box)
    return canvas


def _read_idx(path: str) -> np.ndarray:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    (magic,) = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    if magic >> 8 != 0x08 or ndim not in (1, 3):
        raise ValueError(f"{path}: not an MNIST IDX file of unsigned bytes (magic {magic:#x})")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: expected {int(np.prod(dims))} values, found {arr.size}")
    return arr.reshape(dims)


def _find_idx(folder: str, stem: str) -> str:
    for name in (stem, stem.replace("-idx", ".idx")):
        for p in (os.path.join(folder, name), os.path.join(folder, name + ".gz")):
            if os.path.isfile(p):
                return p
    raise FileNotFoundError(f"no {stem}[.gz] in {folder!r}: expected the four MNIST IDX files")


def _mnist(folder: str, per_label: int | None, test_per_label: int | None):
    """Real MNIST: train images sorted by label (stable), and the t10k test images."""
    out = []
    for split, cap in (("train", per_label), ("t10k", test_per_label)):
        x = _read_idx(_find_idx(folder, f"{split}-images-idx3-ubyte"))
        y = _read_idx(_find_idx(folder, f"{split}-labels-idx1-ubyte")).astype(np.int64)
        if len(x) != len(y):
            raise ValueError(f"MNIST {split}: {len(x)} images but {len(y)} labels")
        order = np.argsort(y, kind="stable")
        if cap is not None:
            order = np.concatenate([order[y[order] == c][:cap] for c in range(10)])
        out.append((x[order], y[order]))
    return out


# --------------------------------------------------------------------------- rendering


def _affine(rng: np.random.Generator) -> tuple[float, ...]:
    """A small random affine map (output -> input pixel coords, as Pillow wants it)."""
    angle = np.deg2rad(rng.uniform(-12, 12))
    scale = rng.uniform(0.88, 1.12)
    shear = rng.uniform(-0.15, 0.15)
    tx, ty = rng.uniform(-2.0, 2.0, size=2)
    c = (_SIZE - 1) / 2
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    fwd = rot @ np.array([[1.0, shear], [0.0, 1.0]]) * scale
    inv = np.linalg.inv(fwd)
    offset = np.array([c, c]) - inv @ np.array([c + tx, c + ty])
    return (inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1])


def _render(base: np.ndarray, seed: int, split: int, record: int) -> np.ndarray:
    rng = np.random.default_rng([seed, split, record, 0])
    im = Image.fromarray(base).transform(
        (_SIZE, _SIZE), Image.Transform.AFFINE, _affine(rng), resample=Image.Resampling.BILINEAR
    )
    arr = np.asarray(im, dtype=np.float64) + rng.normal(0.0, 6.0, size=(_SIZE, _SIZE))
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


_WORK: dict[str, Any] = {}


def _job(task: tuple[int, int, int, str]) -> tuple[int, bytes]:
    """Render (or copy) one image, write its PNG, return its pixels."""
    record, label, source, path = task
    if _WORK["mnist"]:
        pixels = _WORK["sources"][source]
    else:
        pixels = _render(_WORK["sources"][label][source], _WORK["seed"], _WORK["split"], record)
    Image.fromarray(pixels).save(path, format="PNG")
    return record, pixels.tobytes()


def _init_worker(work: dict[str, Any]) -> None:
    _WORK.clear()
    _WORK.update(work)


def _run_split(
    name: str,
    split: int,
    out_dir: str,
    labels: np.ndarray,
    sources: Any,
    *,
    mnist: bool,
    seed: int,
    workers: int,
    progress: bool | None,
) -> tuple[list[str], np.ndarray]:
    """Make one split's PNGs; returns relative paths and the pixels (N x 28 x 28)."""
    n = len(labels)
    rel = [f"{name}/{int(labels[i])}/{i:05d}.png" for i in range(n)]
    for c in np.unique(labels):
        os.makedirs(os.path.join(out_dir, name, str(int(c))), exist_ok=True)
    pixels = np.empty((n, _SIZE, _SIZE), dtype=np.uint8)
    counters = {int(c): 0 for c in np.unique(labels)}
    tasks = []
    for i in range(n):
        c = int(labels[i])
        src = i if mnist else counters[c] % len(sources[c])
        counters[c] += 1
        tasks.append((i, c, src, os.path.join(out_dir, rel[i])))
    work = {"sources": sources, "seed": seed, "split": split, "mnist": mnist}
    _init_worker(work)
    with (
        progress_bar(progress, desc=f"making {name} images", total=n, unit=" images") as bar,
        ExitStack() as on_exit,
    ):
        results: Iterable[tuple[int, bytes]] = map(_job, tasks)
        if workers > 1 and n >= 2000:
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else None)
            pool = on_exit.enter_context(ctx.Pool(workers, _init_worker, (work,)))
            results = pool.imap_unordered(_job, tasks, chunksize=256)
        for i, raw in results:
            pixels[i] = np.frombuffer(raw, dtype=np.uint8).reshape(_SIZE, _SIZE)
            bar.update(1)
    if not mnist:  # no two alike: a repeat is all but impossible, and never silent
        digests = {hashlib.blake2b(p.tobytes(), digest_size=16).digest() for p in pixels}
        if len(digests) != n:
            raise RuntimeError(f"{n - len(digests)} demo images repeat others; try another seed")
    return rel, pixels


def _write_image_tfrecord(
    path: str, labels: np.ndarray, pixels: np.ndarray, progress: bool | None
) -> None:
    """The article's ``mnist_image.tfrecord``: index, label and raw pixel bytes per record."""
    with (
        RecordWriter(path) as w,
        progress_bar(
            progress, desc="writing image TFRecord", total=len(labels), unit=" records"
        ) as bar,
    ):
        for i in range(len(labels)):
            ex = Example()
            f = ex.features.feature
            f["index"].int64_list.value.append(i)
            f["label"].int64_list.value.append(int(labels[i]))
            f["image_string"].bytes_list.value.append(pixels[i].tobytes())
            w.write(ex.SerializeToString(deterministic=True))
            if i % 4096 == 4095:
                bar.update(4096)
        bar.update(len(labels) % 4096)


# --------------------------------------------------------------------------- entry point


def make_demo(
    out_dir: str | os.PathLike[str],
    *,
    per_label: int | None = 7000,
    test_per_label: int | None = 200,
    mnist: str | os.PathLike[str] | None = None,
    seed: int = 0,
    workers: int | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Make the demo data set in ``out_dir`` (see the module docstring for the layout).

    Args:
        out_dir: Folder to fill (created if missing).
        per_label: Training images per label (digits) / cap per label (MNIST: ``None`` = all).
        test_per_label: Held-out images per label (digits) / cap per label (MNIST).
        mnist: Folder with MNIST's four IDX files (plain or ``.gz``) to use instead of digits.
        seed: Seed of the source split and of every jitter.
        workers: Processes rendering images (default: all cores).
        progress: Progress bars (``None``: only on a terminal).

    Returns:
        The summary also written to ``demo.json``.
    """
    out = os.path.abspath(os.fspath(out_dir))
    os.makedirs(out, exist_ok=True)
    workers = workers or os.cpu_count() or 1
    if per_label is not None and per_label < 1:
        raise ValueError(f"per_label must be >= 1, got {per_label}")
    if mnist is not None:
        (xtr, ytr), (xte, yte) = _mnist(os.fspath(mnist), per_label, test_per_label)
        splits = [("train", ytr, xtr), ("test", yte, xte)]
        source = f"MNIST IDX files in {os.path.abspath(mnist)}"
    else:
        train_src, test_src = _sklearn_sources(seed, test_fraction=0.25)
        per_label = 7000 if per_label is None else per_label
        test_per_label = 200 if test_per_label is None else test_per_label
        ytr = np.repeat(np.arange(10, dtype=np.int64), per_label)
        yte = np.repeat(np.arange(10, dtype=np.int64), test_per_label)
        splits = [("train", ytr, train_src), ("test", yte, test_src)]
        source = "scikit-learn load_digits (1,797 8x8 scans), upsampled and jittered"
    classes = [str(c) for c in range(10)]
    made: dict[str, Any] = {}
    for split_no, (name, labels, sources) in enumerate(splits):
        rel, pixels = _run_split(
            name,
            split_no + 1,
            out,
            labels,
            sources,
            mnist=mnist is not None,
            seed=seed,
            workers=workers,
            progress=progress,
        )
        index_name = "index.tfrecord" if name == "train" else "test.tfrecord"
        write_index(os.path.join(out, index_name), rel, labels, classes=classes, progress=progress)
        if name == "train":
            _write_image_tfrecord(os.path.join(out, "images.tfrecord"), labels, pixels, progress)
        made[name] = {
            "records": len(labels),
            "label_counts": np.bincount(labels, minlength=10).tolist(),
            "index": index_name,
        }
    summary = {
        "source": source,
        "seed": seed,
        "image_size": [_SIZE, _SIZE],
        "splits": made,
        "files": list(DEMO_FILES),
        "sorted_by_label": True,
    }
    tmp = os.path.join(out, f".demo.json.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(summary, f, indent=2)
    os.replace(tmp, os.path.join(out, "demo.json"))  # last and whole: the set is complete
    return summary
