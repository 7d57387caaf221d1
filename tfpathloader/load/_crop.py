"""The torch backend's decode-aware crop: header size, plan, decode what the box needs, resize.

NOTE [crop decoder]: measured per image in one process on the photo set (3,000 JPEGs, short side
300-500 px; ``benchmarks/crop.py --micro``), a random-resized crop to 224 costs 2.4 ms the
torchvision way (Pillow decode 1.0 ms, then ``crop().resize()`` 1.3 ms). The resize, not the
decode, is the larger part, so the lever is ``torch.nn.functional.interpolate(mode="bilinear",
antialias=True)`` on a uint8 channels-last view of the box: 0.19 ms for the same output as
Pillow's ``resize`` (a port of Pillow's filter: mean |difference| 0.013, at most 3). For the
decode, ``simplejpeg`` (libjpeg-turbo, wheels on PyPI) is 0.88 ms vs Pillow's 1.0 ms and can
decode at 1/2, 1/4, 1/8 scale in the IDCT (``min_height``/``min_width``), used when the box is
at least twice the output on both sides. Decoding only the box in-process has no good binding:
TensorFlow's ``decode_and_crop_jpeg`` called eagerly costs 3.5 ms with its resize (op dispatch;
and TensorFlow in forked DataLoader workers is unsafe); PyTurboJPEG needs the system
libturbojpeg; Pillow cannot stop decoding early. Without simplejpeg installed (the ``jpeg``
extra), Pillow decodes in full, without DCT scaling: correct, slower, and further from the tf
backend's pixels on the crops it would have scaled. CMYK JPEGs and other formats: Pillow, full
decode, then crop.

NOTE [crop pixels]: the tf backend decodes the same box with ``decode_and_crop_jpeg`` and resizes
with ``tf.image.resize(antialias=...)`` in float: boxes and flips are identical, pixels differ by
rounding and filter details: mean |difference| 0.17 grey levels over 224px crops of 200 photos
(a few pixels at crop borders differ more, up to 42), checked below 1.0 by test_crop.py.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ImageLoadError
from ..transforms import Plan, Transform
from .decode import as_array, decode_pixels, read_file

try:  # optional: the faster JPEG decoder (see NOTE [crop decoder])
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover - depends on the environment
    _simplejpeg = None

__all__ = ["load_cropped", "resize_flip"]

_JPEG = b"\xff\xd8\xff"


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) of a JPEG that simplejpeg decodes to RGB like Pillow, else None."""
    if _simplejpeg is None or data[:3] != _JPEG:
        return None
    try:
        h, w, colorspace, _ = _simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None  # let Pillow decode it, or name the error
    if colorspace not in ("RGB", "YCbCr", "Gray"):
        return None  # CMYK/YCCK: Pillow's conversion (NOTE [pixel rules])
    return int(h), int(w)


def _check_pixels(h: int, w: int, record_id: int, path: str) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit and h * w > limit:
        raise ImageLoadError(
            record_id,
            path,
            f"image is larger than Pillow's decompression-bomb limit ({h * w} pixels)",
        )


def dct_scale(
    box: tuple[int, int, int, int], size: tuple[int, int], h: int, w: int
) -> tuple[int, tuple[int, int, int, int]]:
    """The IDCT scale ``1/r`` (r in 1, 2, 4, 8) for a box, and the box in the scaled image.

    ``r`` is the largest that keeps the box at least the output size on both sides (NOTE [DCT
    scaling]); both backends take it from here, so they decode the same pixels.
    """
    top, left, bh, bw = box
    oh, ow = size
    r = next((r for r in (8, 4, 2) if bh >= r * oh and bw >= r * ow), 1)
    if r == 1:
        return 1, box
    sh, sw = -(-h // r), -(-w // r)  # libjpeg's scaled size: ceil
    t, lft = min(top // r, sh - 1), min(left // r, sw - 1)
    return r, (t, lft, max(1, min(round(bh / r), sh - t)), max(1, min(round(bw / r), sw - lft)))


# NOTE [DCT scaling]: libjpeg can run its inverse DCT at 1/2, 1/4 or 1/8 size, which costs far
# less than decoding in full and shrinking later. It is used only when the box is at least r
# times the output on both sides, so the resize still shrinks (never enlarges) what it gets. The
# scales are the ones TensorFlow's ``ratio`` offers, and the scaled pixels of simplejpeg's
# ``min_height``/``min_width`` and of ``decode_and_crop_jpeg(ratio=r)`` are identical (checked:
# mean |difference| 0), so both backends stay pixel-close. For RandomResizedCrop(224) on the
# photo set it applies to about 1% of crops; for Resize/CenterCrop evaluation pipelines and
# small outputs, to most.


def _decode_jpeg(data: bytes, plan: Plan, h: int, w: int) -> tuple[np.ndarray, Plan]:
    """simplejpeg decode (DCT-scaled when the box allows); the plan mapped onto its pixels."""
    r, box = dct_scale(plan.box, plan.size, h, w)
    if r == 1:
        return _simplejpeg.decode_jpeg(data, colorspace="RGB"), plan
    arr = _simplejpeg.decode_jpeg(
        data, colorspace="RGB", min_height=-(-h // r), min_width=-(-w // r)
    )
    return arr, Plan(box, plan.size, plan.flip, plan.antialias)


def resize_flip(hwc: np.ndarray, size: tuple[int, int], antialias: bool, flip: bool) -> Any:
    """Bilinear resize of an HxWx3 uint8 view to ``size``, mirrored if ``flip``: a torch HWC.

    torch's uint8 channels-last kernel resizes; torch also mirrors, because numpy's copy of a
    reversed HxWx3 view goes pixel by pixel (1.4 ms for a 224px crop, as long as the resize).
    """
    import torch
    import torch.nn.functional as F

    if hwc.shape[:2] == tuple(size):
        out = torch.from_numpy(np.array(hwc))  # a copy: the decoder's buffer may be read-only
    else:
        t = torch.from_numpy(hwc).permute(2, 0, 1)[None]  # channels_last view, no copy
        t = F.interpolate(t, size=size, mode="bilinear", antialias=antialias, align_corners=False)
        out = t[0].permute(1, 2, 0)
    return out.flip(1) if flip else out


def _grey(rgb: np.ndarray) -> np.ndarray:
    """Pillow's RGB -> L formula (NOTE [pixel rules])."""
    x = rgb.astype(np.uint32)
    y = (x[..., 0] * 19595 + x[..., 1] * 38470 + x[..., 2] * 7471 + 32768) >> 16
    return y.astype(np.uint8)[..., None]


def load_cropped(
    path: str,
    transform: Transform,
    rng: np.random.Generator,
    *,
    channels: int,
    record_id: int,
    data: bytes | None = None,
    reader: Any = None,
) -> np.ndarray:
    """One record through a decode-aware pipeline: ``(H, W, channels)`` uint8 (maybe a view).

    Args:
        data: The file's bytes when they were fetched already (a remote root); else the file
            is read with ``reader`` (its size limit and root rule, NOTE [hostile files]).

    Raises:
        ImageLoadError: naming the record, path and cause, as :func:`load_image` would.
    """
    if data is None:
        data = read_file(path, record_id, reader)
    size = _jpeg_size(data)
    arr: Any = None
    if size is not None:
        h, w = size
        _check_pixels(h, w, record_id, path)
        plan = transform.plan(h, w, rng)
        try:
            arr, plan = _decode_jpeg(data, plan, h, w)
        except ValueError:
            arr = None  # corrupt: Pillow decodes it or names the error, as everywhere else
    if arr is None:
        arr = as_array(*decode_pixels(data, channels=3, path=path, record_id=record_id))
        if size is None:
            plan = transform.plan(arr.shape[0], arr.shape[1], rng)
    top, left, bh, bw = plan.box
    crop = arr[top : top + bh, left : left + bw]
    out = resize_flip(crop, plan.size, plan.antialias, plan.flip).numpy()
    return _grey(out) if channels == 1 else out


def header_size(data: bytes) -> tuple[int, int]:
    """(height, width) from an image's header (Pillow reads the header only)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
        except Exception:  # the decoder names the error later
            return 0, 0
    return h, w
