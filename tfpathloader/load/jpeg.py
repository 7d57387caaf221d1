"""JPEG decoding for the one decode path: libjpeg-turbo, DCT-scaled, region-decoded, into the row.

NOTE [DCT scaling]: libjpeg can run its inverse DCT at 1/2, 1/4 or 1/8 size, which costs far less
than decoding in full and shrinking later. It is used when the box is at least r times the
output on both sides (``dct_scale``), so the resize still shrinks (never enlarges) what it gets.
For RandomResizedCrop(224) on photos (short side 300-500) it applies to about 1% of crops; for
Resize/CenterCrop evaluation pipelines and small outputs, to most.

NOTE [region decode]: a crop that is not DCT-scaled needs only its box. libjpeg-turbo can skip
the rows above and below it and the columns beside it, which nvImageCodec exposes to Python
(``CodeStream(data).get_sub_code_stream(region=Region(...))``; the ``nvimgcodec`` extra, NVIDIA's
library under DALI's decoders, runs on the CPU without a GPU). Its pixels are libjpeg-turbo's,
identical to simplejpeg's full decode cut to the box (0 difference over 152 JPEGs, progressive
and 4:4:4 included), with the accurate or the fast IDCT. Per RandomResizedCrop(224) box of the
3,000 photos of ``benchmarks/photos.py``, one core: 0.77 ms against 0.98 ms for simplejpeg's
whole decode and a slice (0.62 against 0.99 for boxes under 30% of the image); the torch loader,
2 workers: 1.18-1.21 CPU ms per crop against 1.43 (``benchmarks/crop_cost.py``, with and without
``TFPATHLOADER_NVIMGCODEC=0``). Most of what is left is the entropy decoding of every row above
the box's bottom, which a JPEG without restart markers cannot skip: an 8x8 box at the bottom of
a photo costs half of a whole decode. Without nvImageCodec, simplejpeg decodes the whole photo:
the same pixels, slower. Each thread has its own nvImageCodec decoder (one CPU thread each): one
decoder shared by threads gave wrong images or crashed.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np
import simplejpeg

from ..transforms import Plan

__all__ = ["SOI", "dct_scale", "decode", "decode_into", "header", "into_row", "region_decoder"]

SOI = b"\xff\xd8\xff"


def header(data: bytes) -> tuple[int, int, bool] | None:
    """``(height, width, grey)`` of a JPEG libjpeg-turbo decodes here; None for Pillow's
    (CMYK/YCCK, whose colour conversion is Pillow's, and headers it cannot read)."""
    try:
        h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if colorspace not in ("RGB", "YCbCr", "Gray"):
        return None
    return int(h), int(w), colorspace == "Gray"


def dct_scale(plan: Plan, h: int, w: int) -> tuple[int, Plan]:
    """The IDCT scale ``1/r`` (r in 1, 2, 4, 8) for a plan, and the plan in the scaled image."""
    top, left, bh, bw = plan.box
    oh, ow = plan.size
    r = next((r for r in (8, 4, 2) if bh >= r * oh and bw >= r * ow), 1)
    if r == 1:
        return 1, plan
    sh, sw = -(-h // r), -(-w // r)  # libjpeg's scaled size: ceil
    t, lft = min(top // r, sh - 1), min(left // r, sw - 1)
    box = (t, lft, max(1, min(round(bh / r), sh - t)), max(1, min(round(bw / r), sw - lft)))
    return r, Plan(box, plan.size, plan.flip, plan.antialias)


def into_row(plan: Plan, h: int, w: int, grey: bool, channels: int, out: np.ndarray) -> bool:
    """Whether the decoder's own pixels are the result, so it can decode into the row."""
    return (
        not plan.flip
        and plan.box == (0, 0, h, w)
        and plan.size == (h, w)
        and (channels == 3 or grey)
        and out.shape == (h, w, channels)
        and out.flags.c_contiguous
    )


def decode_into(data: bytes, channels: int, out: np.ndarray, fast: bool) -> bool:
    """Decode a whole JPEG straight into ``out`` (see :func:`into_row`); False if refused."""
    try:
        simplejpeg.decode_jpeg(
            data, colorspace="GRAY" if channels == 1 else "RGB", fastdct=fast, buffer=out
        )
    except ValueError:
        return False
    return True


def decode(
    data: bytes, h: int, w: int, grey: bool, plan: Plan, fast: bool
) -> tuple[np.ndarray, Plan] | None:
    """The pixels ``plan`` needs (its region, or a DCT-scaled image) and the plan within them.

    None for a file libjpeg-turbo refuses or warns about: the caller hands it to Pillow, which
    decodes it or names the error (the same in both backends: this is their one path).
    """
    cs = "GRAY" if grey else "RGB"
    r, scaled = dct_scale(plan, h, w)
    try:
        if r > 1:
            arr = simplejpeg.decode_jpeg(
                data, colorspace=cs, fastdct=fast, min_height=-(-h // r), min_width=-(-w // r)
            )
            return arr.reshape(*arr.shape[:2], -1), scaled
        whole = plan.box == (0, 0, h, w)
        region = None if whole else region_decoder()
        if region is not None:
            got = region(data, plan.box, grey, fast)
            if got is not None:
                return got, Plan((0, 0, *got.shape[:2]), plan.size, plan.flip, plan.antialias)
        arr = simplejpeg.decode_jpeg(data, colorspace=cs, fastdct=fast)
        return arr.reshape(*arr.shape[:2], -1), plan
    except ValueError:
        return None


# -- nvImageCodec (optional) -----------------------------------------------------------------

_LOCAL = threading.local()
_NV: Any = None  # the module once imported; False when it is not installed


def _import_nvimgcodec() -> Any:
    """nvImageCodec, quiet (NOTE [quiet nvImageCodec]), or False when it is not installed."""
    global _NV
    if _NV is None:
        if os.environ.get("TFPATHLOADER_NVIMGCODEC", "1") == "0":
            _NV = False
            return _NV
        from ._private import import_nvimgcodec

        _NV = import_nvimgcodec() or False
    return _NV


class _Regions:
    """One thread's nvImageCodec CPU decoder, decoding the box of a JPEG."""

    def __init__(self, nv: Any, fast: bool):
        self.nv = nv
        options = ":fast_idct=1" if fast else ""
        self.decoder = nv.Decoder(
            device_id=nv.NVIMGCODEC_DEVICE_CPU_ONLY,
            max_num_cpu_threads=1,
            backends=[nv.Backend(nv.BackendKind.CPU_ONLY)],
            options=options,
        )
        # EXIF orientation is not applied (as libjpeg-turbo through simplejpeg and Pillow);
        # grey stays one channel.
        self.params = {
            False: nv.DecodeParams(apply_exif_orientation=False),
            True: nv.DecodeParams(
                apply_exif_orientation=False,
                color_spec=nv.ColorSpec.UNCHANGED,
                sample_format=nv.SampleFormat.I_UNCHANGED,
            ),
        }

    def __call__(
        self, data: bytes, box: tuple[int, int, int, int], grey: bool
    ) -> np.ndarray | None:
        top, left, bh, bw = box
        region = self.nv.Region(top, left, top + bh, left + bw)
        stream = self.nv.CodeStream(data).get_sub_code_stream(region=region)
        img = self.decoder.decode(stream, params=self.params[grey])
        if img is None:
            return None  # libjpeg-turbo refused it: the caller decodes it another way
        arr = np.asarray(img)
        return arr.reshape(*arr.shape[:2], -1)


def region_decoder() -> Any:
    """This thread's region decoder ``f(data, box, grey, fast)``, or None without nvImageCodec."""
    nv = _import_nvimgcodec()
    if not nv:
        return None
    decoders = getattr(_LOCAL, "decoders", None)
    if decoders is None or getattr(_LOCAL, "pid", None) != os.getpid():
        decoders = _LOCAL.decoders = {}
        _LOCAL.pid = os.getpid()  # a forked worker makes its own

    def decode(data: bytes, box: tuple[int, int, int, int], grey: bool, fast: bool) -> Any:
        if fast not in decoders:
            decoders[fast] = _Regions(nv, fast)
        return decoders[fast](data, box, grey)

    return decode
