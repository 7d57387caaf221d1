"""The PNG rules both backends enforce, where Pillow and libpng (tf.io) would part.

NOTE [png rules]: Pillow (the torch backend, ``verify``, and the tf backend's error messages)
and libpng (``tf.io.decode_png``) disagree about malformed PNGs, so a file could load in one
backend and fail in the other. ``check_png`` (run by ``check_bytes`` on the bytes both
backends read, before either decoder) refuses, in the PNG specification's terms:

- what libpng refuses and Pillow loads: a first chunk that is not a 13-byte IHDR, a second
  IHDR, an IHDR with a bit depth or colour type the spec does not define, compression or
  filter method other than 0, interlace method other than 0 or 1, a width or height of 0 or
  over libpng's limit of 1,000,000; a chunk type that is not four ASCII letters; an unknown
  critical chunk (uppercase first letter); a chunk length over 2^31-1 or past the end of the
  file; no IEND after the image data; for colour type 3, no PLTE before IDAT, a PLTE that is
  not 1-256 three-byte entries; a second PLTE; an empty PLTE before IDAT in a truecolour PNG;
- what Pillow refuses and libpng loads (it only warns about a bad ancillary chunk): a tRNS
  shorter than the colour type's samples (2 bytes for grey, 6 for truecolour), gAMA, cHRM,
  sRGB or pHYs shorter than their fields (4, 32, 1, 9 bytes), an iCCP without a null-terminated
  name followed by compression method 0, a zTXt with a compression method other than 0, an
  iCCP, zTXt or compressed iTXt inflating past Pillow's MAX_TEXT_CHUNK (1 MiB: inflated here
  only where the compressed size allows it, 13 us per 3 KB profile);
- APNG chunks, as Pillow reads them to decode frame 0 (libpng ignores them): an acTL under 8
  bytes, an fcTL under 26 or with a frame outside the image, an fdAT under 4 bytes, an fcTL
  or fdAT out of sequence (0, 1, 2... from the first fcTL); and, where their pixels would
  differ, an fdAT before IDAT or an fcTL before IDAT whose frame is not the whole image
  (Pillow decodes that frame, libpng the image). Pillow stops reading an animation at its
  first fcTL after IDAT, so its rules stop there too (libpng's go on to IEND).

Nothing that both load to the same pixels is refused (but an fdAT before IDAT holding IDAT's
own data): a PLTE in a truecolour PNG, a tRNS or gAMA longer than its fields, IDATs apart,
data after the zlib stream or after IEND, an IEND with data pass. A PNG that ends before any
IDAT (a header only) is left to the decoders, which both refuse it ("cannot identify image
file"). ``benchmarks/png_fuzz.py`` (CRCs right): of 4,000 PNGs with random chunks (seed 7),
1,490 parted before these rules (7 with a bare IndexError), none after (8,000, seeds 7-8);
Pillow-written PNGs and APNGs of every mode pass.

Two more need the image data inflated: fewer filtered rows than the header's size, and a zlib
stream without its end (end code and Adler-32) where libpng looks for it. libpng refuses both;
Pillow leaves missing rows black and stops once it has every row. libpng's look is narrow: it
reads the IDATs 8 KiB at a time and, once it has every row, makes one inflate call on what is
left of that read (or the next one) and accepts the file if that gives neither more data nor an
error, so a stream cut short in a later IDAT loads; ``check_stream`` makes the same calls
(``png_fuzz.py --kind streams``: 1,024 of 4,000 parted before, none of 8,000 after). The
inflate costs 8.8 us per 28x28 demo PNG (Pillow's decode: 34 us; ``check_bytes``: 2.8) and 520
us per 224x224 photo PNG (Pillow: 1.37 ms), one process, CPU time
(``benchmarks/png_rules.py``), so ``check_bytes`` does not inflate: libpng checks in the tf
backend, the torch backend's libspng path inflates anyway (``_png._stream_ok``, and sends a
file it doubts to Pillow), and only Pillow's path (``decode_pixels``: ``verify``, the tf
backend naming a failed record, and PNGs libspng does not take, or no pyspng) pays for
``check_stream``, after decoding. A stream with more surplus data than its rows plus 1 MiB is
accepted without inflating the rest (libpng would inflate it all: minutes for a zlib bomb).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

from ..errors import ImageLoadError
from ._png_chunks import APNG, Apng, check_ancillary, name

__all__ = ["CHUNK_HEAD", "IHDR", "check_png", "check_stream", "filtered_size"]

CHUNK_HEAD = struct.Struct(">I4s")
IHDR = struct.Struct(">IIBBBBB")
_MAX_LENGTH = 0x7FFFFFFF  # the spec's limit on a chunk's length (and on width and height)
_LIBPNG_MAX = 1_000_000  # libpng's default user limit on width and height (PNG_USER_*_MAX)
# Bit depths the spec allows per colour type, and samples per pixel.
_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Adam7's passes: (first row, first column, row step, column step).
_ADAM7 = (
    (0, 0, 8, 8),
    (0, 4, 8, 8),
    (4, 0, 8, 4),
    (0, 2, 4, 4),
    (2, 0, 4, 2),
    (0, 1, 2, 2),
    (1, 0, 2, 1),
)
_STEP = 1 << 22  # the stream check's output per call: its memory, whatever the image's size
_READ = 8192  # libpng's IDAT reads (PNG_IDAT_READ_SIZE)
_LOOK = 1024  # libpng's output per call once it has every row (PNG_INFLATE_BUF_SIZE)


def _corrupt(record_id: int, path: str, why: str) -> ImageLoadError:
    return ImageLoadError(record_id, path, f"image is corrupt: PNG {why}")


def _truncated(record_id: int, path: str, why: str) -> ImageLoadError:
    return ImageLoadError(record_id, path, f"image is corrupt or truncated: PNG {why}")


def _check_ihdr(data: bytes, length: int, kind: bytes, path: str, record_id: int) -> int:
    """The colour type of the first chunk, once it is a valid IHDR."""
    if kind != b"IHDR":
        raise _corrupt(record_id, path, f"starts with chunk {name(kind)}: expected IHDR first")
    if length != 13:
        raise _corrupt(record_id, path, f"chunk 'IHDR' has length {length}: expected 13")
    w, h, depth, colour, method, filtering, interlace = IHDR.unpack_from(data, 16)
    for side, n in (("width", w), ("height", h)):
        if not 0 < n <= _LIBPNG_MAX:
            raise _corrupt(
                record_id,
                path,
                f"IHDR {side} is {n}: expected 1 to {_LIBPNG_MAX:,} (libpng's limit; the "
                "spec's is 2^31-1)",
            )
    if depth not in _DEPTHS.get(colour, ()):
        allowed = _DEPTHS.get(colour)
        expected = f"one of {allowed}" if allowed else "colour type 0, 2, 3, 4 or 6"
        why = f"IHDR has bit depth {depth}, colour type {colour}: expected {expected}"
        raise _corrupt(record_id, path, why)
    if method:
        raise _corrupt(
            record_id, path, f"IHDR has compression method {method}: expected 0 (deflate)"
        )
    if filtering:
        raise _corrupt(
            record_id,
            path,
            f"IHDR has filter method {filtering}: expected 0 (adaptive filtering)",
        )
    if interlace > 1:
        raise _corrupt(
            record_id,
            path,
            f"IHDR has interlace method {interlace}: expected 0 (none) or 1 (Adam7)",
        )
    return colour


def check_png(data: bytes, path: str, record_id: int) -> None:
    """Refuse a PNG that one decoder would load and the other refuse (NOTE [png rules]), or
    whose chunk CRCs are wrong (NOTE [png checksums]). ``data`` starts with the signature.

    Raises:
        ImageLoadError: naming the chunk and what the PNG specification expects of it.
    """
    n = len(data)
    view, unpack, crc32 = memoryview(data), CHUNK_HEAD.unpack_from, zlib.crc32
    pos, plte, idat, colour = 8, False, False, -1
    apng: Apng | None = None  # made at the first APNG chunk (NOTE [png rules])
    while pos + 12 <= n:
        length, kind = unpack(data, pos)
        if length > _MAX_LENGTH:
            raise _corrupt(
                record_id,
                path,
                f"chunk {name(kind)} has length {length}: expected at most 2^31-1",
            )
        end = pos + 8 + length
        if end + 4 > n:
            raise _truncated(
                record_id,
                path,
                f"chunk {name(kind)} of length {length} runs past the end of the file "
                f"(expected {length + 4} bytes of data and CRC, found {n - pos - 8})",
            )
        if crc32(view[pos + 4 : end]) != int.from_bytes(view[end : end + 4], "big"):
            raise _corrupt(record_id, path, f"chunk {name(kind)} fails its CRC checksum")
        if pos == 8:
            colour = _check_ihdr(data, length, kind, path, record_id)
        elif kind == b"IDAT":
            if colour == 3 and not plte:
                raise _corrupt(
                    record_id, path, "colour type 3 (indexed) has no PLTE chunk before IDAT"
                )
            why = apng.at_idat() if apng and not idat else None
            if why:
                raise _corrupt(record_id, path, why)
            idat = True
        elif kind == b"IEND":
            return
        elif not kind.isalpha():
            raise _corrupt(record_id, path, f"chunk type {name(kind)}: expected 4 ASCII letters")
        elif kind[0] < 0x61:  # a critical chunk (uppercase first letter)
            if kind == b"PLTE":
                if plte:
                    raise _corrupt(record_id, path, "has a second PLTE chunk: expected one")
                bad = (colour == 3 and (length % 3 or length > 768)) or (colour & 2 and not length)
                if bad and not idat:  # after IDAT, libpng ignores it: "out of place"
                    raise _corrupt(
                        record_id,
                        path,
                        f"chunk 'PLTE' has length {length}: expected 1 to 256 entries of 3 bytes",
                    )
                plte = True
            elif kind == b"IHDR":
                raise _corrupt(record_id, path, "has a second IHDR chunk: expected one")
            else:
                raise _corrupt(
                    record_id,
                    path,
                    f"chunk {name(kind)} is critical (uppercase first letter) and unknown: "
                    "expected IHDR, PLTE, IDAT, IEND or ancillary chunks",
                )
        elif apng is None or apng.reads:  # an ancillary chunk that Pillow reads
            if kind in APNG:
                apng = apng or Apng(data)
                why = apng.chunk(kind, view[pos + 8 : end], idat)
            else:
                why = check_ancillary(kind, view[pos + 8 : end], colour)
            if why:
                raise _corrupt(record_id, path, why)
        pos = end + 4
    if idat:
        raise _truncated(record_id, path, "ends without its IEND chunk: expected IEND last")


def filtered_size(h: int, w: int, bits: int, interlaced: bool) -> int:
    """Bytes of the image's filtered rows (a filter byte per row) once inflated."""
    if not interlaced:
        return h * (1 + (w * bits + 7) // 8)
    size = 0
    for top, left, dy, dx in _ADAM7:
        ph, pw = -(-(h - top) // dy), -(-(w - left) // dx)
        if ph > 0 and pw > 0:  # an empty pass has no rows
            size += ph * (1 + (pw * bits + 7) // 8)
    return size


def _pieces(data: bytes) -> Iterator[memoryview]:
    """The image data as libpng reads it: the first run of IDAT chunks, 8 KiB at a time."""
    view, pos, n, started = memoryview(data), 8, len(data), False
    while pos + 12 <= n:
        length, kind = CHUNK_HEAD.unpack_from(data, pos)
        if kind != b"IDAT":
            if started:
                return
        else:
            started = True
            for at in range(pos + 8, min(pos + 8 + length, n), _READ):
                yield view[at : min(at + _READ, pos + 8 + length)]
        pos += 12 + length


def check_stream(data: bytes, path: str, record_id: int) -> None:
    """Refuse a PNG (one ``check_png`` passed) whose image data libpng finds too short:
    fewer rows than its header says, or no end to the zlib stream where libpng looks for it.
    Pillow loads both (NOTE [png rules]).

    Raises:
        ImageLoadError: saying what the stream holds and what the header expects.
    """
    if len(data) < 33 or data[12:16] != b"IHDR" or data[16 + 9] not in _SAMPLES:
        return  # not a header check_png passes: Pillow decoded it anyway (decode_image)
    w, h, depth, colour, _, _, interlace = IHDR.unpack_from(data, 16)
    size = filtered_size(h, w, depth * _SAMPLES[colour], interlace == 1)
    z, pieces, need = zlib.decompressobj(), _pieces(data), size
    tail: bytes | memoryview = b""
    try:  # the rows, as libpng inflates them
        while need > 0 and not z.eof:
            if not tail:
                tail = next(pieces, b"")
                if not tail:
                    break
            need -= len(z.decompress(tail, min(need, _STEP)))
            tail = z.unconsumed_tail
    except zlib.error as e:
        raise _truncated(record_id, path, f"image data (zlib stream) is corrupt: {e}") from None
    if need > 0:
        raise _truncated(
            record_id,
            path,
            f"image data ends after {size - need} bytes: expected {size} ({h} rows of {w} "
            f"pixels, {depth}-bit colour type {colour}{', Adam7' if interlace else ''}, a "
            "filter byte per row)",
        )
    extra = 0
    while not z.eof:  # libpng's look for the stream's end once it has every row
        if not tail:
            tail = next(pieces, b"")
            if not tail:
                raise _truncated(
                    record_id,
                    path,
                    "image data (zlib stream) ends before its end code and Adler-32 checksum",
                )
        try:
            out = len(z.decompress(tail, _LOOK))
        except zlib.error:
            return  # libpng: a warning, once it has every row
        tail = z.unconsumed_tail
        if not out and not extra:
            return  # libpng stops looking at one call that gives nothing more
        extra += out
        if extra > size + (1 << 20):
            return  # far more data than rows: accepted (see the NOTE)
