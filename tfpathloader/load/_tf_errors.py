"""The tf backend's bad-record paths: which records a batch lost, and why a record fails.

Functions of the loader (a :class:`~tfpathloader.load.tf_backend.TFLoader`), kept apart from
the fast path: they run only when a record fails.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import BatchShapeError, ImageLoadError
from ..storage import FetchError, redact
from .decode import check_bytes, load_image

__all__ = ["culprit", "fetch_remote", "note_skips", "why"]


def note_skips(loader: Any, k: int, delivered: np.ndarray) -> None:
    """Record the records of batch ``k`` that did not arrive, in batch order (as torch does)."""
    lo, hi = loader._batch_bounds(k)
    wanted = loader.rank_ids()[lo:hi]
    missing = wanted[~np.isin(wanted, delivered)]  # in batch order, as torch reports them
    loader._record_skips([why(loader, int(i)) for i in missing])


def why(loader: Any, i: int) -> tuple[int, str, str]:
    """Why record ``i`` does not load: Pillow's reason, else TensorFlow's.

    Raises:
        TransformOutputError: when the image loads but the transform's output is refused.
    """
    path = loader.index.path(i)
    cfg = loader.config
    if i in loader._remote_failures:
        return (i, redact(path), loader._remote_failures.pop(i))
    try:
        hwc = load_image(
            path, channels=cfg.channels, size=cfg.size, record_id=i, reader=loader._reader
        )
    except ImageLoadError as e:
        return (i, path, e.cause)
    if loader.transform is not None and loader._crop_transform is None:
        loader._apply_transform(np.ascontiguousarray(hwc), np.int64(i), np.int64(loader.epoch))
    tf = loader.tf
    try:
        item = loader._prepare(
            tf.constant([i], dtype=tf.int64), tf.constant(loader.epoch, tf.int64)
        )
        loader._finish_batch(
            {
                k: v[None] if k == "image" else v
                for k, v in loader._load({k: v[0] for k, v in item.items()}).items()
            }
        )
    except tf.errors.OpError as e:
        return (i, redact(path), f"TensorFlow could not decode it: {e.message.splitlines()[0]}")
    return (i, redact(path), "could not be loaded")


def culprit(loader: Any, k: int, error: Exception) -> Exception:
    """The first bad record of batch ``k``, named like the PyTorch backend names it."""
    lo, hi = loader._batch_bounds(k)
    ids = loader.rank_ids()[lo:hi].tolist()
    for i in ids:
        rid, path, cause = why(loader, int(i))
        if cause != "could not be loaded":
            return ImageLoadError(rid, path, cause)
    # Every record loads alone: the batch mixes image sizes (the PyTorch backend's message).
    cfg = loader.config
    first: tuple[int, tuple[int, ...]] | None = None
    for i in ids:
        shape = load_image(
            loader.index.path(i), channels=cfg.channels, size=cfg.size, reader=loader._reader
        ).shape
        if first is None:
            first = (i, shape)
        elif shape != first[1]:
            return BatchShapeError(
                i,
                loader.index.path(i),
                f"record {i} ({loader.index.path(i)}) has shape {shape} but record "
                f"{first[0]} has {first[1]}: images of one batch must have one size; "
                "pass size=(height, width) to resize them",
            )
    return ImageLoadError(-1, "<unknown>", f"TensorFlow failed in batch {k}: {error}")


def fetch_remote(loader: Any, paths: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """A remote batch's bytes, fetched concurrently; a failure is remembered (for ``why``),
    then raised."""
    fetcher = loader._fetcher
    got = fetcher.fetch_many([p.decode("utf-8") for p in paths.tolist()])
    loader._add_remote_stats(fetcher.take_stats())
    bad = None
    for i, g, p in zip(ids.tolist(), got, paths.tolist(), strict=True):
        cause = g.cause if isinstance(g, FetchError) else None
        if not isinstance(g, FetchError):
            try:
                check_bytes(g, redact(p.decode("utf-8")), int(i))  # as read_file does
            except ImageLoadError as e:
                cause = e.cause
        if cause is not None:
            # Named by _why when the batch fails (the same cause as the torch backend).
            loader._remote_failures[int(i)] = cause
            bad = bad if bad is not None else int(i)
    if bad is not None:
        raise ImageLoadError(bad, "<remote>", loader._remote_failures[bad])
    return np.array(got, dtype=object)
