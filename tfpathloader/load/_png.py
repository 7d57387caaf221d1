"""The torch backend's PNG path: libspng (pyspng) decodes the PNGs that Pillow would decode alike.

NOTE [png decoder]: per 28x28 grey PNG of the demo set (10,000 files; one process, CPU time;
``python benchmarks/png_decode.py /tmp/peers/demo/index.tfrecord --channels 1``, min / median
of 5 interleaved rounds), the torch backend's per-batch ``PathIndexDataset._fetch`` costs
35.4 / 36.3 us with this path and 50.6 / 51.6 us with Pillow's decode, against 45.0 / 45.4 us for
the "lean raw" loop (``os.read`` + Pillow); with ``channels=3``, 38.0 vs 68.9 us (lean 45.8).
Per file, ``load_png`` costs 22.4 us (Pillow's ``decode_pixels`` 33.9): libspng's decode 12.2 us,
the zlib check (NOTE [png parity]) 7.0 us, the chunk walk and the copy into the row the rest.
On 224x224 RGB PNGs of photo content (``tools/photos.py``, resized), ``load_png`` takes
1.26 ms (libspng 0.73, the zlib check 0.51) against Pillow's 1.39 ms: still ahead, by less.

Why ``pyspng``: the libspng binding that NVIDIA's StyleGAN2-ADA and StyleGAN3 load their PNG
datasets with (``pyspng.load`` in ``training/dataset.py``, and the many projects built on
them); MIT, one function over ``spng_decode_image``, small enough to read whole; releases in
2021, 2022, 2024, April and December 2025 (0.1.4, libspng 0.7.4 bundled; wheels for Linux
x86_64/aarch64 (glibc and musl), macOS arm64 and Windows, CPython 3.8-3.14; none for Intel
Macs, where the ``png`` extra leaves it out). Its pixels are Pillow's exactly
(5,000 demo files in 1 and 3 channels; grey, RGB, interlaced and odd sizes in
test_decode_png.py; 22,000 fuzzed files: flipped bytes, random row filters, random chunks).
The others: Pillow itself (what this skips), ``cv2.imdecode`` (a 40 MB wheel, BGR, its own
libpng), ``imageio`` (Pillow underneath).

NOTE [png parity]: pyspng asks libspng to skip CRCs and the zlib Adler-32 (``SPNG_CRC_USE``),
and libspng is stricter than Pillow in some places (an unknown critical chunk, a second IHDR,
image data a row short: Pillow leaves the row black) and laxer in others (a bad Adler-32, a tRNS
chunk too short for Pillow). So a file takes this path only when Pillow would decode it, to the
same pixels, and everything else goes to Pillow, which decodes it or names the error as it
always has (the outcomes of tests/hostile_corpus.py and the cases in test_decode_png.py are
unchanged, in both backends): bit depth 8, grey or RGB (interlaced or not); a well-formed
chunk walk from IHDR to IEND with the IDAT chunks together; the CRC of every chunk before the
first IDAT correct (Pillow checks those; ``check_bytes`` checks all of them anyway); only chunks
that Pillow reads without a possible error (the length rules of its ``PngStream`` readers, no
iCCP, zTXt, iTXt or APNG chunks); and a zlib stream that inflates to exactly the image's
filtered rows with a correct Adler-32 (checked here with ``zlib``, bounded by the header's
size, which passed the decompression-bomb rule first). Where libspng still refuses such a file,
Pillow decodes it. Files on which Pillow and libpng (the tf backend) part never get here:
``check_bytes`` refuses them, and Pillow's path refuses a zlib stream libpng would (NOTE [png
rules] in ``_png_rules``), so a file this zlib check sends to Pillow gets tf's outcome too.
"""

from __future__ import annotations

import zlib

import numpy as np
from PIL import PngImagePlugin

from ._png_chunks import MIN_LENGTH
from ._png_rules import CHUNK_HEAD, IHDR, filtered_size
from .decode import _check_pixels, _grey, _resize

try:  # optional: the faster PNG decoder (NOTE [png decoder])
    import pyspng as _pyspng
except ImportError:  # pragma: no cover - depends on the environment
    _pyspng = None

__all__ = ["load_png"]

_START = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR"  # the signature, then a 13-byte IHDR
_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # an IEND chunk, its CRC included
_STEP = 1 << 22  # the zlib check's output per call: its memory, whatever the image's size


def _chunk_ok(kind: bytes, length: int, colour: int) -> bool:
    """Whether Pillow reads this chunk without a possible error, libspng's pixels unchanged."""
    if kind == b"tRNS":
        return length == (2 if colour == 0 else 6)  # alpha is dropped (NOTE [pixel rules])
    if kind in MIN_LENGTH:
        return length >= MIN_LENGTH[kind]
    if kind in (b"PLTE", b"tEXt", b"eXIf"):  # kept as info (a PLTE only matters for mode P)
        return True
    if not kind.isalpha() or kind[0] < 0x61:  # a critical chunk (uppercase first letter)
        return False
    # iCCP, zTXt, iTXt, acTL, fcTL, fdAT: Pillow parses them, and may refuse them.
    return not hasattr(PngImagePlugin.PngStream, "chunk_" + kind.decode("ascii"))


def _walk(data: bytes) -> tuple[int, int, int, bool, bytes] | None:
    """(height, width, channels, interlaced, zlib stream) of a PNG fit for libspng, else None."""
    if data[:16] != _START or len(data) < 57:  # IHDR, IDAT and IEND need 57 bytes
        return None
    w, h, depth, colour, method, filtering, interlace = IHDR.unpack_from(data, 16)
    if depth != 8 or colour not in (0, 2) or method or filtering or interlace > 1 or not w * h:
        return None
    view, unpack, n = memoryview(data), CHUNK_HEAD.unpack_from, len(data)
    if zlib.crc32(view[12:29]) != int.from_bytes(view[29:33], "big"):
        return None  # Pillow checks the CRCs of the chunks before the image data
    length, kind = unpack(data, 33)
    if kind == b"IDAT" and data[45 + length : 57 + length] == _IEND:  # the common layout
        return h, w, 1 if colour == 0 else 3, bool(interlace), data[41 : 41 + length]
    parts: list[memoryview] = []
    pos, after, text = 33, False, 0  # after: past the IDAT run
    while True:
        if pos + 12 > n:
            return None  # no IEND
        length, kind = unpack(data, pos)
        end = pos + 8 + length
        if end + 4 > n:
            return None
        if kind == b"IDAT":
            if after:
                return None  # IDATs apart
            parts.append(view[pos + 8 : end])
        elif kind == b"IEND":
            if length or not parts:
                return None
            break
        else:
            if parts:
                after = True
            elif zlib.crc32(view[pos + 4 : end]) != int.from_bytes(view[end : end + 4], "big"):
                return None
            if not _chunk_ok(kind, length, colour):
                return None
            text += length if kind == b"tEXt" else 0
        pos = end + 4
    if text > PngImagePlugin.MAX_TEXT_MEMORY:
        return None
    stream = parts[0].tobytes() if len(parts) == 1 else b"".join(parts)
    return h, w, 1 if colour == 0 else 3, bool(interlace), stream


def _stream_ok(stream: bytes, size: int) -> bool:
    """Whether the zlib stream ends, with a correct Adler-32, after exactly ``size`` bytes."""
    z = zlib.decompressobj()
    try:
        if size < _STEP:  # one call, with room for one byte too many (to see a longer stream)
            return len(z.decompress(stream, size + 1)) == size and z.eof
        left = size + 1
        while left > 0 and not z.eof:
            out = z.decompress(stream, min(left, _STEP))
            left -= len(out)
            if not out:
                break  # the input is spent: the stream is cut short (or just ended)
            stream = z.unconsumed_tail
    except zlib.error:
        return False
    return z.eof and left == 1


def load_png(
    data: bytes,
    *,
    channels: int | None,
    size: tuple[int, int] | None,
    out: np.ndarray | None,
    path: str,
    record_id: int,
) -> np.ndarray | None:
    """A PNG decoded by libspng (resized to ``size``) into ``out`` when its shape fits, else a
    new array (NOTE [png decoder]).

    None when pyspng is missing or the file is not one that libspng decodes as Pillow does
    (NOTE [png parity]): the caller decodes with Pillow, which names any error.

    Raises:
        ImageLoadError: if the header's size is over Pillow's decompression-bomb limit.
    """
    if _pyspng is None:
        return None
    png = _walk(data)
    if png is None:
        return None
    h, w, c, interlaced, stream = png
    _check_pixels(h, w, record_id, path)
    if not _stream_ok(stream, filtered_size(h, w, 8 * c, interlaced)):
        return None
    try:
        arr = _pyspng.load(data, "L" if c == 1 else "RGB")
    except (RuntimeError, ValueError):
        return None
    if arr.shape[:2] != (h, w):
        return None
    hwc = arr[:, :, None] if c == 1 else arr
    channels = channels or c
    want = (h, w) if size is None else (int(size[0]), int(size[1]))
    if want == (h, w) and out is not None and out.shape == (h, w, channels):
        out[...] = _grey(hwc) if channels < c else hwc  # grey -> RGB broadcasts
        return out
    if channels < c:
        hwc = _grey(hwc)
    elif channels > c:
        hwc = np.repeat(hwc, 3, axis=2)
    if want != (h, w):
        hwc = _resize(hwc, want)  # Pillow's bilinear, as decode_pixels resizes
        if out is not None and out.shape == hwc.shape:
            out[...] = hwc
            return out
    return hwc
