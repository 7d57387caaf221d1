"""tfpathloader: shuffle millions of training images evenly, then load them fast.

Stage one shuffles a small TFRecord *path index* of (index, label, path) records completely;
stage two reads and decodes the images in that order, in PyTorch or in tf.data.

    >>> from tfpathloader import PathIndex, GlobalShuffleSampler, make_loader

Importing the package needs neither torch nor TensorFlow (the backends load them on first use),
installs no import hook and registers nothing in protobuf's global pool.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

# Public name -> module that defines it; loaded on first access (PEP 562).
_EXPORTS = {
    "PathIndex": "index",
    "write_index": "index",
    "build_index": "index",
    "encode_example": "index",
    "enable_tfrecord_interop": "index.tfrecord_interop",
    "TFPathLoaderError": "errors",
    "IndexFormatError": "errors",
    "ImageLoadError": "errors",
    "LoaderWorkerError": "errors",
    "TransformOutputError": "errors",
    "load_image": "load.decode",
    "decode_image": "load.decode",
    "make_demo": "tools.demo",
    "GlobalShuffleSampler": "order.sampler",
    "OrderSpec": "order.spec",
    "StateError": "order.state",
    "make_loader": "load.loader",
    "Loader": "load.loader",
    "audit_ids": "tools.audit",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tfpathloader' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from .errors import (
        ImageLoadError,
        IndexFormatError,
        LoaderWorkerError,
        TFPathLoaderError,
        TransformOutputError,
    )
    from .index import PathIndex, build_index, encode_example, write_index
    from .index.tfrecord_interop import enable_tfrecord_interop
    from .load.decode import decode_image, load_image
    from .load.loader import Loader, make_loader
    from .order.sampler import GlobalShuffleSampler
    from .order.spec import OrderSpec
    from .order.state import StateError
    from .tools.audit import audit_ids
    from .tools.demo import make_demo
