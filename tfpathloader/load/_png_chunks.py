"""Pillow's readers of ancillary PNG chunks, as rules: why Pillow refuses what libpng ignores.

Used by ``check_png`` (NOTE [png rules] in ``_png_rules``): each function says why Pillow,
decoding a PNG's first frame, would raise on a chunk that libpng only warns about, in the PNG
and APNG specifications' terms.
"""

from __future__ import annotations

import struct
import zlib

from PIL import PngImagePlugin

__all__ = ["APNG", "MIN_LENGTH", "Apng", "check_ancillary", "name"]

APNG = (b"acTL", b"fcTL", b"fdAT")
_IHDR_SIZE = struct.Struct(">II")
# The shortest ancillary chunks Pillow reads ("Truncated gAMA chunk"...); libpng warns only.
MIN_LENGTH = {b"gAMA": 4, b"cHRM": 32, b"sRGB": 1, b"pHYs": 9}
_TRNS = {0: (2, "a 2-byte grey sample"), 2: (6, "three 2-byte samples: red, green, blue")}


def name(kind: bytes) -> str:
    """A chunk type as the messages show it."""
    return repr(kind.decode("latin-1"))


def _too_large(kind: bytes, stream: bytes | memoryview) -> str | None:
    """Why Pillow refuses this compressed text or profile: it inflates past MAX_TEXT_CHUNK."""
    limit = PngImagePlugin.MAX_TEXT_CHUNK
    if len(stream) * 1032 <= limit:
        return None  # deflate inflates at most 1032:1: a short stream cannot get there
    z = zlib.decompressobj()
    try:
        z.decompress(stream, limit)
    except zlib.error:
        return None  # Pillow drops it, as libpng does
    if z.unconsumed_tail:
        return (
            f"chunk {name(kind)} inflates to over {limit} bytes: expected at most that "
            "(Pillow's MAX_TEXT_CHUNK)"
        )
    return None


def check_ancillary(kind: bytes, chunk: memoryview, colour: int) -> str | None:
    """Why Pillow refuses this ancillary chunk (which libpng only warns about), else None."""
    length = len(chunk)
    if kind == b"tRNS":
        need = _TRNS.get(colour)
        if need and length < need[0]:
            return (
                f"chunk 'tRNS' has length {length}: expected {need[0]} for colour type "
                f"{colour} ({need[1]})"
            )
    elif kind in MIN_LENGTH:
        if length < MIN_LENGTH[kind]:
            return f"chunk {name(kind)} has length {length}: expected {MIN_LENGTH[kind]}"
    elif kind == b"iCCP":
        nul = chunk.tobytes().find(b"\0")
        if nul < 0 or nul + 1 >= length:
            return (
                "chunk 'iCCP' ends before its compression method: expected a profile name "
                "(1-79 bytes), a null separator, compression method 0, the compressed profile"
            )
        if chunk[nul + 1]:
            return f"chunk 'iCCP' has compression method {chunk[nul + 1]}: expected 0 (deflate)"
        return _too_large(kind, chunk[nul + 2 :])
    elif kind == b"zTXt":
        nul = chunk.tobytes().find(b"\0")
        if 0 <= nul < length - 1 and chunk[nul + 1]:
            return f"chunk 'zTXt' has compression method {chunk[nul + 1]}: expected 0 (deflate)"
        return _too_large(kind, chunk[nul + 2 :]) if 0 <= nul < length - 1 else None
    elif kind == b"iTXt":  # keyword, NUL, flag, method, language, NUL, keyword, NUL, text
        parts = chunk.tobytes().split(b"\0", 1)
        if len(parts) == 2 and len(parts[1]) >= 2 and parts[1][0] and not parts[1][1]:
            fields = parts[1][2:].split(b"\0", 2)
            return _too_large(kind, fields[2]) if len(fields) == 3 else None
    return None


class Apng:
    """Pillow's APNG chunk readers (acTL, fcTL, fdAT), as far as it reads decoding frame 0."""

    def __init__(self, data: bytes) -> None:
        self.w, self.h = _IHDR_SIZE.unpack_from(data, 16)
        self.frames: int | None = None
        self.seq: int | None = None
        self.box: tuple[int, int, int, int] | None = None
        self.animated = False
        self.reads = True  # Pillow stops reading at an animation's first fcTL after IDAT

    def at_idat(self) -> str | None:
        """At the first IDAT: whether Pillow animates; why its frame 0 is not libpng's image."""
        self.animated = (self.frames or 1) + (self.frames is not None and not self.box) > 1
        if self.box and self.box != (0, 0, self.w, self.h):
            px, py, x1, y1 = self.box
            return (
                f"chunk 'fcTL' before IDAT gives the default image a {x1 - px}x{y1 - py} frame "
                f"at ({px}, {py}): expected the IHDR's {self.w}x{self.h} at (0, 0)"
            )
        return None

    def _next(self, kind: bytes, seq: int, first_ok: bool) -> str | None:
        want = 0 if self.seq is None else self.seq + 1
        if seq != want or (self.seq is None and not first_ok):
            return (
                f"chunk {name(kind)} has sequence number {seq}: expected "
                f"{want if first_ok or self.seq is not None else 'an fcTL first'} (APNG "
                "sequence numbers start at 0 and go up by one)"
            )
        self.seq = seq
        return None

    def chunk(self, kind: bytes, body: memoryview, idat: bool) -> str | None:
        """Why Pillow refuses this APNG chunk (libpng ignores them), else None."""
        length = len(body)
        if kind == b"acTL":
            if length < 8:
                return f"chunk 'acTL' has length {length}: expected 8"
            frames = int.from_bytes(body[:4], "big")
            if self.frames is not None:
                self.frames = None  # a second acTL: Pillow stops animating
            elif 0 < frames <= 0x80000000:
                self.frames = frames
        elif kind == b"fcTL":
            if idat and self.animated:
                self.reads = False
                return None
            if length < 26:
                return f"chunk 'fcTL' has length {length}: expected 26"
            why = self._next(kind, int.from_bytes(body[:4], "big"), True)
            if why:
                return why
            w, h, px, py = struct.unpack_from(">IIII", body, 4)
            if px + w > self.w or py + h > self.h:
                return (
                    f"chunk 'fcTL' places a {w}x{h} frame at ({px}, {py}): expected it inside "
                    f"the {self.w}x{self.h} image"
                )
            if not idat:
                self.box = (px, py, px + w, py + h)
        elif kind == b"fdAT":
            if length < 4:
                return f"chunk 'fdAT' has length {length}: expected its sequence number, 4 bytes"
            why = self._next(kind, int.from_bytes(body[:4], "big"), False)
            if why:
                return why
            if not idat:
                return "chunk 'fdAT' comes before IDAT: expected frame data after the image"
        return None
