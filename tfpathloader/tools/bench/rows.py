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
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from ..._utils import optional_import
from ...load.decode import decode_image, load_image

__all__ = ["PEER_PACKAGES", "ROW_FACTORIES", "RowSpec", "pillow_crop"]


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


# --------------------------------------------------------------------------- the training crop

# NOTE [bench crop]: with ``--crop`` every row delivers RandomResizedCrop(size, scale=(0.08, 1),
# ratio=(3/4, 4/3)) + a horizontal flip with probability 1/2, written as its own users write it:
# the Pillow rows (raw, DataLoader, StatefulDataLoader, Grain) do what torchvision's transforms
# do on a PIL image (full decode, ``crop().resize(BILINEAR)``, ``transpose``), with the box drawn
# by torchvision's algorithm (``tfpathloader.transforms.RandomResizedCrop.box``, a port of it);
# hand-written tf.data does what TensorFlow's Inception/ResNet preprocessing does
# (``sample_distorted_bounding_box`` from the header's shape, ``decode_and_crop_jpeg``,
# ``resize``, ``random_flip_left_right``); this project's rows use ``tfpathloader.transforms``.


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


# NOTE [equal pixels]: hand-written tf.data decodes JPEGs with TensorFlow's default, libjpeg's
# fast integer IDCT, and resizes without antialiasing; our rows decode with the accurate IDCT
# (Pillow's pixels) and resize with antialiasing (Pillow's filter). Two more pairs of rows
# measure equal work: ``torch-fast``/``tf-fast`` are our loaders set to tf.data's defaults
# (``jpeg_dct="fast"``, ``antialias=False``), and ``tf-hand-exact`` is hand-written tf.data
# set to ours (``dct_method="INTEGER_ACCURATE"``, ``antialias=True``).


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
        self.spec = spec

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        import torch
        from PIL import Image

        if self.spec.crop:  # torchvision draws from torch's generator (seeded per worker)
            rng = np.random.default_rng([self.spec.seed, i, int(torch.randint(2**31, ()))])
            arr = pillow_crop(self.paths[i], self.spec, rng)
            arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
            return torch.from_numpy(np.ascontiguousarray(arr)), self.labels[i]
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


def _grain_load(item: tuple[str, int], mode: str, spec: RowSpec) -> Any:
    from PIL import Image

    path, label = item
    size = spec.size
    if spec.crop:
        arr = pillow_crop(path, spec, np.random.default_rng([spec.seed, zlib.crc32(path.encode())]))
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        return np.ascontiguousarray(arr), label
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
        .map(functools.partial(_grain_load, mode=mode, spec=spec))
        .batch(spec.batch_size)
        .to_iter_dataset()
        .mp_prefetch(grain.MultiprocessingOptions(num_workers=spec.workers))
    )

    def run(epoch: int) -> Result:
        return _count(ds, len(spec.paths))

    return run


# --------------------------------------------------------------------------- hand-written tf.data


def _tf_hand(spec: RowSpec, exact: bool = False) -> Run:
    """The tf.data guide's image pipeline ("Load and preprocess images"):
    ``from_tensor_slices(paths).shuffle(N).map(read + decode, AUTOTUNE).batch().prefetch()``.

    ``exact``: with our pixel quality (NOTE [equal pixels]).
    """
    from ...load.tf_backend import import_tensorflow

    tf = import_tensorflow()
    channels = spec.channels
    dct = "INTEGER_ACCURATE" if exact else ""  # "": TensorFlow's default, the fast IDCT

    def load(path: Any, label: Any) -> Any:
        data = tf.io.read_file(path)
        if exact:  # decode_image has no dct_method; decode_jpeg reads PNG and GIF too
            img = tf.io.decode_jpeg(data, channels=channels, dct_method=dct)
        else:
            img = tf.io.decode_image(data, channels=channels, expand_animations=False)
        if spec.size is not None:
            img = tf.cast(tf.image.resize(img, spec.size, antialias=exact), tf.uint8)
        return tf.transpose(img, [2, 0, 1]), label

    def load_crop(path: Any, label: Any) -> Any:
        """TensorFlow's Inception-style crop (NOTE [bench crop])."""
        data = tf.io.read_file(path)
        begin, size, _ = tf.image.sample_distorted_bounding_box(
            tf.io.extract_jpeg_shape(data),
            tf.zeros([0, 0, 4]),
            area_range=(0.08, 1.0),
            aspect_ratio_range=(3 / 4, 4 / 3),
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        box = tf.stack([begin[0], begin[1], size[0], size[1]])
        img = tf.io.decode_and_crop_jpeg(data, box, channels=channels, dct_method=dct)
        img = tf.image.resize(img, spec.size, antialias=exact)
        img = tf.image.random_flip_left_right(img)
        return tf.transpose(tf.cast(img, tf.uint8), [2, 0, 1]), label

    tf.random.set_seed(spec.seed)
    ds = (
        tf.data.Dataset.from_tensor_slices((list(spec.paths), np.asarray(spec.labels)))
        .shuffle(len(spec.paths), seed=spec.seed)
        .map(load_crop if spec.crop else load, num_parallel_calls=tf.data.AUTOTUNE)
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
    "torch-fast": lambda spec: _ours(spec, "torch", fast=True),
    "tf-fast": lambda spec: _ours(spec, "tf", fast=True),
    "baseline": _dataloader,
    "stateful": lambda spec: _dataloader(spec, stateful=True),
    "grain": _grain,
    "tf-hand": _tf_hand,
    "tf-hand-exact": lambda spec: _tf_hand(spec, exact=True),
}
