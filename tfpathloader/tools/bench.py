"""``tfpathloader bench``: images per second against the machine's decode limit, in one run.

Rows, all over *the same files* (the first M records of the seeded global order):

- ``raw``: the decode limit: the files read and decoded (the loaders' own decode function) in
  a tight loop by as many processes as the loaders use, which take the files 32 at a time as
  they go (balanced as a loader's batches are); no batching, no transfer.
- ``torch``: this project's PyTorch loader.
- ``baseline``: what users write without it: a list of paths + Pillow +
  ``DataLoader(shuffle=True)`` with default collation (torchvision's ImageFolder, minus
  torchvision).
- ``tf``: this project's tf.data loader (batches handed to PyTorch by DLPack).
- ``tf-hand``: the idiomatic hand-written tf.data path pipeline:
  ``from_tensor_slices(paths).shuffle(N).map(read+decode, AUTOTUNE).batch().prefetch()``.

Every row is timed from its first delivered batch to its last (start-up excluded, the same for
all), after one untimed warm-up round of every row (the steady state of a multi-epoch run: our
loaders keep their persistent workers and traced functions, as in training); rows are
interleaved over ``repeat`` rounds; a row's ratio is the median over rounds of its
rate divided by the raw rate of the same round (the machine is shared and noisy: ratios measured
side by side, not absolute numbers, are what to quote).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Callable
from typing import Any, cast

import numpy as np

from .._utils import optional_import, progress_bar
from ..index import PathIndex, write_index
from ..load.decode import load_image

__all__ = ["ROWS", "format_bench_table", "make_jpeg_set", "run_bench"]

ROWS = ("raw", "torch", "baseline", "tf", "tf-hand")


# --------------------------------------------------------------------------- JPEG set


def make_jpeg_set(
    out_dir: str | os.PathLike[str],
    *,
    count: int = 4000,
    size: int = 224,
    seed: int = 0,
    quality: int = 90,
    progress: bool | None = None,
) -> PathIndex:
    """``count`` RGB JPEGs of ``size``x``size`` cut from scikit-learn's two sample photos.

    Each is a random crop (random scale and position, random mirror) of ``china.jpg`` (label 0)
    or ``flower.jpg`` (label 1), stored sorted by label, with its path index.
    """
    from PIL import Image

    datasets = optional_import("sklearn.datasets", "demo", "the benchmark JPEG set")
    photos = datasets.load_sample_images()
    names = [os.path.splitext(os.path.basename(f))[0] for f in photos.filenames]
    out = os.path.abspath(os.fspath(out_dir))
    rng = np.random.default_rng([seed, 7])
    paths, labels = [], []
    with progress_bar(progress, desc="making JPEGs", total=count, unit=" images") as bar:
        for i in range(count):
            label = i * len(names) // count
            img = photos.images[label]
            h, w = img.shape[:2]
            side = int(min(h, w) * rng.uniform(0.35, 1.0))
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            crop = Image.fromarray(img[y : y + side, x : x + side]).resize(
                (size, size), Image.Resampling.BILINEAR
            )
            if rng.random() < 0.5:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            rel = f"{names[label]}/{i:06d}.jpg"
            os.makedirs(os.path.join(out, names[label]), exist_ok=True)
            crop.save(os.path.join(out, rel), format="JPEG", quality=quality)
            paths.append(rel)
            labels.append(label)
            bar.update(1)
    return write_index(
        os.path.join(out, "index.tfrecord"), paths, labels, classes=names, progress=progress
    )


# --------------------------------------------------------------------------- rows


def _raw_worker(
    paths: list[str],
    channels: int | None,
    size: tuple[int, int] | None,
    barrier: Any,
    next_chunk: Any,
    done: Any,
) -> None:
    barrier.wait()
    while True:
        with next_chunk.get_lock():
            start = next_chunk.value
            next_chunk.value += _RAW_CHUNK
        if start >= len(paths):
            break
        for p in paths[start : start + _RAW_CHUNK]:
            load_image(p, channels=channels, size=size)
    done.put(time.perf_counter())


# Files a raw process takes at a time: shared out as they go, as a loader's batches are, so
# that a process the machine slows down takes fewer (a fixed split would wait for the slowest).
_RAW_CHUNK = 32


def _raw_rate(
    paths: list[str], workers: int, channels: int | None, size: tuple[int, int] | None
) -> float:
    """Images/s of ``workers`` processes decoding ``paths`` flat out, sharing them as they go."""
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    barrier = ctx.Barrier(workers + 1)
    next_chunk = ctx.Value("q", 0)
    done = ctx.Queue()
    procs = [
        ctx.Process(target=_raw_worker, args=(paths, channels, size, barrier, next_chunk, done))
        for _ in range(workers)
    ]
    for p in procs:
        p.start()
    barrier.wait()
    t0 = time.perf_counter()
    ends = [done.get() for _ in procs]
    for p in procs:
        p.join()
    return len(paths) / (max(ends) - t0)


def _timed_batches(batches: Any, images: int) -> float:
    """Images/s from the first batch to the one that reaches ``images`` (start-up excluded)."""
    it = iter(batches)
    first = next(it)
    t0 = time.perf_counter()
    counted = 0
    have = _batch_len(first)
    for batch in it:
        n = _batch_len(batch)
        counted += n
        have += n
        if have >= images:
            break
    dt = time.perf_counter() - t0
    del it
    return counted / dt


def _batch_len(batch: Any) -> int:
    if isinstance(batch, dict):
        return len(batch["index"])
    return len(batch[1])  # (images, labels)


class _PathListDataset:
    """The common hand-written dataset: a Python list of paths and labels, Pillow per item."""

    def __init__(self, paths: list[str], labels: list[int], mode: str):
        self.paths = paths
        self.labels = labels
        self.mode = mode

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        import torch
        from PIL import Image

        img = Image.open(self.paths[i]).convert(self.mode)
        arr = np.array(img)  # a writable copy, as torchvision's PILToTensor makes
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(arr)), self.labels[i]


def _our_row(
    backend: str, index: PathIndex, images: int, cfg: dict[str, Any]
) -> tuple[Any, Callable[[], float]]:
    """This project's loader for ``backend``, and its timed run: epoch 0's first files."""
    from ..load.loader import make_loader

    ours = make_loader(
        backend=backend,
        index=index,
        batch_size=cfg["batch_size"],
        num_workers=cfg["workers"],
        seed=cfg["seed"],
        channels=cfg["channels"],
        size=cfg["size"],
    )

    def run() -> float:
        ours.set_epoch(0)
        return _timed_batches(ours, images)

    return ours, run


def _torch_rows(
    index: PathIndex, files: list[int], cfg: dict[str, Any]
) -> dict[str, Callable[[], float]]:
    import torch

    images = len(files)
    ours, run_ours = _our_row("torch", index, images, cfg)
    paths = index.paths(files)
    labels = index.labels[files].tolist()
    mode = "L" if ours.config.channels == 1 else "RGB"

    def run_baseline() -> float:
        ds = _PathListDataset(paths, labels, mode)
        g = torch.Generator().manual_seed(cfg["seed"])
        dl: Any = torch.utils.data.DataLoader(
            cast(Any, ds),
            batch_size=cfg["batch_size"],
            shuffle=True,
            num_workers=cfg["workers"],
            generator=g,
        )
        return _timed_batches(dl, images)

    return {"torch": run_ours, "baseline": run_baseline}


def _tf_rows(
    index: PathIndex, files: list[int], cfg: dict[str, Any]
) -> dict[str, Callable[[], float]]:
    tf = optional_import("tensorflow", "tf-cpu", "the tf rows of the benchmark")
    images = len(files)
    ours, run_ours = _our_row("tf", index, images, cfg)
    paths = index.paths(files)
    labels = index.labels[files]
    channels = ours.config.channels

    def run_hand() -> float:
        def load(path: Any, label: Any) -> Any:
            img = tf.io.decode_image(
                tf.io.read_file(path), channels=channels, expand_animations=False
            )
            if cfg["size"] is not None:
                img = tf.cast(tf.image.resize(img, cfg["size"]), tf.uint8)
            return tf.transpose(img, [2, 0, 1]), label

        ds = (
            tf.data.Dataset.from_tensor_slices((paths, labels))
            .shuffle(len(paths), seed=cfg["seed"])
            .map(load, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(cfg["batch_size"])
            .prefetch(tf.data.AUTOTUNE)
        )
        return _timed_batches(ds, images)

    return {"tf": run_ours, "tf-hand": run_hand}


# --------------------------------------------------------------------------- driver


def run_bench(
    index: PathIndex,
    *,
    rows: tuple[str, ...] = ("raw", "torch", "baseline"),
    workers: int = 2,
    batch_size: int = 256,
    images: int | None = None,
    repeat: int = 9,
    seed: int = 0,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Measure every row ``repeat`` times, interleaved; report medians and ratios to ``raw``.

    Args:
        index: The images to load.
        rows: Which rows (see the module docstring); ``raw`` is always measured.
        workers: Processes of every row (loader workers, raw decoders).
        batch_size: Batch size of the loader rows.
        images: Images per measurement (default: the whole index, at most 50,000).
        repeat: Rounds; each round measures every row once.
    """
    unknown = set(rows) - set(ROWS)
    if unknown:
        raise ValueError(f"unknown bench rows {sorted(unknown)}; valid: {', '.join(ROWS)}")
    from ..load.checks import infer_channels
    from ..order.sampler import GlobalShuffleSampler

    n = len(index)
    m = min(n, images or 50_000)
    if channels is None:
        channels = infer_channels(index)
    # The files every row reads: the first m of the epoch-0 global order (our loader's order).
    sampler = GlobalShuffleSampler(n, seed=seed, batch_size=batch_size)
    files = sampler.ids(0, m).tolist()
    paths = index.paths(files)
    for p in paths:  # warm the page cache once, for every row alike
        with open(p, "rb") as f:
            f.read()
    cfg = {
        "workers": workers,
        "batch_size": batch_size,
        "seed": seed,
        "channels": channels,
        "size": size,
    }
    runners: dict[str, Callable[[], float]] = {
        "raw": lambda: _raw_rate(paths, workers, channels, size)
    }
    if {"torch", "baseline"} & set(rows):
        runners.update(_torch_rows(index, files, cfg))
    if {"tf", "tf-hand"} & set(rows):
        runners.update(_tf_rows(index, files, cfg))
    order = ["raw", *[r for r in ROWS if r in rows and r != "raw"]]
    runs: dict[str, list[float]] = {r: [] for r in order}
    total = (repeat + 1) * len(order)
    with progress_bar(progress, desc="benchmarking", total=total, unit=" runs") as bar:
        for r in order:  # one untimed round: every row starts warm (workers, traces, caches)
            runners[r]()
            bar.update(1)
        for _ in range(repeat):
            for r in order:
                _settle()
                runs[r].append(runners[r]())
                bar.update(1)
    # NOTE [bench columns]: a row's images/s is the median of its rounds, and its ratio is that
    # median over the raw row's median: the two columns come from the same numbers and agree
    # (a per-round ratio's median did not: 10,942 img/s showed as 0.97x of a 9,598 raw rate).
    # The range of the per-round ratios (each round against the raw run of the same round,
    # neighbours in time sharing the machine's mood) says how noisy the machine was.
    table = {}
    raw_median = statistics.median(runs["raw"])
    for r, v in runs.items():
        ratios = [x / raw for x, raw in zip(v, runs["raw"], strict=True)]
        median = statistics.median(v)
        table[r] = {
            "images_per_s": round(median, 1),
            "ratio_to_raw": round(median / raw_median, 3),
            "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
            "runs": [round(x, 1) for x in v],
        }
    first = np.asarray(load_image(paths[0], channels=channels, size=size))
    return {
        "index": list(index.files),
        "images": m,
        "image_shape": list(first.shape),
        "workers": workers,
        "batch_size": batch_size,
        "repeat": repeat,
        "cpu_count": os.cpu_count(),
        "rows": table,
    }


def _settle(seconds: float = 0.3) -> None:
    """Let the previous row's background threads (tf.data prefetch, freed workers) go quiet."""
    import gc

    gc.collect()
    time.sleep(seconds)


def format_bench_table(result: dict[str, Any]) -> str:
    """A markdown table of a :func:`run_bench` result."""
    h, w, c = result["image_shape"]
    lines = [
        f"{result['images']:,} images of {h}x{w}x{c}, {result['workers']} workers, batch "
        f"{result['batch_size']}, median of {result['repeat']} interleaved runs",
        "",
        "| row | images/s (median) | x raw decode limit (of the medians) | per-round ratio range |",
        "|---|---|---|---|",
    ]
    for name, r in result["rows"].items():
        lo, hi = r["ratio_range"]
        lines.append(
            f"| {name} | {r['images_per_s']:,.0f} | {r['ratio_to_raw']:.2f} | {lo:.2f}-{hi:.2f} |"
        )
    return "\n".join(lines)
