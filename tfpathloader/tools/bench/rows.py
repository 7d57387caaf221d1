"""The rows of ``tfpathloader bench``: the decode limit and our loaders, each run epoch by epoch.

A row is a factory ``f(spec) -> run`` called inside the row's own process (see :mod:`.driver`);
``run(epoch)`` iterates one epoch over ``spec.paths`` and returns the number of images delivered
and when the first batch came. The loaders people write instead (plain DataLoader, torchdata,
Grain, hand-written tf.data) are rows of the same kind, kept beside the package in
``benchmarks/peers.py``, which runs them through this driver for the README's Speed table.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from ...load.decode import decode_image, load_image

__all__ = ["ROWS", "Result", "Row", "RowSpec", "Run", "count_epoch", "pillow_crop"]


@dataclass(frozen=True)
class RowSpec:
    """What every row reads, and how."""

    index_files: tuple[str, ...]
    root: str | None
    paths: tuple[str, ...]  # the files of the measurement: the first images of our order
    labels: tuple[int, ...]
    workers: int
    batch_size: int
    seed: int
    channels: int
    size: tuple[int, int] | None
    # Every row applies the training crop: RandomResizedCrop(size) + RandomHorizontalFlip, each
    # the way its own stack does it (NOTE [bench crop]); ``size`` is then the crop's output.
    crop: bool = False


# run(epoch) -> (images delivered, seconds to the first batch (None: no batches), seconds to
# the last): the epoch from its start, start-up included, as a training loop sees it.
Result = tuple[int, float | None, float]
Run = Callable[[int], Result]


@dataclass(frozen=True)
class Row:
    """A bench row: its title in the tables, and the factory its own process calls.

    ``make`` travels to a spawned process, so it must pickle: a module-level function or a
    ``functools.partial`` of one (not a lambda). Raising ``ImportError`` reports the row skipped.
    """

    title: str
    make: Callable[[RowSpec], Run]


def count_epoch(batches: Any, images: int) -> Result:
    """Iterate ``batches`` until ``images`` were delivered."""
    t0 = time.perf_counter()
    n, first = 0, 0.0
    it = iter(batches)
    for batch in it:
        if n == 0:
            first = time.perf_counter() - t0
        n += _batch_len(batch)
        if n >= images:
            break
    elapsed = time.perf_counter() - t0
    del it
    return n, first, elapsed


def _batch_len(batch: Any) -> int:
    if isinstance(batch, dict):
        return len(batch["index"])
    return len(batch[1])  # (images, labels)


# --------------------------------------------------------------------------- the training crop

# NOTE [bench crop]: with ``--crop`` every row delivers RandomResizedCrop(size, scale=(0.08, 1),
# ratio=(3/4, 4/3)) + a horizontal flip with probability 1/2, written as its own users write it:
# the Pillow rows (raw here; DataLoader, StatefulDataLoader and Grain in benchmarks/peers.py) do
# what torchvision's transforms do on a PIL image (full decode, ``crop().resize(BILINEAR)``,
# ``transpose``), with the box drawn by torchvision's algorithm
# (``tfpathloader.transforms.RandomResizedCrop.box``, a port of it); hand-written tf.data does
# what TensorFlow's Inception/ResNet preprocessing does (``sample_distorted_bounding_box`` from
# the header's shape, ``decode_and_crop_jpeg``, ``resize``, ``random_flip_left_right``); this
# project's rows use ``tfpathloader.transforms``.


def _crop_box(h: int, w: int, size: tuple[int, int], rng: np.random.Generator) -> Any:
    from ...transforms import RandomResizedCrop

    return RandomResizedCrop(size).box(h, w, rng)


def pillow_crop(
    path: str, spec: RowSpec, rng: np.random.Generator, *, lean: bool = False
) -> np.ndarray:
    """torchvision's RandomResizedCrop + RandomHorizontalFlip on a PIL image, in plain Pillow."""
    import io

    from PIL import Image

    assert spec.size is not None
    src: Any = path
    if lean:
        with open(path, "rb") as f:
            src = io.BytesIO(f.read())
    mode = "L" if spec.channels == 1 else "RGB"
    with Image.open(src) as img:
        img = img.convert(mode)
        top, left, h, w = _crop_box(img.size[1], img.size[0], spec.size, rng)
        img = img.crop((left, top, left + w, top + h))
        img = img.resize(spec.size[::-1], Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return np.array(img)


# --------------------------------------------------------------------------- raw decode limit

_RAW_CHUNK = 32  # files a raw process takes at a time (shared out as they go, as batches are)


def _raw_worker(spec: RowSpec, lean: bool, barrier: Any, next_chunk: Any, done: Any) -> None:
    rng = np.random.default_rng([spec.seed, os.getpid()])
    barrier.wait()
    t0 = time.perf_counter()  # here, not in the parent: it may run late after the barrier
    while True:
        with next_chunk.get_lock():
            start = next_chunk.value
            next_chunk.value += _RAW_CHUNK
        if start >= len(spec.paths):
            break
        for p in spec.paths[start : start + _RAW_CHUNK]:
            if spec.crop:
                pillow_crop(p, spec, rng, lean=lean)
            elif lean:
                fd = os.open(p, os.O_RDONLY)
                try:
                    data = os.read(fd, os.fstat(fd).st_size)
                finally:
                    os.close(fd)
                decode_image(data, channels=spec.channels, size=spec.size)
            else:
                load_image(p, channels=spec.channels, size=spec.size)
    done.put((t0, time.perf_counter()))


def _raw(spec: RowSpec, *, lean: bool = False) -> Run:
    """``spec.workers`` processes decoding the files flat out, 32 at a time as they go.

    ``raw``: Pillow's ``Image.open(path)`` + convert (+ resize), as the loaders decode;
    ``raw-lean``: one ``os.read`` of the whole file, then the decode from bytes.
    """

    def run(epoch: int) -> Result:
        ctx = mp.get_context("fork")  # no framework threads here (only the USS sampler)
        barrier = ctx.Barrier(spec.workers + 1)
        next_chunk = ctx.Value("q", 0)
        done = ctx.Queue()
        procs = [
            ctx.Process(target=_raw_worker, args=(spec, lean, barrier, next_chunk, done))
            for _ in range(spec.workers)
        ]
        for p in procs:
            p.start()
        barrier.wait()
        spans = [done.get() for _ in procs]
        for p in procs:
            p.join()
        return len(spec.paths), None, max(e for _, e in spans) - min(s for s, _ in spans)

    return run


# --------------------------------------------------------------------------- this project


# NOTE [equal pixels]: hand-written tf.data decodes JPEGs with TensorFlow's default, libjpeg's
# fast integer IDCT, and resizes without antialiasing; our rows decode with the accurate IDCT
# (Pillow's pixels) and resize with antialiasing (Pillow's filter). Two more pairs of rows
# measure equal work: ``torch-fast``/``tf-fast`` are our loaders set to tf.data's defaults
# (``jpeg_dct="fast"``, ``antialias=False``), and ``tf-hand-exact`` (benchmarks/peers.py) is
# hand-written tf.data set to ours (``dct_method="INTEGER_ACCURATE"``, ``antialias=True``).


def _ours(spec: RowSpec, backend: str, fast: bool = False) -> Run:
    """This project's loader (``make_loader``), epoch by epoch, as in training.

    ``fast``: with hand-written tf.data's pixel quality (NOTE [equal pixels]).
    """
    from ... import transforms as T
    from ...index import PathIndex
    from ...load.loader import make_loader

    index = PathIndex.read(list(spec.index_files), root=spec.root)
    how: dict[str, Any] = {"size": spec.size}
    if spec.crop:
        assert spec.size is not None
        crop = T.RandomResizedCrop(spec.size, antialias=not fast)
        how = {"transform": T.Compose([crop, T.RandomHorizontalFlip()])}
    elif fast and spec.size is not None:
        how = {"transform": T.Resize(spec.size, antialias=False)}
    if fast:
        how["jpeg_dct"] = "fast"
    loader = make_loader(
        backend=backend,
        index=index,
        batch_size=spec.batch_size,
        num_workers=spec.workers,
        seed=spec.seed,
        channels=spec.channels,
        **how,
    )

    def run(epoch: int) -> Result:
        loader.set_epoch(epoch)
        return count_epoch(loader, len(spec.paths))

    return run


ROWS: dict[str, Row] = {
    "raw": Row("raw: Pillow decode, N processes", _raw),
    "raw-lean": Row("lean raw: os.read + decode", partial(_raw, lean=True)),
    "torch": Row("**tfpathloader, torch**", partial(_ours, backend="torch")),
    "tf": Row("**tfpathloader, tf**", partial(_ours, backend="tf")),
    "torch-fast": Row(
        "tfpathloader, torch, at tf.data's pixel defaults",
        partial(_ours, backend="torch", fast=True),
    ),
    "tf-fast": Row(
        "tfpathloader, tf, at tf.data's pixel defaults", partial(_ours, backend="tf", fast=True)
    ),
}
