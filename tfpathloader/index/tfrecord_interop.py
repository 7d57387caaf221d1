"""The `tfrecord` package beside TensorFlow: the explicit step, and our indexes read by tfrecord.

See NOTE [protobuf clash] in :mod:`tfpathloader.index._proto`. ``tfrecord`` is an optional
extra (``pip install 'tfpathloader[tfrecord]'``): tfpathloader reads and writes TFRecords itself
and needs it for nothing; this module is for users whose own pipelines use ``tfrecord``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from .._utils import optional_import
from ._proto import install_tfrecord_shim

__all__ = ["enable_tfrecord_interop", "tfrecord_records"]


def enable_tfrecord_interop() -> None:
    """Let ``import tfrecord`` and ``import tensorflow`` share one process, in either order.

    Call it once before importing ``tfrecord`` in a process that also uses TensorFlow (the tf
    backend calls it before it imports TensorFlow). Idempotent; warns if ``tfrecord`` was
    already imported on its own, which no library can repair.
    """
    install_tfrecord_shim()


def tfrecord_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The records of one path-index file, read by the ``tfrecord`` package's own reader.

    Yields dicts ``{"index": array, "label": array, "path": bytes, ...}`` as
    ``tfrecord.reader.tfrecord_loader`` gives them (GZIP files are recognized).
    """
    from ._records import is_gzip

    enable_tfrecord_interop()
    reader = optional_import("tfrecord.reader", "tfrecord", "reading an index with tfrecord")
    p = os.fspath(path)
    yield from reader.tfrecord_loader(p, None, compression_type="gzip" if is_gzip(p) else None)
