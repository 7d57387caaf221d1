"""TensorFlow graph pieces of the tf backend: grouped map loops, header checks, grey conversion."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from .._tf import import_tensorflow
from .decode import read_file
from .files import FileReader

__all__ = ["checked", "grey", "headers", "import_tensorflow", "map_grouped", "read_files"]

_GROUP = 8  # images per step of the read, header and decode loops (see map_grouped)


# NOTE [bomb check]: Pillow refuses an image over its decompression-bomb limit from the
# header, before allocating anything; tf.io decodes first (a 20,000 x 20,000 PNG of zeros is
# 400 KB on disk and 1.2 GB decoded). So a batch's files are read first, and the pixel
# counts in their headers checked before any is decoded: PNG's IHDR (big-endian width and
# height at byte 16) and GIF's screen size (little-endian, byte 6) for the whole batch at
# once, a JPEG's frame header by tf.io.extract_jpeg_shape (markers only) for the JPEGs among
# them. Other formats go through Pillow, which checks itself. Any op per image costs about
# a microsecond inside a loop, so checking each image inside the decode loop, or reading in
# a loop of its own one file per step, cost 10 us per 28x28 PNG (a third of its decode);
# reading (and reading JPEG headers) 8 per loop step costs about 1 us.


def headers(tf: Any, data: Any) -> tuple[Any, Any]:
    """From the headers of PNG, GIF and JPEG bytes: width x height (int64; 0 for other
    formats), and whether the image needs Pillow: a CMYK JPEG (4 components), or any other
    format, whatever its file name says (a BMP named .png)."""
    flat = tf.reshape(data, [-1])
    head24 = tf.strings.substr(flat, 0, 24) + bytes(24)  # long enough for every field

    def field(offset: int) -> Any:
        raw = tf.io.decode_raw(tf.strings.substr(head24, offset, 8), tf.uint8, fixed_length=8)
        return tf.cast(tf.reshape(raw, [-1, 8]), tf.int64)

    png, gif = field(16), field(6)
    png_pixels = (png[:, 0] * 2**24 + png[:, 1] * 2**16 + png[:, 2] * 2**8 + png[:, 3]) * (
        png[:, 4] * 2**24 + png[:, 5] * 2**16 + png[:, 6] * 2**8 + png[:, 7]
    )
    gif_pixels = (gif[:, 0] + gif[:, 1] * 256) * (gif[:, 2] + gif[:, 3] * 256)
    head = tf.strings.substr(head24, 0, 3)
    zero = tf.zeros_like(png_pixels)
    pixels = tf.where(head == b"\x89PN", png_pixels, tf.where(head == b"GIF", gif_pixels, zero))
    jpegs = tf.where(head == b"\xff\xd8\xff")
    hwc = map_grouped(
        tf, tf.io.extract_jpeg_shape, tf.gather_nd(flat, jpegs), tf.TensorSpec([3], tf.int32)
    )
    hwc = tf.cast(hwc, tf.int64)
    pixels = tf.tensor_scatter_nd_update(pixels, jpegs, hwc[:, 0] * hwc[:, 1])
    cmyk = tf.tensor_scatter_nd_update(tf.zeros_like(pixels, tf.bool), jpegs, hwc[:, 2] == 4)
    other = tf.logical_not((head == b"\x89PN") | (head == b"GIF") | (head == b"\xff\xd8\xff"))
    pillow = tf.logical_or(cmyk, other)
    return tf.reshape(pixels, tf.shape(data)), tf.reshape(pillow, tf.shape(data))


def checked(tf: Any, data: Any) -> tuple[Any, Any]:
    """``data``, available only after its headers passed the bomb check; which need Pillow."""
    pixels, cmyk = headers(tf, data)
    limit = Image.MAX_IMAGE_PIXELS or 2**62
    check = tf.debugging.assert_less_equal(
        pixels,
        tf.constant(limit, tf.int64),
        message="image is larger than Pillow's decompression-bomb limit",
    )
    with tf.control_dependencies([check]):
        return tf.identity(data), cmyk


def grey(tf: Any, rgb: Any) -> Any:
    """Pillow's RGB -> L (exact for grey replicated to RGB, too)."""
    x = tf.cast(rgb, tf.int32)
    y = tf.bitwise.right_shift(x[..., 0] * 19595 + x[..., 1] * 38470 + x[..., 2] * 7471 + 32768, 16)
    return tf.cast(y, tf.uint8)[..., None]


def map_grouped(tf: Any, fn: Any, values: Any, spec: Any) -> Any:
    """``tf.map_fn(fn, values)``, 8 elements per loop step when their number allows.

    Every op in a loop step costs about a microsecond (see NOTE [tf pipeline cost]), as
    much as the ops of a small image's read or decode, so steps of 8 run 15-20% faster.
    """
    nest = tf.nest
    n = tf.shape(nest.flatten(values)[0])[0]

    def grouped() -> Any:
        groups = nest.map_structure(
            lambda v: tf.reshape(v, tf.concat([[-1, _GROUP], tf.shape(v)[1:]], 0)), values
        )
        out = tf.map_fn(
            lambda g: tf.stack(
                [fn(nest.map_structure(lambda v, k=k: v[k], g)) for k in range(_GROUP)]
            ),
            groups,
            fn_output_signature=tf.TensorSpec([_GROUP, *spec.shape], spec.dtype),
            parallel_iterations=2,
        )
        return tf.reshape(out, tf.concat([[-1], tf.shape(out)[2:]], 0))

    def one_by_one() -> Any:
        return tf.map_fn(fn, values, fn_output_signature=spec, parallel_iterations=4)

    return tf.cond(n % _GROUP == 0, grouped, one_by_one)


# NOTE [tf reads]: tf.io.read_file opens a FIFO and waits forever, reads /dev/zero until memory
# runs out, and follows any symlink. So the tf backend reads a batch's files in Python, in one
# tf.numpy_function per batch, with the same FileReader (and PNG checksum check) as the PyTorch
# backend: regular files only, the size limit from fstat, the root rule. Measured on the demo
# PNGs (28x28, 2 cores), this is as fast as tf.io.read_file (os.read releases the GIL, and one
# call per batch amortizes the crossing); checking each path in Python first and then reading
# with tf.io.read_file costs a second open per file and leaves a window in which a file can be
# swapped for a FIFO. A bad file makes the batch fail; the loader then names the record with
# the same reader (see _culprit), so the error is the PyTorch backend's, word for word.
def _read_batch(reader: FileReader, paths: np.ndarray) -> np.ndarray:
    out = np.empty(len(paths), dtype=object)
    for k, p in enumerate(paths.tolist()):
        out[k] = read_file(p.decode("utf-8"), -1, reader)
    return out


def read_files(tf: Any, reader: FileReader, paths: Any) -> Any:
    """The bytes of the files at ``paths`` (a 1-D string tensor), read by ``reader``."""
    data = tf.numpy_function(lambda p: _read_batch(reader, p), [paths], tf.string, stateful=False)
    return tf.ensure_shape(data, [None])
