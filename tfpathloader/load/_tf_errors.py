"""The tf backend's bad-record paths: skipping (``on_error="skip"``) and naming the culprit.

Functions of the loader (a :class:`~tfpathloader.load.tf_backend.TFLoader`), kept apart from
the fast path: they run only when a record fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import ImageLoadError
from .decode import load_image

__all__ = ["culprit", "iter_skipping", "why"]


def iter_skipping(loader: Any) -> Iterator[dict[str, Any]]:
    """``on_error="skip"``: a pipeline per iteration, whose batches may lose records."""
    start = loader._start()
    expected = start
    ds = loader.as_tf_dataset(start)
    it = iter(ds)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            break
        except loader.tf.errors.OpError as e:
            raise culprit(loader, expected, e) from None
        no = int(batch.pop("batch"))
        for lost in range(expected, no):  # whole batches lost to bad records
            note_skips(loader, lost, np.zeros(0, dtype=np.int64))
            loader._delivered()
        note_skips(loader, no, batch["index"].numpy())
        expected = no
        out = loader._to_torch(batch)
        loader._delivered()
        expected += 1
        yield out
    for lost in range(expected, len(loader)):
        note_skips(loader, lost, np.zeros(0, dtype=np.int64))
        loader._delivered()
    loader._finish()


def note_skips(loader: Any, k: int, delivered: np.ndarray) -> None:
    lo, hi = loader._batch_bounds(k)
    wanted = loader.rank_ids()[lo:hi]
    missing = np.setdiff1d(wanted, delivered)
    loader._record_skips([why(loader, int(i)) for i in missing])


def why(loader: Any, i: int) -> tuple[int, str, str]:
    """Why record ``i`` does not load: Pillow's reason, else TensorFlow's."""
    path = loader.index.path(i)
    try:
        load_image(path, channels=loader.config.channels, size=loader.config.size, record_id=i)
    except ImageLoadError as e:
        return (i, path, e.cause)
    tf = loader.tf
    try:
        epoch = tf.constant(loader.epoch, tf.int64)
        item = loader._prepare(tf.constant([i], dtype=tf.int64), epoch)
        loader._finish_batch(
            {
                k: v[None] if k == "image" else v
                for k, v in loader._load({k: v[0] for k, v in item.items()}).items()
            }
        )
    except tf.errors.OpError as e:
        return (i, path, f"TensorFlow could not decode it: {e.message.splitlines()[0]}")
    return (i, path, "could not be loaded")


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
        shape = load_image(loader.index.path(i), channels=cfg.channels, size=cfg.size).shape
        if first is None:
            first = (i, shape)
        elif shape != first[1]:
            return ValueError(
                f"record {i} ({loader.index.path(i)}) has shape {shape} but record "
                f"{first[0]} has {first[1]}: images of one batch must have one size; "
                "pass size=(height, width) to resize them"
            )
    return ImageLoadError(-1, "<unknown>", f"TensorFlow failed in batch {k}: {error}")
