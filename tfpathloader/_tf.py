"""Importing TensorFlow: quietly, beside the `tfrecord` package, with errors that say what to do.

Used by the tf backend (:mod:`tfpathloader.load.tf_backend`) and the benchmarks' tf.data rows.

NOTE [quiet TensorFlow]: importing TensorFlow writes to the process's stderr from C++ before
its logging is set up: absl's "WARNING: All log messages before absl::InitializeLog() is called
are written to STDERR", then oneDNN's and the CPU feature guard's "I0000 ..." lines, twice, and
``TF_CPP_MIN_LOG_LEVEL`` does not hide them (they come before the level is read). They
interleaved with the command line's tables. So, unless the user set ``TF_CPP_MIN_LOG_LEVEL``
(asking for TensorFlow's logs), :func:`import_tensorflow` points file descriptor 2 at a
temporary file while ``import tensorflow`` runs and drops what was written there (or prints it,
if the import fails), and sets ``TF_CPP_MIN_LOG_LEVEL`` so that what TensorFlow logs later is
filtered: 2 (errors still shown) in a user's process, 3 in our own programs
(``tfpathloader`` and ``train.py`` call :func:`quiet_tensorflow_logs` first).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

from .index.tfrecord_interop import enable_tfrecord_interop

__all__ = ["import_tensorflow", "quiet_tensorflow_logs"]

_LEVEL = "TF_CPP_MIN_LOG_LEVEL"
_quiet = False  # set by quiet_tensorflow_logs(): our program, not the user, chose the level


def quiet_tensorflow_logs() -> None:
    """For our command-line programs: TensorFlow logs nothing unless the user asks.

    Unless ``TF_CPP_MIN_LOG_LEVEL`` is set, sets it to 3 and makes :func:`import_tensorflow`
    hide what the import writes to stderr (NOTE [quiet TensorFlow]). Call it before anything
    imports TensorFlow.
    """
    global _quiet
    if _LEVEL not in os.environ:
        os.environ[_LEVEL] = "3"
        _quiet = True


@contextlib.contextmanager
def _stderr_captured() -> Iterator[None]:
    """File descriptor 2 into a temporary file; its text is printed only on an exception."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable stderr: nothing to hide
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            text = sink.read().decode(errors="replace")
            if text:
                sys.stderr.write(text)
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def import_tensorflow() -> Any:
    """``import tensorflow``, quietly, with errors that say what to do."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    quiet = _quiet or _LEVEL not in os.environ  # the user did not ask for TensorFlow's logs
    os.environ.setdefault(_LEVEL, "2")
    # TensorFlow enters the process: from here on a later `import tfrecord` must not
    # register its messages globally (NOTE [protobuf clash]).
    enable_tfrecord_interop()
    try:
        with _stderr_captured() if quiet else contextlib.nullcontext():
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
