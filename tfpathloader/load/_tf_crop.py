"""The tf backend's decode-aware crop: sizes from headers, boxes planned in numpy, native decode.

NOTE [tf crop]: per batch, the image sizes come from the headers already read for the bomb check
(PNG IHDR, GIF screen, a JPEG's frame header by ``extract_jpeg_shape``); one
``tf.numpy_function`` per batch turns (ids, epoch, sizes) into boxes and flips with the same
numpy code the torch backend runs (:func:`tfpathloader.transforms.plan_batch`), so both backends
use identical boxes. Then, in the grouped map loop, each JPEG decodes only its box
(``decode_and_crop_jpeg``, the IDCT of ``jpeg_dct`` as everywhere in this backend), other formats
decode whole and are sliced; then the torch backend's own resize and flip (NOTE [tf crop resize]).

NOTE [tf crop resize]: the resize is the torch backend's, called per image by
``tf.numpy_function``: torch's uint8 channels-last antialiased bilinear kernel, with the GIL
released while it runs. Measured per 224px crop of the photo set in one thread
(``benchmarks/crop.py --micro``-style, 256 crops): ``tf.image.resize(antialias=True)`` (float,
``scale_and_translate``) made the whole crop cost 2.05-2.09 ms; torch's kernel 1.24-1.37 ms,
near plain bilinear without antialias (1.05-1.11 ms, what hand-written tf.data does). And the
two backends now share one resize: their crops are identical wherever the decoders agree
(99.8% of pixels; ``decode_and_crop_jpeg`` differs from a full decode at a few box edges),
against a mean difference of 0.14-0.17 grey levels with TensorFlow's kernel. The kernel runs on
tf.data's threads, each limited to one OpenMP thread (:func:`_one_omp_thread`): with torch's
default team per call, idle OpenMP threads spin beside the decoders and the crop cost 2.04 ms.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from ..transforms import Plan, Transform, antialias_of, check_pipeline, plan_batch
from ._crop import dct_scale, finish, header_size
from ._tf_ops import map_grouped

__all__ = ["crop_batch", "image_sizes"]


def image_sizes(tf: Any, data: Any) -> tuple[Any, Any]:
    """Heights and widths (int32 ``[B]``) from PNG, GIF and JPEG headers; 0 for others."""
    head24 = tf.strings.substr(data, 0, 24) + bytes(24)

    def field(offset: int) -> Any:
        raw = tf.io.decode_raw(tf.strings.substr(head24, offset, 8), tf.uint8, fixed_length=8)
        return tf.cast(tf.reshape(raw, [-1, 8]), tf.int32)

    png, gif = field(16), field(6)
    png_w = png[:, 0] * 2**24 + png[:, 1] * 2**16 + png[:, 2] * 2**8 + png[:, 3]
    png_h = png[:, 4] * 2**24 + png[:, 5] * 2**16 + png[:, 6] * 2**8 + png[:, 7]
    gif_w, gif_h = gif[:, 0] + gif[:, 1] * 256, gif[:, 2] + gif[:, 3] * 256
    head = tf.strings.substr(head24, 0, 3)
    zero = tf.zeros_like(png_w)
    h = tf.where(head == b"\x89PN", png_h, tf.where(head == b"GIF", gif_h, zero))
    w = tf.where(head == b"\x89PN", png_w, tf.where(head == b"GIF", gif_w, zero))
    jpegs = tf.where(head == b"\xff\xd8\xff")
    hwc = map_grouped(
        tf, tf.io.extract_jpeg_shape, tf.gather_nd(data, jpegs), tf.TensorSpec([3], tf.int32)
    )
    h = tf.tensor_scatter_nd_update(h, jpegs, hwc[:, 0])
    w = tf.tensor_scatter_nd_update(w, jpegs, hwc[:, 1])
    return h, w


def _plan(
    transform: Transform,
    seed: int,
    ids: np.ndarray,
    epoch: np.ndarray,
    h: np.ndarray,
    w: np.ndarray,
    jpeg: np.ndarray,
    data: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, w = np.array(h, dtype=np.int64), np.array(w, dtype=np.int64)  # writable copies
    if data is not None:  # formats without a header TensorFlow parses: Pillow reads it
        for j in np.flatnonzero((h == 0) | (w == 0)):
            size_j = header_size(bytes(data[j]))
            h[j], w[j] = size_j[0], size_j[1]
    h, w = np.maximum(h, 1), np.maximum(w, 1)
    boxes, flips = plan_batch(transform, seed, int(epoch), ids, h, w)
    size = check_pipeline(transform)
    scales = np.zeros(len(ids), dtype=np.int32)  # switch branch: r = 1, 2, 4, 8
    for k in range(len(ids)):
        r, box = dct_scale(tuple(boxes[k].tolist()), size, int(h[k]), int(w[k]))
        if r > 1 and jpeg[k]:  # JPEGs decoded by decode_and_crop_jpeg only
            scales[k] = r.bit_length() - 1
            boxes[k] = box
    return boxes, flips, scales


# OS threads already limited. Not a threading.local: tf.numpy_function gives each call a fresh
# Python thread state on tf.data's threads, so such a marker was lost at every call (and the
# set-up below ran once per image); the OpenMP setting itself lives on with the OS thread.
_LIMITED: set[int] = set()


def _one_omp_thread() -> None:
    """Limit torch's kernels on this (tf.data) thread to one OpenMP thread, once per thread.

    ``omp_set_num_threads`` sets the calling thread's own OpenMP setting; ``torch
    .set_num_threads`` would also change the process-wide default that a training loop in the
    same process uses. Without OpenMP symbols (another torch build) nothing changes.
    """
    tid = threading.get_native_id()
    if tid in _LIMITED:
        return
    _LIMITED.add(tid)
    import torch

    torch.zeros(1).add_(1)  # torch's per-thread set-up first: it would reset the setting
    with contextlib.suppress(AttributeError, OSError):  # torch built without OpenMP
        ctypes.CDLL(None).omp_set_num_threads(1)


def _resize(size: tuple[int, int], antialias: bool, img: np.ndarray, flip: np.bool_) -> Any:
    """One crop to ``size`` by the torch backend's resize (NOTE [tf crop resize]), written by
    the kernel into a new HxWx3 array (no transposing copy for TensorFlow to make)."""
    _one_omp_thread()
    plan = Plan((0, 0, img.shape[0], img.shape[1]), size, bool(flip), antialias)
    return finish(img, plan, 3, np.empty((*size, 3), dtype=np.uint8))


def crop_batch(
    tf: Any,
    transform: Transform,
    seed: int,
    items: dict[str, Any],
    data: Any,
    decode: Callable[[Any, Any], Any],
    cmyk: Any,
    other_formats: bool = False,
    dct_method: str = "INTEGER_ACCURATE",
) -> Any:
    """A batch of encoded images through a pipeline: uint8 ``[B, H, W, 3]``.

    Args:
        tf: The tensorflow module.
        transform: The pipeline.
        seed: The loader's seed.
        items: The batch's ``index`` and ``epoch`` tensors.
        data: Encoded bytes ``[B]``.
        decode: ``decode(data, cmyk)``, the backend's full decoder (3 channels).
        cmyk: Per-image CMYK flags (those decode by ``decode``, whole).
        other_formats: Whether some files may be formats without a header parsed here.
        dct_method: ``decode_and_crop_jpeg``'s IDCT (NOTE [jpeg dct] in _crop.py).
    """
    oh, ow = check_pipeline(transform)
    antialias = antialias_of(transform)
    h, w = image_sizes(tf, data)
    jpeg = tf.logical_and(tf.strings.substr(data, 0, 3) == b"\xff\xd8\xff", tf.logical_not(cmyk))
    inputs = [items["index"], items["epoch"][0], h, w, jpeg] + ([data] if other_formats else [])
    boxes, flips, scales = tf.numpy_function(
        partial(_plan, transform, seed), inputs, [tf.int32, tf.bool, tf.int32], stateful=False
    )
    boxes = tf.ensure_shape(boxes, [None, 4])
    flips = tf.ensure_shape(flips, [None])
    scales = tf.ensure_shape(scales, [None])
    values = {"data": data, "box": boxes, "flip": flips, "scale": scales, "jpeg": jpeg}
    values["cmyk"] = cmyk

    def one(x: dict[str, Any]) -> Any:
        box, d = x["box"], x["data"]

        def crop_decode() -> Any:
            def at(ratio: int) -> Any:
                return lambda: tf.io.decode_and_crop_jpeg(
                    d, box, channels=3, ratio=ratio, dct_method=dct_method
                )

            # The box is in the 1/ratio-scaled image (NOTE [DCT scaling] in _crop.py).
            return tf.switch_case(x["scale"], [at(1), at(2), at(4), at(8)])

        def full_decode() -> Any:
            img = decode(d, x["cmyk"])
            return tf.slice(img, [box[0], box[1], 0], [box[2], box[3], 3])

        img = tf.ensure_shape(tf.cond(x["jpeg"], crop_decode, full_decode), [None, None, 3])
        resize = partial(_resize, (oh, ow), antialias)
        out = tf.numpy_function(resize, [img, x["flip"]], tf.uint8, stateful=False)
        return tf.ensure_shape(out, [oh, ow, 3])

    # One image per loop step, one graph for every batch: the op overhead that map_grouped and
    # the per-batch CMYK switch of the plain decode save (a microsecond an op) is nothing beside
    # a crop's decode and resize, and their copies of this graph (8 per step, x2 for CMYK)
    # made Grappler's optimization before the first batch take 20-60 s on a busy machine.
    return tf.map_fn(
        one, values, fn_output_signature=tf.TensorSpec([oh, ow, 3], tf.uint8), parallel_iterations=2
    )
