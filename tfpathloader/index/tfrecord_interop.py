"""The `tfrecord` package beside TensorFlow: the explicit step, and our indexes read by tfrecord.

NOTE [protobuf clash]: TensorFlow registers ``tensorflow/core/example/feature.proto`` and the
``tfrecord`` package registers its own ``example.proto`` in protobuf's *default* descriptor pool.
Both declare ``tensorflow.BytesList`` etc., so whichever is imported second fails with
"duplicate symbol 'tensorflow.BytesList'". The wire format is what both sides actually share, so
tfpathloader builds the same messages in a pool of its own (:mod:`tfpathloader.index._proto`);
``import tfpathloader`` changes nothing else in the process. The explicit step
:func:`enable_tfrecord_interop` (also taken by the tf backend just before it imports TensorFlow)
puts those messages in ``sys.modules`` as ``tfrecord.example_pb2``: ``tfrecord`` then works
unchanged and TensorFlow keeps the default pool to itself, in either import order. The one
order no library can repair is ``import tfrecord`` *before* that step, followed by ``import
tensorflow``: the step warns about it, and the tf backend turns TensorFlow's failure into an
error that says what to do. ``tfrecord`` is an optional extra: tfpathloader reads and writes
TFRecords itself and needs it for nothing.
"""

from __future__ import annotations

import os
import sys
import types
import warnings
from collections.abc import Iterator
from typing import Any

from .._utils import optional_import
from . import _proto

__all__ = ["enable_tfrecord_interop", "tfrecord_records"]

_SHIM = "tfrecord.example_pb2"


def enable_tfrecord_interop() -> None:
    """Let ``import tfrecord`` and ``import tensorflow`` share one process, in either order.

    Call it once before importing ``tfrecord`` in a process that also uses TensorFlow (the tf
    backend calls it before it imports TensorFlow). Idempotent; warns if ``tfrecord`` was
    already imported on its own, which no library can repair.
    """
    loaded = sys.modules.get(_SHIM)
    if loaded is None:
        shim = types.ModuleType(_SHIM, "tf.train.Example messages (tfpathloader's own pool).")
        shim.__dict__.update({name: getattr(_proto, name) for name in _proto.__all__})
        shim.DESCRIPTOR = _proto.DESCRIPTOR  # type: ignore[attr-defined]
        sys.modules[_SHIM] = shim
    elif (
        loaded.__dict__.get("DESCRIPTOR") is not _proto.DESCRIPTOR
        and "tensorflow" not in sys.modules
    ):
        warnings.warn(
            "the 'tfrecord' package was imported before tfpathloader, so its protobuf messages "
            "sit in protobuf's global pool and a later 'import tensorflow' will fail with "
            "\"duplicate symbol 'tensorflow.BytesList'\". Call "
            "tfpathloader.enable_tfrecord_interop() before importing tfrecord.",
            RuntimeWarning,
            stacklevel=2,
        )


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
