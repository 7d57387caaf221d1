"""Importing TensorFlow: quietly, beside the `tfrecord` package, with errors that say what to do.

Used by the tf backend (:mod:`tfpathloader.load.tf_backend`) and the benchmarks' tf.data rows.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from .index.tfrecord_interop import enable_tfrecord_interop

__all__ = ["import_tensorflow"]


def import_tensorflow() -> Any:
    """``import tensorflow``, quietly, with errors that say what to do."""
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        # TensorFlow enters the process: from here on a later `import tfrecord` must not
        # register its messages globally (NOTE [protobuf clash]).
        enable_tfrecord_interop()
    try:
        import tensorflow as tf
    except TypeError as e:  # protobuf: duplicate symbol
        if "duplicate symbol" in str(e):
            raise ImportError(
                "TensorFlow cannot be imported: the 'tfrecord' package was imported on its own "
                "first and registered the same protobuf messages. Call "
                "tfpathloader.enable_tfrecord_interop() before importing tfrecord (see NOTE "
                "[protobuf clash] in tfpathloader/index/tfrecord_interop.py)."
            ) from e
        raise
    except ImportError as e:
        raise ImportError(
            "the tf backend needs TensorFlow: pip install 'tfpathloader[tf-cpu]' (or [tf])"
        ) from e
    return tf
