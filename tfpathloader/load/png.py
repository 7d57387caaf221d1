"""What a PNG must pass before it is decoded: intact chunks, a sane header, every row present.

NOTE [png checks]: both backends decode a PNG by the one path in :mod:`.decode` (libspng through
``pyspng`` for 8-bit grey, grey+alpha, RGB and RGBA files; Pillow for the rest, or for all when
pyspng is missing), so nothing here models where two decoders disagree. What is left are checks
about hostile or damaged files, which a decoder would otherwise let through:

- **every chunk's CRC** (pyspng asks libspng to skip them; Pillow checks only the chunks before
  the image data): a flipped bit in the pixels of a PNG is otherwise silent. About a
  microsecond per small PNG (``zlib.crc32`` runs at GB/s; the loop is the cost);
- **the chunk walk**: a length over 2^31-1 or past the end of the file (a truncated file), a
  first chunk that is not a 13-byte IHDR, no IEND after the image data (a file cut short after
  its last IDAT);
- **the header's size**, 1 to 2^31-1 on each side, so that the decompression-bomb rule (Pillow's
  pixel limit, checked from the header in :mod:`.decode` before anything is decoded) sees the
  size the decoder will allocate;
- **every row present**, on Pillow's path only (``check_rows``): Pillow leaves the rows of a
  short zlib stream black, without an error, where libspng refuses the file ("IDAT stream too
  short"). The check inflates the stream (bounded by the header's size, which passed the bomb
  rule): 9 us per 28x28 PNG, which is why it runs only where Pillow decodes.

Removed with the second decoder (tf.io's libpng): the ~500 lines that modelled where Pillow and
libpng part (ancillary chunk lengths, APNG sequence rules, libpng's look for the zlib stream's
end, unknown critical chunks). A file that one of them refuses is now refused, with that
decoder's reason, in both backends alike, because both run the same decoder.
"""

from __future__ import annotations

import struct
import zlib

from ..errors import ImageLoadError

__all__ = ["SIGNATURE", "check_png", "check_rows", "png_header"]

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHUNK = struct.Struct(">I4s")
_IHDR = struct.Struct(">IIBBBBB")
_MAX = 0x7FFFFFFF  # the spec's limit on a chunk's length, a width and a height
_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # samples per pixel of each colour type
_ADAM7 = (
    (0, 0, 8, 8),
    (0, 4, 8, 8),
    (4, 0, 8, 4),
    (0, 2, 4, 4),
    (2, 0, 4, 2),
    (0, 1, 2, 2),
    (1, 0, 2, 1),
)
_STEP = 1 << 22  # the row check's output per inflate call: its memory, whatever the image size


def _corrupt(record_id: int, path: str, why: str) -> ImageLoadError:
    return ImageLoadError(record_id, path, f"image is corrupt or truncated: PNG {why}")


def _name(kind: bytes) -> str:
    return repr(kind.decode("latin-1"))


def png_header(data: bytes) -> tuple[int, int, int, int, int]:
    """``(height, width, bit depth, colour type, interlace)`` of a PNG that passed check_png."""
    w, h, depth, colour, _, _, interlace = _IHDR.unpack_from(data, 16)
    return h, w, depth, colour, interlace


def check_png(data: bytes, path: str, record_id: int) -> None:
    """Refuse a PNG with a damaged chunk, a bad header or no end (see NOTE [png checks]).

    Raises:
        ImageLoadError: naming the chunk and what the PNG specification expects of it.
    """
    n, view, unpack, crc32 = len(data), memoryview(data), _CHUNK.unpack_from, zlib.crc32
    pos = 8
    while pos + 12 <= n:
        length, kind = unpack(data, pos)
        end = pos + 8 + length
        if length > _MAX:
            raise _corrupt(
                record_id, path, f"chunk {_name(kind)} has length {length}: expected at most 2^31-1"
            )
        if end + 4 > n:
            raise _corrupt(
                record_id,
                path,
                f"chunk {_name(kind)} of length {length} runs past the end of the file "
                f"(expected {length + 4} bytes of data and CRC, found {n - pos - 8})",
            )
        if crc32(view[pos + 4 : end]) != int.from_bytes(view[end : end + 4], "big"):
            raise _corrupt(record_id, path, f"chunk {_name(kind)} fails its CRC checksum")
        if pos == 8:
            if kind != b"IHDR" or length != 13:
                raise _corrupt(
                    record_id,
                    path,
                    f"starts with chunk {_name(kind)} of length {length}: expected a 13-byte IHDR",
                )
            h, w = png_header(data)[:2]
            if not (0 < w <= _MAX and 0 < h <= _MAX):
                raise _corrupt(
                    record_id, path, f"IHDR says {w}x{h} pixels: expected 1 to 2^31-1 on each side"
                )
        elif kind == b"IEND":
            return
        pos = end + 4
    if pos == 8:
        raise _corrupt(
            record_id, path, "ends inside its signature or header: expected an IHDR chunk"
        )
    raise _corrupt(record_id, path, "ends without its IEND chunk: expected IEND last")


def _filtered_size(h: int, w: int, bits: int, interlaced: bool) -> int:
    """Bytes of the image's filtered rows (a filter byte per row) once inflated."""
    passes = _ADAM7 if interlaced else ((0, 0, 1, 1),)
    size = 0
    for top, left, dy, dx in passes:
        ph, pw = -(-(h - top) // dy), -(-(w - left) // dx)
        if ph > 0 and pw > 0:  # an empty pass has no rows
            size += ph * (1 + (pw * bits + 7) // 8)
    return size


def check_rows(data: bytes, path: str, record_id: int) -> None:
    """Refuse a PNG whose image data holds fewer rows than its header says (Pillow's path).

    Raises:
        ImageLoadError: saying how many bytes of rows the stream holds and how many it needs.
    """
    h, w, depth, colour, interlace = png_header(data)
    if colour not in _SAMPLES:
        return  # Pillow refuses it itself
    size = _filtered_size(h, w, depth * _SAMPLES[colour], interlace == 1)
    z, need, pos, n = zlib.decompressobj(), size, 8, len(data)
    try:
        while need > 0 and pos + 12 <= n and not z.eof:
            length, kind = _CHUNK.unpack_from(data, pos)
            if kind == b"IDAT":
                chunk: bytes | memoryview = memoryview(data)[pos + 8 : pos + 8 + length]
                while chunk and need > 0 and not z.eof:
                    need -= len(z.decompress(chunk, min(need, _STEP)))
                    chunk = z.unconsumed_tail
            pos += 12 + length
    except zlib.error as e:
        raise _corrupt(record_id, path, f"image data (zlib stream) is corrupt: {e}") from None
    if need > 0:
        raise _corrupt(
            record_id,
            path,
            f"image data ends after {size - need} bytes: expected {size} ({h} rows of {w} "
            f"pixels, {depth}-bit colour type {colour}{', Adam7' if interlace else ''}, a "
            "filter byte per row)",
        )
