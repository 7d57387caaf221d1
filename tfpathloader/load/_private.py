"""Every private or undocumented API the loaders use, in one place; each fails loudly, by name.

NOTE [private API]: what the public APIs cannot do, each checked here at the call (never by an
``assert``, which ``python -O`` removes, nor by a ``getattr`` default that would turn a rename
into a silent no-op) and guarded by ``tests/unit/test_private.py``:

- ``torch.ops.aten._upsample_bilinear2d_aa.out`` (and ``upsample_bilinear2d.out``): the kernel
  behind ``F.interpolate(mode="bilinear", antialias=...)``, writing into a given tensor, so a
  crop is resized straight into its HWC batch row. ``F.interpolate`` has no ``out=``, and its
  result is NCHW-contiguous even for a channels-last input, so the copy into the row was a
  transposing one: per 224px crop of a photo, 0.14 ms with ``out=`` against 0.31 ms for
  ``interpolate`` + ``copy_`` (one core, CPU time). An ``out=`` op may reallocate a tensor of
  the wrong shape instead of writing it: that would leave stale pixels in the row, so the data
  pointer is checked after every call.
- ``omp_set_num_threads`` of the OpenMP runtime torch loads, called through ``ctypes`` on
  tf.data's threads (NOTE [one OpenMP thread]).
- nvImageCodec's log: the ``nvimgcodec`` wheel loads its GPU extensions at import and prints a
  line for each CUDA library it cannot find (NOTE [quiet nvImageCodec]).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["PrivateAPIError", "import_nvimgcodec", "one_openmp_thread", "resize_into"]


class PrivateAPIError(RuntimeError):
    """A private API of torch or nvImageCodec changed: names the API and what was expected."""


def _resize_op(antialias: bool) -> Any:
    import torch

    name = "_upsample_bilinear2d_aa" if antialias else "upsample_bilinear2d"
    try:
        return getattr(torch.ops.aten, name).out
    except (AttributeError, RuntimeError) as e:
        raise PrivateAPIError(
            f"torch {torch.__version__} has no torch.ops.aten.{name}.out, the resize kernel "
            "tfpathloader writes batch rows with; please report it with your torch version"
        ) from e


def resize_into(box: np.ndarray, dst: np.ndarray, antialias: bool) -> None:
    """Bilinear resize of an HxWxC uint8 array into ``dst`` (HxWxC, contiguous), in place.

    The pixels are ``F.interpolate(mode="bilinear", align_corners=False, antialias=...)``'s.

    Raises:
        PrivateAPIError: if the kernel is missing or wrote somewhere other than ``dst``.
    """
    import torch

    src = torch.from_numpy(box).permute(2, 0, 1)[None]
    d = torch.from_numpy(dst).permute(2, 0, 1)[None]
    ptr = d.data_ptr()
    _resize_op(antialias)(src, list(dst.shape[:2]), False, None, None, out=d)
    if d.data_ptr() != ptr:
        raise PrivateAPIError(
            f"torch {torch.__version__}: the resize kernel reallocated its out= tensor instead "
            "of writing the batch row; please report it with your torch version"
        )


# NOTE [one OpenMP thread]: torch runs a kernel on a team of OpenMP threads, as many as the
# cores. On tf.data's threads, which already run a batch each in parallel, every resize and
# mirror then woke a team whose idle threads spun beside the decoders: per crop of a photo the
# mirror alone took 1.7 ms and the copy 1.4 ms, against 0.02 ms on one thread (a loaded 2-core
# machine). ``torch.set_num_threads(1)`` would do, but it is the process's setting, which the
# training loop in the same process uses; ``omp_set_num_threads`` sets the calling thread's own
# (an OpenMP ICV per thread), so each tf.data thread is limited once, after torch's per-thread
# set-up (which would reset it). Worker processes use ``torch.set_num_threads(1)``: they are
# the parallelism, and the process is theirs. A torch without OpenMP symbols changes nothing.
_OMP: list[Any] = []  # omp_set_num_threads, once found (empty: not looked up yet)


def one_openmp_thread() -> None:
    """Run torch's kernels on the calling (non-main) thread with one OpenMP thread."""
    import torch

    if threading.current_thread() is threading.main_thread() or torch.get_num_threads() == 1:
        return
    if not _OMP:
        _OMP.append(getattr(ctypes.CDLL(None), "omp_set_num_threads", None))
    if _OMP[0] is not None:
        torch.zeros(1).add_(1)  # torch's per-thread set-up first: it would reset the setting
        _OMP[0](1)


# NOTE [quiet nvImageCodec]: importing ``nvidia.nvimgcodec`` without CUDA prints, on the C
# stderr, a line per GPU extension whose CUDA library is missing (nvjpeg, nvjpeg2k, nvtiff) and
# OpenCV warnings; a decode that fails prints an [ERROR] line. A training log is not the place:
# the import runs with file descriptor 2 pointed at /dev/null, and the Python-side verbosity is
# set to errors only (``PYNVIMGCODEC_VERBOSITY``, ``OPENCV_LOG_LEVEL``, unless the user set
# them). ``TFPATHLOADER_NVIMGCODEC=0`` turns nvImageCodec off (then simplejpeg decodes alone).
@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_nvimgcodec() -> Any:
    """``nvidia.nvimgcodec``, imported quietly (NOTE [quiet nvImageCodec]); None if missing."""
    os.environ.setdefault("PYNVIMGCODEC_VERBOSITY", "0")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")
    try:
        with _quiet_stderr():
            from nvidia import nvimgcodec
    except ImportError:
        return None
    if not hasattr(nvimgcodec, "NVIMGCODEC_DEVICE_CPU_ONLY"):
        raise PrivateAPIError(
            f"nvImageCodec {getattr(nvimgcodec, '__version__', '?')} has no "
            "NVIMGCODEC_DEVICE_CPU_ONLY; tfpathloader needs nvImageCodec >= 0.9 (or set "
            "TFPATHLOADER_NVIMGCODEC=0)"
        )
    return nvimgcodec
