"""Writing path indexes: write_index (atomic, sharded, parallel) and build_index (class folders)."""

from __future__ import annotations

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

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")

# --------------------------------------------------------------------------- writing


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
        (
            name,
            compression,
            rel[bounds[k] : bounds[k + 1]],
            lab[bounds[k] : bounds[k + 1]],
            classes,
            bounds[k],
        )
        for k, name in enumerate(names)
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
    return _open_fresh(
        names, root, rel, lab, classes, compression, allow_outside_root, shards, bounds
    )


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
    shards: int,
    bounds: list[int],
) -> PathIndex:
    """Store the cache from the arrays already in memory, then open the index through it."""
    files = [os.path.abspath(f) for f in names]
    offsets, paths = _pack(rel)
    outside = next(
        (
            (files[_shard_of(i, bounds)], i - bounds[_shard_of(i, bounds)], p)
            for i, p in enumerate(rel)
            if _escapes_root(p)
        ),
        None,
    )
    meta = {
        "records": len(rel),
        "shard_records": [bounds[k + 1] - bounds[k] for k in range(shards)],
        "path_features": [PATH_FEATURES[0]] * shards,
        "compression": compression,
        "classes": list(classes) if classes is not None else None,
        "outside": list(outside) if outside else None,
    }
    arrays = {"labels": lab, "offsets": offsets, "paths": paths}
    _cache.store(files, _cache.shard_signature(files), arrays, meta)
    return PathIndex.read(files, root=root, allow_outside_root=allow_outside_root)


def _shard_of(i: int, bounds: list[int]) -> int:
    return int(np.searchsorted(bounds, i, side="right")) - 1


# --------------------------------------------------------------------------- building


def build_index(
    image_root: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    shards: int = 1,
    compression: str | None = None,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    unlabeled: bool = False,
    progress: bool | None = None,
) -> tuple[PathIndex, dict[str, Any]]:
    """Index the images under ``image_root``: one class per sub-folder, in sorted order.

    Class sub-folders are visited in sorted order and files within them in sorted order
    (recursively), so the same tree always gives the same index. Labels are the positions of
    the class folders in that order; their names travel with the index.

    Args:
        image_root: Folder with one sub-folder per class (or any tree, with ``unlabeled``), or
            a listable URL prefix (``s3://bucket/train``, ``gs://...``): then the index is
            written to ``IMAGE_ROOT/index.tfrecord`` in the store, or to a local ``out``
            (read it with ``root=IMAGE_ROOT``).
        out: Index file; defaults to ``IMAGE_ROOT/index.tfrecord``. Paths are stored relative
            to its folder, which must therefore contain the images.
        shards, compression, progress: As for :func:`write_index`.
        extensions: File name endings counted as images (case-insensitive).
        unlabeled: Index every image under ``image_root`` with label -1.

    Returns:
        The opened index, and a report: counts of images and of files left out and why.
    """
    if is_url(os.fspath(image_root)):  # s3://bucket/train: list the prefix instead
        from .remote import build_remote_index

        return build_remote_index(
            os.fspath(image_root),
            None if out is None else os.fspath(out),
            shards=shards,
            compression=compression,
            extensions=extensions,
            unlabeled=unlabeled,
            progress=progress,
        )
    image_root = os.path.abspath(os.fspath(image_root))
    if not os.path.isdir(image_root):
        raise FileNotFoundError(f"image folder {image_root!r} does not exist")
    out = (
        os.path.abspath(os.fspath(out))
        if out is not None
        else os.path.join(image_root, "index.tfrecord")
    )
    index_dir = os.path.dirname(out)
    if os.path.commonpath([index_dir, image_root]) != index_dir:
        raise ValueError(
            f"the index folder {index_dir!r} does not contain the images under {image_root!r}; "
            "paths are stored relative to the index folder, so write the index inside the "
            "image folder (the default) or one of its parents"
        )
    exts = tuple(e.lower() for e in extensions)
    paths: list[str] = []
    labels: list[int] = []
    skipped: dict[str, int] = {"not an image extension": 0, "not in a class folder": 0}
    examples: dict[str, list[str]] = {k: [] for k in skipped}

    def skip(reason: str, path: str) -> None:
        skipped[reason] += 1
        if len(examples[reason]) < 5:
            examples[reason].append(path)

    with progress_bar(progress, desc="finding images", unit=" files") as bar:
        if unlabeled:
            groups = [(-1, image_root)]
            classes: list[str] | None = None
        else:
            entries = sorted(os.scandir(image_root), key=lambda e: e.name)
            classes = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
            for e in entries:
                if e.is_file() and not e.name.startswith("."):
                    skip("not in a class folder", e.path)
            groups = [(k, os.path.join(image_root, c)) for k, c in enumerate(classes)]
        for label, folder in groups:
            for dirpath, dirnames, filenames in os.walk(folder):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for fname in sorted(filenames):
                    if fname.startswith("."):
                        continue
                    full = os.path.join(dirpath, fname)
                    if not fname.lower().endswith(exts):
                        if not full.endswith((".tfrecord", ".tfrecord.gz")):
                            skip("not an image extension", full)
                        continue
                    paths.append(full)
                    labels.append(label)
                    bar.update(1)
    if not paths:
        raise ValueError(
            f"no images found under {image_root!r} (looked for {', '.join(exts)} files"
            + ("" if unlabeled else " inside class sub-folders")
            + ")"
        )
    index = write_index(
        out,
        paths,
        labels,
        shards=shards,
        compression=compression,
        classes=classes,
        progress=progress,
    )
    return index, build_report(len(paths), classes, skipped, examples, index)


def build_report(
    images: int, classes: Any, skipped: Any, examples: Any, index: PathIndex
) -> dict[str, Any]:
    """What ``index build`` tells the user: images, classes, skips, the files written."""
    return {
        "images": images,
        "classes": len(classes) if classes is not None else 0,
        "skipped": skipped,
        "skipped_examples": examples,
        "files": list(index.files),
    }
