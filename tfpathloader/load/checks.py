"""Checks of a loader's loading arguments, its first readable record, and transform output."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ImageLoadError, TransformOutputError
from ..index import PathIndex
from .decode import load_image
from .files import FileReader

if TYPE_CHECKING:
    from .loader import LoaderConfig

__all__ = [
    "check_load_args",
    "check_transform_output",
    "file_reader",
    "infer_channels",
    "probe_shape",
]

ON_ERROR = ("raise", "skip")
JPEG_DCT = ("accurate", "fast")


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


# NOTE [argument types]: a bool is an int and a str is truthy in Python, so `num_workers=True`
# ran one worker and `pin_memory="no"` pinned. Every loading argument is checked by type
# (a bool is not an int, a string is not a bool) and by range, naming the value.
def check_load_args(cfg: LoaderConfig) -> None:
    """The arguments that decide how images are loaded (the order's are checked elsewhere)."""
    if not _is_int(cfg.num_workers) or cfg.num_workers < 0:
        raise ValueError(f"num_workers must be an integer >= 0, got {cfg.num_workers!r}")
    if cfg.channels is not None and (not _is_int(cfg.channels) or cfg.channels not in (1, 3)):
        raise ValueError(f"channels must be 1, 3 or None (as stored), got {cfg.channels!r}")
    if cfg.size is not None and (
        len(cfg.size) != 2 or any(not _is_int(s) or s < 1 for s in cfg.size)
    ):
        raise ValueError(f"size must be (height, width) with positive ints, got {cfg.size!r}")
    if not isinstance(cfg.on_error, str) or cfg.on_error not in ON_ERROR:
        raise ValueError(f"unknown on_error {cfg.on_error!r}; valid: {', '.join(ON_ERROR)}")
    if not isinstance(cfg.jpeg_dct, str) or cfg.jpeg_dct not in JPEG_DCT:
        raise ValueError(
            f"unknown jpeg_dct {cfg.jpeg_dct!r}; valid: 'accurate' (libjpeg's accurate integer "
            "IDCT, Pillow's pixels; the default) or 'fast' (its fast integer IDCT, "
            "TensorFlow's default)"
        )
    if cfg.prefetch_factor is not None and (
        not _is_int(cfg.prefetch_factor) or cfg.prefetch_factor < 1
    ):
        raise ValueError(
            f"prefetch_factor must be an integer >= 1 or None, got {cfg.prefetch_factor!r}"
        )
    for name in ("pin_memory", "persistent_workers"):
        v = getattr(cfg, name)
        if v is not None and not isinstance(v, (bool, np.bool_)):
            raise ValueError(f"{name} must be True, False or None (automatic), got {v!r}")
    if not isinstance(cfg.allow_outside_root, (bool, np.bool_)):
        raise ValueError(
            "allow_outside_root must be True, False or None (the index's), "
            f"got {cfg.allow_outside_root!r}"
        )
    t = cfg.timeout
    if (
        not isinstance(t, (int, float, np.integer, np.floating))
        or isinstance(t, (bool, np.bool_))
        or not 0 <= t < float("inf")  # NaN too
    ):
        raise ValueError(f"timeout must be a finite number of seconds >= 0, got {t!r}")
    if cfg.device is not None and not isinstance(cfg.device, str):
        raise ValueError(f"device must be a device name such as 'cuda' or None, got {cfg.device!r}")
    if not _is_int(cfg.max_file_bytes) or cfg.max_file_bytes < 1:
        raise ValueError(
            f"max_file_bytes must be an integer >= 1 (bytes), got {cfg.max_file_bytes!r}"
        )


def file_reader(index: PathIndex, cfg: LoaderConfig) -> FileReader:
    """The reader both backends open files with: the index root, the limit, the root rule."""
    return FileReader(
        root=index.root,
        allow_outside_root=bool(cfg.allow_outside_root),
        max_file_bytes=int(cfg.max_file_bytes),
    )


# NOTE [first readable record]: make_loader learns the channel count (and the torch backend its
# batch buffer shape) from one image. Record 0 may be the bad one; in skip mode that must not
# stop the loader, so the first readable record among the first few hundred is used. In raise
# mode the error of record 0 is raised at once (the loader would raise it at the first batch).
_PROBE_RECORDS = 256


def probe_shape(
    index: PathIndex, cfg: LoaderConfig, reader: FileReader | None = None
) -> tuple[int, ...]:
    """``H x W x C`` of the first readable record, as ``cfg`` loads it (see NOTE above)."""
    reader = reader or file_reader(index, cfg)
    first: ImageLoadError | None = None
    for i in range(min(len(index), _PROBE_RECORDS)):
        try:
            return load_image(
                index.path(i), channels=cfg.channels, size=cfg.size, record_id=i, reader=reader
            ).shape
        except ImageLoadError as e:
            if cfg.on_error == "raise":
                raise
            first = first or e
    assert first is not None
    raise ValueError(
        f"none of the first {min(len(index), _PROBE_RECORDS)} records could be read (record "
        f"{first.record_id}: {first.cause}); pass channels= to start anyway"
    )


def infer_channels(index: PathIndex, cfg: LoaderConfig | None = None) -> int:
    """Channels of the first readable record as stored: 1 for grey images, 3 for the rest."""
    if cfg is None:
        from ..order.spec import OrderSpec
        from .loader import LoaderConfig

        cfg = LoaderConfig(order=OrderSpec(), on_error="skip")
    return int(probe_shape(index, dataclasses.replace(cfg, channels=None, size=None))[2])


def check_transform_output(img: Any, record_id: int, path: str) -> np.ndarray:
    """A transform's result as an array, or :class:`TransformOutputError` (both backends).

    NOTE [transform dtype]: images are uint8 in both backends (DESIGN §5); tf.data must declare
    the type of a ``numpy_function``'s result before it runs, and casting there silently turned
    a float32 image of 0..1 into zeros and ones while torch delivered float32. So a transform
    must return a ``C x H x W`` uint8 array (normalize on the device, after the batch arrives);
    anything else is refused, naming the record, in torch and in tf alike, in both on_error
    modes (it is a bug in the transform, not a bad image).
    """
    arr = np.asarray(img)
    if arr.dtype != np.uint8 or arr.ndim != 3:
        raise TransformOutputError(
            record_id,
            path,
            f"the transform returned {arr.dtype} of shape {arr.shape}; expected a C x H x W "
            "uint8 array (convert to float after the batch arrives)",
        )
    return arr
