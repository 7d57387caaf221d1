"""The torch backend's JPEG path: read the header, plan, decode into the batch row, crop, resize.

NOTE [crop decoder]: per image, one core, CPU time, on the photo set (short side 300-500 px),
RandomResizedCrop(224) + flip: a torchvision-style ``__getitem__`` (Pillow decode, ``crop``,
``resize``) costs 2.3-2.5 ms; this path 1.3 ms: ``simplejpeg`` decode 0.84 ms (Pillow's 1.18),
the resize 0.14 ms written by the kernel into the batch row (NOTE [resize in the slot]), the
rest seeding, planning and reading. TensorFlow's ``decode_and_crop_jpeg`` decodes only the box
(libjpeg-turbo skips the rows above and below and crops columns), and hand-written tf.data's
whole map function costs 1.07-1.09 ms per image, 0.25 ms less than ours: that is what a region
decode would save. No well-kept PyPI package exposes it to Python with its own libjpeg-turbo:
simplejpeg has no crop; PyTurboJPEG 2.6 is a ctypes wrapper of the *system* libturbojpeg
(not installable by ``pip install``) whose ``decode`` has no region either (its ``crop`` is a
lossless re-encode); ``turbojpeg`` is at 0.0.2; TensorFlow's op called eagerly costs 3.5 ms
(op dispatch, and TensorFlow in forked DataLoader workers is unsafe); Pillow decodes every
row. Across 2 worker processes the path is ahead anyway (``benchmarks/crop.py``: 1.54x the raw
Pillow loop vs hand-written tf.data 1.10x and a plain DataLoader 0.78x on this 2-core machine).
``simplejpeg`` decodes at 1/2, 1/4, 1/8 scale in the IDCT when the box allows (NOTE [DCT
scaling]). Without simplejpeg installed (the ``jpeg`` extra), Pillow decodes in full, without
DCT scaling: correct, slower, and further from the tf backend's pixels on the crops it would
have scaled. PNGs: libspng, full decode, then crop, where it decodes as Pillow does (NOTE [png
decoder] in ``_png.py``). CMYK JPEGs and other formats: Pillow, full decode, then crop.

NOTE [crop pixels]: the tf backend decodes the same box with ``decode_and_crop_jpeg`` and resizes
with this module's ``finish`` (NOTE [tf crop resize] in ``_tf_crop.py``): boxes, flips, DCT
scales and the resize kernel are the same, so pixels differ only where ``decode_and_crop_jpeg``'s
box edges differ from a full decode's: over 224px crops of 200 photos, 99.8% of pixels and 104
crops identical, mean |difference| 0.004 (at most 29; ``benchmarks/crop_parity.py``), checked by
test_crop.py. With ``tf.image.resize`` the mean was 0.17.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
from PIL import Image

from ..transforms import Plan, Transform
from ._png import load_png
from .decode import Pixels, _check_pixels, _grey, as_array, decode_pixels, read_file

try:  # optional: the faster JPEG decoder (see NOTE [crop decoder])
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover - depends on the environment
    _simplejpeg = None

__all__ = [
    "dct_scale",
    "decode_into",
    "finish",
    "header_size",
    "load_cropped",
    "load_jpeg",
    "require_simplejpeg",
]

_JPEG = b"\xff\xd8\xff"


def _jpeg_header(data: bytes) -> tuple[int, int, bool] | None:
    """(height, width, grey) of a JPEG that simplejpeg decodes like Pillow, else None."""
    if _simplejpeg is None or data[:3] != _JPEG:
        return None
    try:
        h, w, colorspace, _ = _simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None  # let Pillow decode it, or name the error
    if colorspace not in ("RGB", "YCbCr", "Gray"):
        return None  # CMYK/YCCK: Pillow's conversion (NOTE [pixel rules])
    return int(h), int(w), colorspace == "Gray"


# NOTE [jpeg dct]: ``jpeg_dct="fast"`` decodes JPEGs with libjpeg's fast integer IDCT (JDCT_IFAST)
# instead of the accurate one (JDCT_ISLOW, Pillow's): what TensorFlow's ``decode_jpeg`` does by
# default, and so what hand-written tf.data pipelines decode. Both backends support it, with the
# same pixels: simplejpeg's ``fastdct=True`` and ``decode_jpeg(dct_method="INTEGER_FAST")`` agree
# exactly (checked on the photo set and by test_jpeg_dct.py). Pillow has no such choice, so in
# the torch backend "fast" needs simplejpeg (the ``jpeg`` extra; a clear error without it), and
# the JPEGs that simplejpeg leaves to Pillow (CMYK, and files libjpeg warns about) decode
# accurately there. Over 300 photos (``benchmarks/jpeg_dct.py``): mean difference 0.96 grey
# levels from the accurate IDCT, at most 20; decode 0.80-0.82 against 0.83-0.84 ms, 2-3% less.


def require_simplejpeg() -> None:
    """Raise a clear ImportError when simplejpeg (needed for ``jpeg_dct="fast"``) is missing."""
    if _simplejpeg is None:
        raise ImportError(
            "jpeg_dct='fast' in the torch backend needs the 'simplejpeg' package (Pillow "
            "decodes with the accurate IDCT only): pip install 'tfpathloader[jpeg]'"
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


def _resized(hwc: np.ndarray, size: tuple[int, int], antialias: bool) -> Any:
    """Bilinear resize of an HxWxC uint8 view to ``size``: a torch HWC tensor (maybe a view).

    torch's uint8 channels-last kernel resizes (NOTE [crop decoder]); torch also mirrors later,
    because numpy's copy of a reversed HxWx3 view goes pixel by pixel (1.4 ms for a 224px crop).
    """
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(hwc)
    if hwc.shape[:2] == tuple(size):
        return t
    t = t.permute(2, 0, 1)[None]  # channels_last view, no copy
    t = F.interpolate(t, size=size, mode="bilinear", antialias=antialias, align_corners=False)
    return t[0].permute(1, 2, 0)


def finish(hwc: np.ndarray, plan: Plan, channels: int, out: np.ndarray | None) -> np.ndarray:
    """Crop ``plan.box`` of decoded HxWxC pixels, resize, mirror, convert, write into ``out``.

    The tf backend resizes its crops with this too (NOTE [tf crop resize] in ``_tf_crop.py``),
    so both backends' pixels match.

    ``out`` (an HxWxC batch row) is written when its shape is the result's; else a new array.
    """
    import torch

    from ._torch.private import resize_into

    top, left, bh, bw = plan.box
    box = hwc[top : top + bh, left : left + bw]
    grey = channels == 1 and hwc.shape[2] == 3
    if out is not None and out.shape == (*plan.size, channels) and not grey:
        # NOTE [resize in the slot]: the resize kernel writes the row itself (no result to
        # copy), and the mirror is done in place: flip's copy of 150 KB then copy_ back costs
        # 0.02 ms, against 0.1 ms for torch's transposing copy it replaces.
        dst = torch.from_numpy(out)
        if box.shape[:2] == plan.size:
            dst.copy_(torch.from_numpy(box))
        else:
            resize_into(torch.from_numpy(box), dst, plan.antialias)
        if plan.flip:
            dst.copy_(dst.flip(1))
        return out
    res = _resized(box, plan.size, plan.antialias)
    if plan.flip:
        res = res.flip(1)  # a copy: torch has no negative strides
    pixels = _grey(res.numpy()) if grey else res.numpy()  # grey after the resize, as tf does
    if out is not None and out.shape == pixels.shape:
        out[...] = pixels
        return out
    return pixels


# NOTE [decode into the slot]: a JPEG that libjpeg-turbo reads to RGB or grey is decoded by
# simplejpeg straight into the batch row that the worker fills (``buffer=``): no Pillow image,
# no ``tobytes`` and no copy. Per 224px RGB JPEG (one process, CPU time): 0.19 ms vs Pillow's
# decode + tobytes 0.26 ms; per photo (short side 300-500): 0.84 vs 1.18 ms. The pixels are
# Pillow's and tf's exactly (all three use libjpeg-turbo's islow IDCT and fancy upsampling;
# checked over both bench sets and by test_decode_fast.py). Grey from a colour JPEG is Pillow's
# formula on the RGB pixels, not libjpeg's Y channel (they differ by rounding).
# NOTE [resize pixels]: ``size=`` resizes a JPEG the way the crop path does: a DCT-scaled decode
# when the image is at least twice the output on both sides (``dct_scale``), then torch's
# antialiased bilinear (a port of Pillow's filter) into the batch row. Measured over 200 photos
# (short side 300-500) to 224x224, one core, CPU time: 1.25-1.44 ms per image, against
# 2.7-3.1 ms for Pillow's decode + ``resize`` that it replaces and 1.46-1.70 ms with no DCT
# scaling; to 64x48, 0.74 vs 1.03 ms. Pixels: without DCT scaling, Pillow's BILINEAR to within
# one grey level (mean |difference| 0.03); the 51 of 200 photos that are DCT-scaled make the
# mean 0.65 against Pillow, up to 86 on a few pixels at sharp edges; to 64x48 (1/4 and 1/8
# scales), mean 2.26. The tf backend runs ``size=`` as ``Resize(size)`` through its crop path,
# with the same ``dct_scale`` and this module's resize (NOTE [tf resize]): its pixels are these
# exactly (test_decode_fast.py).
def load_jpeg(
    data: bytes,
    *,
    channels: int | None,
    size: tuple[int, int] | None,
    out: np.ndarray | None,
    path: str,
    record_id: int,
    fast_dct: bool = False,
) -> np.ndarray | None:
    """A JPEG decoded (and resized to ``size``) into ``out`` when its shape fits, else a new array.

    ``fast_dct``: libjpeg's fast integer IDCT instead of the accurate one (NOTE [jpeg dct]).

    None when simplejpeg is missing or cannot decode the file as Pillow would (CMYK, other
    formats, corrupt data): the caller decodes with Pillow, which names any error.

    Raises:
        ImageLoadError: if the header's size is over Pillow's decompression-bomb limit.
    """
    header = _jpeg_header(data)
    if header is None:
        return None
    h, w, grey = header
    _check_pixels(h, w, record_id, path)
    channels = channels or (1 if grey else 3)  # None: as stored (NOTE [pixel rules])
    out_size = (h, w) if size is None else (int(size[0]), int(size[1]))
    plan = Plan((0, 0, h, w), out_size, False, True)
    try:
        return _render(data, plan, h, w, grey, channels, out, fast_dct)
    except ValueError:
        return None  # corrupt, or a libjpeg warning: Pillow decodes it or names the error


def decode_into(
    data: bytes,
    *,
    channels: int | None,
    size: tuple[int, int] | None,
    out: np.ndarray | None,
    path: str,
    record_id: int,
    fast_dct: bool = False,
) -> Pixels:
    """:func:`load_jpeg` or :func:`load_png` where they apply, else Pillow's
    :func:`decode_pixels` (any format)."""
    arr = load_jpeg(
        data,
        channels=channels,
        size=size,
        out=out,
        path=path,
        record_id=record_id,
        fast_dct=fast_dct,
    )
    if arr is None:
        arr = load_png(data, channels=channels, size=size, out=out, path=path, record_id=record_id)
    if arr is not None:
        return arr, arr.shape
    return decode_pixels(data, channels=channels, size=size, path=path, record_id=record_id)


def _render(
    data: bytes,
    plan: Plan,
    h: int,
    w: int,
    grey: bool,
    channels: int,
    out: np.ndarray | None,
    fast_dct: bool = False,
) -> np.ndarray:
    """simplejpeg decode (DCT-scaled when the box allows), then :func:`_finish` into ``out``."""
    colorspace = "GRAY" if grey and channels == 1 else "RGB"
    how = {"colorspace": colorspace, "fastdct": fast_dct}
    r, box = dct_scale(plan.box, plan.size, h, w)
    whole = r == 1 and plan.box == (0, 0, h, w) and plan.size == (h, w) and not plan.flip
    if whole and (channels == 3 or grey):  # the decoder's pixels are the result: into out
        target = out if out is not None and out.shape == (h, w, channels) else None
        arr = _simplejpeg.decode_jpeg(data, buffer=target, **how)
        return target if target is not None else arr
    if r == 1:
        arr = _simplejpeg.decode_jpeg(data, **how)
    else:
        arr = _simplejpeg.decode_jpeg(data, min_height=-(-h // r), min_width=-(-w // r), **how)
        plan = Plan(box, plan.size, plan.flip, plan.antialias)
    return finish(arr, plan, channels, out)


def load_cropped(
    path: str,
    transform: Transform,
    rng: np.random.Generator,
    *,
    channels: int,
    record_id: int,
    data: bytes | None = None,
    reader: Any = None,
    out: np.ndarray | None = None,
    fast_dct: bool = False,
) -> np.ndarray:
    """One record through a decode-aware pipeline: ``(H, W, channels)`` uint8.

    Args:
        data: The file's bytes when they were fetched already (a remote root); else the file
            is read with ``reader`` (its size limit and root rule, NOTE [hostile files]).
        out: The batch row to write into (returned) when the result has its shape.
        fast_dct: libjpeg's fast integer IDCT instead of the accurate one (NOTE [jpeg dct]).

    Raises:
        ImageLoadError: naming the record, path and cause, as :func:`load_image` would.
    """
    if data is None:
        data = read_file(path, record_id, reader)
    header = _jpeg_header(data)
    if header is not None:
        h, w, grey = header
        _check_pixels(h, w, record_id, path)
        plan = transform.plan(h, w, rng)
        try:
            return _render(data, plan, h, w, grey, channels, out, fast_dct)
        except ValueError:
            pass  # corrupt: Pillow decodes it or names the error, as everywhere else
    arr = None
    if header is None:  # not a JPEG for simplejpeg: maybe a PNG for libspng
        arr = load_png(data, channels=3, size=None, out=None, path=path, record_id=record_id)
    if arr is None:
        arr = as_array(*decode_pixels(data, channels=3, path=path, record_id=record_id))
    if not arr.flags.writeable:
        arr = arr.copy()  # Pillow's bytes: torch warns on (and must not write) read-only memory
    if header is None:
        plan = transform.plan(arr.shape[0], arr.shape[1], rng)
    return finish(arr, plan, channels, out)


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
