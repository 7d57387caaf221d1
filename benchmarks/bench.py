"""Our loaders against the machine's decode limit, on any index: the bench driver and its rows.

    python benchmarks/bench.py data/index.tfrecord [--rows raw,torch,tf] [--crop]

A row is a factory ``f(spec) -> run`` called inside the row's own process; ``run(epoch)``
iterates one epoch over ``spec.paths`` and returns the images delivered and when the first batch
came. Ours: ``raw`` (the files decoded flat out by as many processes as the loaders use),
``raw-lean``, ``torch``, ``tf``, ``torch-fast``, ``tf-fast``. ``benchmarks/peers.py`` runs the
loaders people write instead as rows of the same kind through this driver (``catalog=``), for
the README's Speed table.

NOTE [bench method]: every row runs in a process of its own, spawned fresh (no loader's threads,
caches or memory meet another's), built once, then run epoch after epoch as training would.
Rounds are interleaved, one row at a time; a row's ratio is its median rate over the raw row's
median (neighbours in time share the machine's mood; slow drift cancels). A rate is images over
the whole epoch, its start-up included; the first-batch column is the part before the first
batch; the cold start is building the loader plus its first batch. Memory is the peak over the
row's process tree, sampled every 0.1 s from ``/proc/PID/smaps_rollup`` during one more epoch
*after* the timed rounds: a sample costs 30-45 ms of CPU in a process holding TensorFlow and
torch, and sampling the timed epochs slowed the tf crop row from ~1,450 to ~1,180 images/s.
``memory`` is anonymous + shared-memory PSS: every page the row allocated, counted once, no
shared library or page cache; the column to compare. USS (private pages) is beside it, but
misses what the row's own processes share (the torch backend's batch slots). CPU ms per image
(user + system over the tree, ``/proc/PID/stat``) survives a shared, oversubscribed machine,
where a wall rate depends on how many threads a row has runnable against everyone else's.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import statistics
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import numpy as np
from procstats import cpu_s, tree_rollup

from tfpathloader._utils import progress_bar
from tfpathloader.index import PathIndex
from tfpathloader.load.decode import decode_image, load_image

__all__ = [
    "DEFAULT_ROWS",
    "ROWS",
    "Result",
    "Row",
    "RowSpec",
    "Run",
    "count_epoch",
    "format_bench_table",
    "memory_mib",
    "pillow_crop",
    "run_bench",
]


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
# ratio=(3/4, 4/3)) + a horizontal flip with probability 1/2, as its own users write it: the
# Pillow rows (raw here; DataLoader, StatefulDataLoader and Grain in benchmarks/peers.py) as
# torchvision does on a PIL image (full decode, ``crop().resize(BILINEAR)``, ``transpose``,
# torchvision's box algorithm: ``tfpathloader.transforms.RandomResizedCrop.box``); hand-written
# tf.data as TensorFlow's Inception preprocessing (``sample_distorted_bounding_box``,
# ``decode_and_crop_jpeg``); this project's rows with ``tfpathloader.transforms``.


def pillow_crop(
    path: str, spec: RowSpec, rng: np.random.Generator, *, lean: bool = False
) -> np.ndarray:
    """torchvision's RandomResizedCrop + RandomHorizontalFlip on a PIL image, in plain Pillow."""
    import io

    from PIL import Image

    from tfpathloader.transforms import RandomResizedCrop

    assert spec.size is not None
    src: Any = path
    if lean:
        with open(path, "rb") as f:
            src = io.BytesIO(f.read())
    with Image.open(src) as img:
        img = img.convert("L" if spec.channels == 1 else "RGB")
        top, left, h, w = RandomResizedCrop(spec.size).box(img.size[1], img.size[0], rng)
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


# NOTE [equal pixels]: hand-written tf.data decodes JPEGs with libjpeg's fast integer IDCT and
# resizes without antialiasing; ours decode with the accurate IDCT and antialias (Pillow's
# pixels). For equal work, ``torch-fast``/``tf-fast`` are ours at tf.data's defaults
# (``jpeg_dct="fast"``, ``antialias=False``), and ``tf-hand-exact`` (benchmarks/peers.py) is
# hand-written tf.data at ours.


def _ours(spec: RowSpec, backend: Literal["torch", "tf"], fast: bool = False) -> Run:
    """This project's loader (``make_loader``), epoch by epoch, as in training.

    ``fast``: with hand-written tf.data's pixel quality (NOTE [equal pixels]).
    """
    from tfpathloader import transforms as T
    from tfpathloader.index import PathIndex
    from tfpathloader.load.loader import make_loader

    index = PathIndex.read(list(spec.index_files), root=spec.root)
    how: dict[str, Any] = {"channels": spec.channels}
    if spec.crop:
        assert spec.size is not None
        crop = T.RandomResizedCrop(spec.size, antialias=not fast)
        how["transform"] = T.Compose([crop, T.RandomHorizontalFlip()])
    elif fast and spec.size is not None:
        how["transform"] = T.Resize(spec.size, antialias=False)
    else:
        how["size"] = spec.size
    if fast:
        how["jpeg_dct"] = "fast"
    loader = make_loader(
        backend=backend,
        index=index,
        batch_size=spec.batch_size,
        num_workers=spec.workers,
        seed=spec.seed,
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


DEFAULT_ROWS = ("raw", "raw-lean", "torch", "tf")

_USS = ("Private_Clean", "Private_Dirty")
_OWN = ("Pss_Anon", "Pss_Shmem")


def memory_mib(pid: int) -> tuple[float | None, float | None]:
    """USS (private clean + dirty) and anonymous + shared-memory PSS of ``pid`` and all its
    descendants, MiB (NOTE [bench method]); ``(None, None)`` off Linux."""
    tree = tree_rollup(pid)
    if tree is None:
        return None, None
    uss, own = (round(sum(tree.get(k, 0) for k in keys) / 1024, 1) for keys in (_USS, _OWN))
    return uss, own


@contextlib.contextmanager
def _peak_memory(every: float = 0.1) -> Iterator[dict[str, float]]:
    """This process tree's peak USS and PSS (``uss_mib``, ``mem_mib``), sampled in a thread."""
    peak: dict[str, float] = {}
    stop = threading.Event()

    def sample() -> None:
        while True:
            for key, v in zip(("uss_mib", "mem_mib"), memory_mib(os.getpid()), strict=True):
                if v is not None:
                    peak[key] = max(v, peak.get(key, v))
            if stop.wait(every):
                return

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()


def _row_main(row: Row, spec: RowSpec, conn: Any) -> None:
    """A row's process: build the row, then run one epoch per request."""
    # A spawned process starts its own children by spawn too; a user's script on Linux forks
    # them (Python < 3.14), so DataLoader workers would re-import torch every epoch here.
    if "fork" in mp.get_all_start_methods():
        mp.set_start_method("fork", force=True)
    try:
        t0 = time.perf_counter()
        run = row.make(spec)
        conn.send({"built_s": time.perf_counter() - t0})
    except ImportError as e:
        conn.send({"skipped": f"{e}"})
        return
    except Exception:
        conn.send({"error": traceback.format_exc()})
        return
    while (request := conn.recv()) is not None:
        epoch, memory = request  # memory: sample it (an untimed epoch, NOTE [bench method])
        try:
            cpu0 = cpu_s(os.getpid())
            sampler: AbstractContextManager[dict[str, float]]
            sampler = _peak_memory() if memory else contextlib.nullcontext({})
            with sampler as mem:
                images, first, seconds = run(epoch)
            cpu1 = cpu_s(os.getpid())
            cpu = None if cpu0 is None or cpu1 is None else 1000 * (cpu1 - cpu0) / images
            conn.send(
                {
                    "images": images,
                    "first_s": first,
                    "seconds": seconds,
                    **mem,
                    "cpu_ms_per_image": cpu,
                }
            )
        except Exception:
            conn.send({"error": traceback.format_exc()})
            return


class _Row:
    def __init__(self, ctx: Any, name: str, row: Row, spec: RowSpec):
        self.name = name
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_row_main, args=(row, spec, child))
        self.proc.start()
        child.close()

    def wait(self) -> dict[str, Any]:
        msg = self.conn.recv()
        if "error" in msg:
            self.close()
            raise RuntimeError(f"bench row {self.name!r} failed:\n{msg['error']}")
        return dict(msg)

    def run(self, epoch: int, memory: bool = False) -> dict[str, Any]:
        """One epoch; with ``memory``, its memory sampled (and its timing not to be used)."""
        self.conn.send((epoch, memory))
        return self.wait()

    def close(self) -> None:
        if self.proc.is_alive():
            with contextlib.suppress(OSError):
                self.conn.send(None)
            self.proc.join(30)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join()


# --------------------------------------------------------------------------- driver


def run_bench(
    index: PathIndex,
    *,
    rows: Sequence[str] = DEFAULT_ROWS,
    catalog: Mapping[str, Row] = ROWS,
    workers: int = 2,
    batch_size: int = 256,
    images: int | None = None,
    repeat: int = 9,
    seed: int = 0,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
    crop: bool = False,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Measure every row ``repeat`` times, interleaved; medians and ratios to ``raw``.

    See NOTE [bench method]. All rows read the same files: the first ``images`` of our loaders'
    epoch-0 order.

    Args:
        index: The images to load.
        rows: Which rows of ``catalog``, measured in the catalog's order; ``raw`` is always
            measured. A row whose package is not installed is reported as skipped.
        catalog: The rows by name: ours (:data:`ROWS`), or more beside them (the peers
            of ``benchmarks/peers.py``).
        workers: Processes of every row (loader workers, tf.data parallel calls, raw decoders).
        batch_size: Batch size of the loader rows.
        images: Images per measurement (default: the whole index, at most 50,000).
        repeat: Timed rounds, after one untimed warm-up round.
        seed: Seed of the order and of every peer's shuffle.
        channels: 1 or 3 (default: record 0's, as the loaders take it).
        size: ``(height, width)`` every row resizes to (needed for images of varied size).
        crop: Every row applies the training crop to ``size`` (NOTE [bench crop]).
        progress: Progress bar (``None``: on a terminal).
    """
    if crop and size is None:
        raise ValueError("crop needs the crop's output size (--size H W)")
    unknown = set(rows) - set(catalog)
    if unknown:
        raise ValueError(f"unknown bench rows {sorted(unknown)}; valid: {', '.join(catalog)}")
    from tfpathloader.load.decode import load_image
    from tfpathloader.order.sampler import GlobalShuffleSampler

    n = len(index)
    m = min(n, images or 50_000)
    channels = load_image(index.path(0)).shape[2] if channels is None else channels
    files = GlobalShuffleSampler(n, seed=seed, batch_size=batch_size).ids(0, m).tolist()
    paths = index.paths(files)
    for p in paths:  # warm the page cache once, for every row alike
        with open(p, "rb") as f:
            f.read()
    spec = RowSpec(
        index_files=tuple(index.files),
        root=index.root,
        paths=tuple(paths),
        labels=tuple(int(x) for x in index.labels[files]),
        workers=workers,
        batch_size=batch_size,
        seed=seed,
        channels=channels,
        size=size,
        crop=crop,
    )
    order = ["raw", *[r for r in catalog if r in rows and r != "raw"]]
    ctx = mp.get_context("spawn")
    runs: dict[str, list[dict[str, Any]]] = {r: [] for r in order}
    skipped: dict[str, str] = {}
    live: dict[str, _Row] = {}
    try:
        with progress_bar(
            progress, desc="benchmarking", total=(repeat + 3) * len(order), unit=" runs"
        ) as bar:
            cold: dict[str, float] = {}
            memory: dict[str, dict[str, Any]] = {}
            for r in order:  # built one at a time: start-up is measured alone too
                row = _Row(ctx, r, catalog[r], spec)
                info = row.wait()
                if "skipped" in info:
                    skipped[r] = info["skipped"]
                    row.close()
                else:
                    live[r] = row
                    warm = row.run(0)  # untimed warm-up epoch: its first batch is the cold start
                    cold[r] = info["built_s"] + (warm["first_s"] or 0.0)
                bar.update(2)
            for k in range(repeat):
                for r, row in live.items():
                    time.sleep(0.3)  # the previous row's freed workers, page writes go quiet
                    runs[r].append(row.run(k + 1))
                    bar.update(1)
            for r, row in live.items():  # memory, apart from the timed epochs
                time.sleep(0.3)
                memory[r] = row.run(repeat + 1, memory=True)
                bar.update(1)
    finally:
        for row in live.values():
            row.close()
    titles = {r: catalog[r].title for r in order}
    table = _tabulate(runs, cold, skipped, order, titles, memory)
    first = load_image(paths[0], channels=channels, size=size)
    return {
        "crop": crop,
        "index": list(index.files),
        "images": m,
        "image_shape": list(first.shape),
        "size": list(size) if size is not None else None,
        "workers": workers,
        "batch_size": batch_size,
        "repeat": repeat,
        "cpu_count": os.cpu_count(),
        "rows": table,
    }


def _tabulate(
    runs: dict[str, list[dict[str, Any]]],
    cold: dict[str, float],
    skipped: dict[str, str],
    order: list[str],
    titles: Mapping[str, str],
    memory: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Each row's median rate and ratio to the raw rate of the same round (NOTE [bench method])."""
    rate = {r: [x["images"] / x["seconds"] for x in v] for r, v in runs.items() if v}
    # NOTE [bench columns]: a row's images/s is the median of its rounds, and its ratio is that
    # median over the raw row's median: the two columns come from the same numbers and agree
    # (a median of per-round ratios did not: 10,942 img/s showed as 0.97x of a 9,598 raw rate).
    # The range of the per-round ratios (each round against the raw run of the same round)
    # says how noisy the machine was.
    raw_median = statistics.median(rate["raw"])
    table: dict[str, Any] = {}
    for r in order:
        if r in skipped:
            table[r] = {"title": titles[r], "skipped": skipped[r]}
            continue
        ratios = [x / raw for x, raw in zip(rate[r], rate["raw"], strict=True)]
        firsts = [x["first_s"] for x in runs[r] if x["first_s"] is not None]
        sampled = [(memory or {}).get(r, {}), *runs[r]]  # timed runs carry None
        mems = [x["uss_mib"] for x in sampled if x.get("uss_mib") is not None]
        owns = [x["mem_mib"] for x in sampled if x.get("mem_mib") is not None]
        cpus = [x["cpu_ms_per_image"] for x in runs[r] if x["cpu_ms_per_image"] is not None]
        table[r] = {
            "title": titles[r],
            "images_per_s": round(statistics.median(rate[r]), 1),
            "ratio_to_raw": round(statistics.median(rate[r]) / raw_median, 3),
            "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
            "first_batch_s": round(statistics.median(firsts), 3) if firsts else None,
            "cold_start_s": round(cold[r], 2) if firsts else None,
            "uss_mib": max(mems) if mems else None,
            "mem_mib": max(owns) if owns else None,
            "cpu_ms_per_image": round(statistics.median(cpus), 3) if cpus else None,
            "runs": [round(x, 1) for x in rate[r]],
        }
    return table


def format_bench_table(result: dict[str, Any]) -> str:
    """A markdown table of a :func:`run_bench` result: every column from the same runs."""
    h, w, c = result["image_shape"]
    lines = [
        f"{result['images']:,} images of {h}x{w}x{c}"
        + (" (RandomResizedCrop + flip)" if result.get("crop") else "")
        + f", {result['workers']} workers, batch "
        f"{result['batch_size']}, {os.cpu_count()} cores; median of {result['repeat']} "
        "interleaved rounds after a warm-up",
        "",
        "| row | images/s | x raw | range | first batch (s) | cold start (s) | memory (MiB) "
        "| USS (MiB) | CPU ms/image |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def num(v: float | None, fmt: str) -> str:
        return "" if v is None else format(v, fmt)

    for name, r in result["rows"].items():
        title = r.get("title", name)
        if "skipped" in r:
            lines.append(f"| {title} | skipped: {r['skipped']} | | | | | | | |")
            continue
        lo, hi = r["ratio_range"]
        lines.append(
            f"| {title} | {r['images_per_s']:,.0f} | {r['ratio_to_raw']:.2f} | "
            f"{lo:.2f}-{hi:.2f} | {num(r['first_batch_s'], '.2f')} | "
            f"{num(r['cold_start_s'], '.1f')} | {num(r.get('mem_mib'), ',.0f')} | "
            f"{num(r['uss_mib'], ',.0f')} | "
            f"{num(r['cpu_ms_per_image'], '.2f')} |"
        )
    return "\n".join(lines)


def add_bench_arguments(p: Any, *, rows: str, rows_help: str) -> None:
    """The bench's options (this script's and ``peers.py``'s)."""
    # NOTE [bench defaults]: the defaults are the README's Speed table's settings (2 workers,
    # batch 256, 9 rounds, the index's first 50,000 images), so the plain command reproduces it.
    p.add_argument(
        "--size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="resize every image to H x W in every row (needed for varied sizes)",
    )
    p.add_argument(
        "--crop",
        action="store_true",
        help="every row applies the training crop instead: RandomResizedCrop to "
        "--size (default 224 224) + horizontal flip, each the way its own users "
        "write it (Pillow for the raw rows and the PyTorch peers, "
        "decode_and_crop_jpeg for tf.data, tfpathloader.transforms for ours)",
    )
    p.add_argument("--rows", default=rows, help=rows_help)
    p.add_argument("--workers", type=int, default=2, help="processes per row (default 2)")
    p.add_argument("--batch-size", type=int, default=256, help="batch size (default 256)")
    p.add_argument("--images", type=int, help="images per measurement (default: at most 50,000)")
    p.add_argument("--repeat", type=int, default=9, help="interleaved rounds (default 9)")
    p.add_argument("--seed", type=int, default=0, help="seed of every order (default 0)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=None)  # fmt: skip


def bench_index(args: Any, index: PathIndex, catalog: Mapping[str, Row] | None = None) -> int:
    """Run the rows of ``args.rows`` (from ``catalog``; default: ours) and print the table."""
    import json
    import sys

    size: tuple[int, int] | None = (args.size[0], args.size[1]) if args.size else None
    result = run_bench(
        index,
        rows=tuple(r.strip() for r in args.rows.split(",") if r.strip()),
        catalog=ROWS if catalog is None else catalog,
        workers=args.workers,
        batch_size=args.batch_size,
        images=args.images,
        repeat=args.repeat,
        seed=args.seed,
        size=size or ((224, 224) if args.crop else None),
        crop=args.crop,
        progress=False if args.quiet else None,
    )
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        print(format_bench_table(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("index", help="index file, glob or sharded name")
    add_bench_arguments(p, rows="raw,raw-lean,torch,tf", rows_help="comma-separated rows: "
                        "raw, raw-lean, torch, tf (the default); torch-fast, tf-fast (ours at "
                        "tf.data's defaults: fast IDCT, no antialiasing)")  # fmt: skip
    args = p.parse_args(argv)
    return bench_index(args, PathIndex.read(args.index))


if __name__ == "__main__":
    raise SystemExit(main())
