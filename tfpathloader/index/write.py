"""Writing path indexes: write_index (atomic, sharded, parallel)."""

from __future__ import annotations

import bisect
import contextlib
import multiprocessing as mp
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from .._utils import progress_bar
from ..storage.urls import is_url
from . import _cache
from ._records import RecordWriter
from .names import _sibling_shards, shard_names
from .parse import (
    PATH_FEATURES,
    _escapes_root,
    _labels_array,
    _pack,
    _relative_paths,
    _workers,
    encode_example,
)
from .path_index import PathIndex


def write_index(
    out: str | os.PathLike[str],
    paths: Sequence[str],
    labels: Sequence[int] | np.ndarray | None = None,
    *,
    root: str | os.PathLike[str] | None = None,
    shards: int = 1,
    compression: str | None = None,
    classes: Sequence[str] | None = None,
    allow_outside_root: bool = False,
    progress: bool | None = None,
    cache: bool = True,
) -> PathIndex:
    """Write a path index (record ``i`` = ``paths[i]``) and return it, opened.

    Shards hold contiguous id ranges. They are written under temporary names and renamed into
    place only when all are complete, so an error or Ctrl-C leaves the previous index (if any)
    untouched; shards of an earlier write with another shard count are then removed.

    Args:
        out: ``data/index.tfrecord``; with ``shards=4`` the files are
            ``data/index-00000-of-00004.tfrecord`` ... (``.tfrecord.gz`` with GZIP).
        paths: Image paths, absolute or relative to ``root``.
        labels: Class id per path (``None``: all -1, unlabeled).
        root: Folder the stored paths are relative to; defaults to the folder of ``out``.
        shards: Number of files.
        compression: ``None`` or ``"gzip"``.
        classes: Class names by label; stored as a ``label_name`` feature on each record.
        allow_outside_root: Store paths outside ``root`` (as absolute paths).
        progress: Show a progress bar (``None``: only on a terminal).
        cache: Also write the parsed-index cache, so the first open is instant.
    """
    out = os.path.abspath(os.fspath(out))
    if root is None:
        root = os.path.dirname(out)
    elif is_url(os.fspath(root)):  # a URL root (images in object storage) stays as is
        root = os.fspath(root)
    else:
        root = os.path.abspath(os.fspath(root))
    if compression not in (None, "gzip"):
        raise ValueError(f"compression must be None or 'gzip', got {compression!r}")
    rel = _relative_paths(paths, root, allow_outside_root)
    n = len(rel)
    if n == 0:
        raise ValueError("cannot write an empty path index: no paths were given")
    lab = _labels_array(labels, n)
    if classes is not None and lab.max() >= len(classes):
        raise ValueError(f"label {int(lab.max())} has no name in classes (of {len(classes)})")
    shards = min(shards, n)
    names = shard_names(out, shards, compression=compression)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    stale = [f for f in _sibling_shards(out) if f not in names]
    bounds = [n * k // shards for k in range(shards + 1)]
    jobs: list[_ShardJob] = [
        (name, compression, rel[a:b], lab[a:b], classes, a)
        for name, a, b in zip(names, bounds[:-1], bounds[1:], strict=True)
    ]
    finished: list[str] = []
    try:
        with progress_bar(progress, desc="writing path index", unit=" records", total=n) as bar:
            for tmp in _written_shards(jobs, bar):
                finished.append(tmp)
        for tmp, name in zip(finished, names, strict=True):  # all complete: into place
            os.replace(tmp, name)
    except BaseException:
        for tmp in finished:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    for f in stale:
        os.unlink(f)
    if not cache:
        return PathIndex.read(names, root=root, allow_outside_root=allow_outside_root, cache=False)
    return _open_fresh(names, root, rel, lab, classes, compression, allow_outside_root, bounds)


# (shard file, compression, relative paths, labels, class names, id of the first record)
_ShardJob = tuple[str, str | None, Sequence[str], np.ndarray, Sequence[str] | None, int]


def _write_shard(job: _ShardJob, bar: Any | None = None) -> str:
    """Write one shard under a temporary name (returned); nothing is left behind on failure."""
    name, compression, rel, labels, classes, first_id = job
    w = RecordWriter(name, compression=compression)
    try:
        for k, (path, label) in enumerate(zip(rel, labels.tolist(), strict=True)):
            label_name = classes[label] if classes is not None and label >= 0 else None
            w.write(encode_example(first_id + k, label, path, label_name))
            if bar is not None and k & 8191 == 8191:
                bar.update(8192)
        if bar is not None:
            bar.update(len(rel) & 8191)
        return w.finish()
    except BaseException:
        w.abort()
        raise


# Shards are written by parallel processes (one per core) from this many records: encoding is
# about 3 us per record, a forked process tens of milliseconds (see NOTE [parallel parse]).
_PARALLEL_MIN_RECORDS = 200_000


def _written_shards(jobs: list[_ShardJob], bar: Any) -> Iterator[str]:
    """The temporary file of every shard, in order (written in parallel when it pays)."""
    workers = _workers(len(jobs), sum(len(job[2]) for job in jobs), _PARALLEL_MIN_RECORDS)
    if not workers:
        for job in jobs:
            yield _write_shard(job, bar)
        return
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"))
    futures = [pool.submit(_write_shard, job) for job in jobs]
    handed_out = 0
    try:
        for job, future in zip(jobs, futures, strict=True):
            tmp = future.result()
            bar.update(len(job[2]))
            handed_out += 1
            yield tmp
    finally:
        for future in futures:
            future.cancel()
        pool.shutdown(wait=True)
        # After a failure: shards other workers completed meanwhile, never handed out.
        for future in futures[handed_out:]:
            if future.done() and not future.cancelled() and future.exception() is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(future.result())


def _open_fresh(
    names: list[str],
    root: str,
    rel: list[str],
    lab: np.ndarray,
    classes: Sequence[str] | None,
    compression: str | None,
    allow_outside_root: bool,
    bounds: list[int],
) -> PathIndex:
    """Store the cache from the arrays already in memory, then open the index through it."""
    files = [os.path.abspath(f) for f in names]
    offsets, paths = _pack(rel)
    outside = None
    first = next((i for i, p in enumerate(rel) if _escapes_root(p)), None)
    if first is not None:  # as the parser records it: shard, record within it, path
        k = bisect.bisect_right(bounds, first) - 1
        outside = [files[k], first - bounds[k], rel[first]]
    meta = {
        "records": len(rel),
        "shard_records": np.diff(bounds).tolist(),
        "path_features": [PATH_FEATURES[0]] * len(files),
        "compression": compression,
        "classes": list(classes) if classes is not None else None,
        "outside": outside,
    }
    arrays = {"labels": lab, "offsets": offsets, "paths": paths}
    _cache.store(files, _cache.shard_signature(files), arrays, meta)
    return PathIndex.read(files, root=root, allow_outside_root=allow_outside_root)
