"""The rows of ``tfpathloader bench``: each a loader built once and run for one epoch at a time.

Every row is made by a factory ``f(spec) -> run`` inside its own process (see
:mod:`.driver`); ``run(epoch)`` iterates one epoch over ``spec.paths`` and returns the number
of images delivered and when the first batch came. Peers are written the way their own docs
teach them (linked in each factory's docstring): a user's first, idiomatic pipeline, with the
same worker count and batch size as ours, no tuning beyond it.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from ..._utils import optional_import
from ...load.decode import decode_image, load_image

__all__ = ["PEER_PACKAGES", "ROW_FACTORIES", "RowSpec"]


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


# Rows that need a package the project does not: the row is skipped (and says so) without it.
PEER_PACKAGES = {"stateful": "torchdata", "grain": "grain"}

# run(epoch) -> (images delivered, seconds to the first batch (None: no batches), seconds to
# the last): the epoch from its start, start-up included, as a training loop sees it.
Result = tuple[int, float | None, float]
Run = Callable[[int], Result]


def _count(batches: Any, images: int) -> Result:
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


# --------------------------------------------------------------------------- raw decode limit

_RAW_CHUNK = 32  # files a raw process takes at a time (shared out as they go, as batches are)


def _raw_worker(spec: RowSpec, lean: bool, barrier: Any, next_chunk: Any, done: Any) -> None:
    barrier.wait()
    while True:
        with next_chunk.get_lock():
            start = next_chunk.value
            next_chunk.value += _RAW_CHUNK
        if start >= len(spec.paths):
            break
        for p in spec.paths[start : start + _RAW_CHUNK]:
            if lean:
                fd = os.open(p, os.O_RDONLY)
                try:
                    data = os.read(fd, os.fstat(fd).st_size)
                finally:
                    os.close(fd)
                decode_image(data, channels=spec.channels, size=spec.size)
            else:
                load_image(p, channels=spec.channels, size=spec.size)
    done.put(time.perf_counter())


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
        t0 = time.perf_counter()
        ends = [done.get() for _ in procs]
        for p in procs:
            p.join()
        return len(spec.paths), None, max(ends) - t0

    return run


# --------------------------------------------------------------------------- this project


def _ours(spec: RowSpec, backend: str) -> Run:
    """This project's loader (``make_loader``), epoch by epoch, as in training."""
    from ...index import PathIndex
    from ...load.loader import make_loader

    index = PathIndex.read(list(spec.index_files), root=spec.root)
    loader = make_loader(
        backend=backend,
        index=index,
        batch_size=spec.batch_size,
        num_workers=spec.workers,
        seed=spec.seed,
        channels=spec.channels,
        size=spec.size,
    )

    def run(epoch: int) -> Result:
        loader.set_epoch(epoch)
        return _count(loader, len(spec.paths))

    return run


# --------------------------------------------------------------------------- torch peers


class PathListDataset:
    """The common hand-written dataset: a list of paths and labels, Pillow per item.

    As the PyTorch tutorial "Writing Custom Datasets, DataLoaders and Transforms" and
    torchvision's ``ImageFolder`` (minus torchvision) do it.
    """

    def __init__(self, spec: RowSpec):
        self.paths = list(spec.paths)
        self.labels = list(spec.labels)
        self.mode = "L" if spec.channels == 1 else "RGB"
        self.size = spec.size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        import torch
        from PIL import Image

        with Image.open(self.paths[i]) as img:
            img = img.convert(self.mode)
            if self.size is not None:
                img = img.resize(self.size[::-1], Image.Resampling.BILINEAR)
            arr = np.array(img)  # a writable copy, as torchvision's PILToTensor makes
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(arr)), self.labels[i]


def _dataloader(spec: RowSpec, *, stateful: bool = False) -> Run:
    """``DataLoader(dataset, batch_size, shuffle=True, num_workers)`` (torch.utils.data docs).

    ``stateful``: torchdata's drop-in ``StatefulDataLoader`` with the same arguments
    (https://pytorch.org/data/beta/torchdata.stateful_dataloader.html).
    """
    import torch

    if stateful:
        mod = optional_import("torchdata.stateful_dataloader", "bench", "the stateful row")
        Loader = mod.StatefulDataLoader
    else:
        Loader = torch.utils.data.DataLoader
    g = torch.Generator().manual_seed(spec.seed)
    dl = Loader(
        cast(Any, PathListDataset(spec)),
        batch_size=spec.batch_size,
        shuffle=True,
        num_workers=spec.workers,
        generator=g,
    )

    def run(epoch: int) -> Result:
        return _count(dl, len(spec.paths))

    return run


# --------------------------------------------------------------------------- grain


def _grain_load(item: tuple[str, int], mode: str, size: tuple[int, int] | None) -> Any:
    from PIL import Image

    path, label = item
    with Image.open(path) as img:
        img = img.convert(mode)
        if size is not None:
            img = img.resize(size[::-1], Image.Resampling.BILINEAR)
        arr = np.asarray(img)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr), label


def _grain(spec: RowSpec) -> Run:
    """Grain's dataset API as its tutorial teaches it: ``MapDataset.source(...).shuffle(seed)
    .map(load).batch(B)``, then ``.to_iter_dataset().mp_prefetch(MultiprocessingOptions(
    num_workers))`` (https://google-grain.readthedocs.io/en/latest/tutorials/dataset_basic_tutorial.html).
    """
    import functools

    grain = optional_import("grain", "bench", "the grain row")

    mode = "L" if spec.channels == 1 else "RGB"
    records = list(zip(spec.paths, spec.labels, strict=True))
    ds = (
        grain.MapDataset.source(records)
        .shuffle(seed=spec.seed)
        .map(functools.partial(_grain_load, mode=mode, size=spec.size))
        .batch(spec.batch_size)
        .to_iter_dataset()
        .mp_prefetch(grain.MultiprocessingOptions(num_workers=spec.workers))
    )

    def run(epoch: int) -> Result:
        return _count(ds, len(spec.paths))

    return run


# --------------------------------------------------------------------------- hand-written tf.data


def _tf_hand(spec: RowSpec) -> Run:
    """The tf.data guide's image pipeline ("Load and preprocess images"):
    ``from_tensor_slices(paths).shuffle(N).map(read + decode, AUTOTUNE).batch().prefetch()``.
    """
    from ...load.tf_backend import import_tensorflow

    tf = import_tensorflow()
    channels = spec.channels

    def load(path: Any, label: Any) -> Any:
        img = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
        if spec.size is not None:
            img = tf.cast(tf.image.resize(img, spec.size), tf.uint8)
        return tf.transpose(img, [2, 0, 1]), label

    ds = (
        tf.data.Dataset.from_tensor_slices((list(spec.paths), np.asarray(spec.labels)))
        .shuffle(len(spec.paths), seed=spec.seed)
        .map(load, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(spec.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )

    def run(epoch: int) -> Result:
        return _count(ds, len(spec.paths))

    return run


ROW_FACTORIES: dict[str, Callable[[RowSpec], Run]] = {
    "raw": _raw,
    "raw-lean": lambda spec: _raw(spec, lean=True),
    "torch": lambda spec: _ours(spec, "torch"),
    "tf": lambda spec: _ours(spec, "tf"),
    "baseline": _dataloader,
    "stateful": lambda spec: _dataloader(spec, stateful=True),
    "grain": _grain,
    "tf-hand": _tf_hand,
}
