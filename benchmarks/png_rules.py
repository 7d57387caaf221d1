"""Cost of the PNG rules (NOTE [png rules]) per file, one process, CPU time, beside the decoders.

Not a test: run it by hand and quote its numbers. For the PNGs under each folder given (up
to ``--files``), rounds interleaved (min / median of ``--rounds``), microseconds per file:

- ``check_bytes (CRCs only)``: the chunk walk before the rules (main before this change).
- ``check_bytes``: the same walk with the structural rules, as both backends run it.
- ``check_bytes, iCCP``: the same, each PNG given a 3 KB ICC profile (an iCCP chunk, which
  ``check_bytes`` inflates: Pillow's MAX_TEXT_CHUNK rule).
- ``check_stream``: the inflate that models libpng's zlib checks (Pillow's path runs it).
- ``Pillow decode_pixels``: Pillow's decode with ``check_stream`` after it, and ``... without``.
- ``load_png``: the torch backend's libspng path (its own zlib check included).
- ``tf.io.decode_png``: TensorFlow's decode (eager, one op per file: its dispatch included).

    python benchmarks/png_rules.py /tmp/peers/demo/train /tmp/pngparity/p224 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import struct
import time
import zlib
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from tfpathloader.load import _png, decode
from tfpathloader.load._png_rules import check_stream
from tfpathloader.load.decode import check_bytes, decode_pixels

_HEAD = struct.Struct(">I4s")


def crcs_only(data: bytes) -> None:
    """``check_bytes`` as it was before the rules: every chunk's CRC."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return
    n, pos, unpack = len(data), 8, _HEAD.unpack_from
    view = memoryview(data)
    while pos + 12 <= n:
        length, kind = unpack(data, pos)
        end = pos + 8 + length
        if end + 4 > n:
            return
        if zlib.crc32(view[pos + 4 : end]) != int.from_bytes(view[end : end + 4], "big"):
            raise ValueError("CRC")
        if kind == b"IEND":
            return
        pos = end + 4


def _with_icc(icc: dict[int, bytes], d: bytes) -> None:
    check_bytes(icc[id(d)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    import tensorflow as tf

    for folder in args.folders:
        paths = sorted(Path(folder).rglob("*.png"))[: args.files]
        datas = [p.read_bytes() for p in paths]
        nibbles = np.random.default_rng(0).integers(0, 16, 3000, np.uint8).tobytes()
        profile = b"icc\0\0" + zlib.compress(nibbles)
        iccp = struct.pack(">I", len(profile)) + b"iCCP" + profile
        iccp += struct.pack(">I", zlib.crc32(b"iCCP" + profile))
        with_icc = {id(d): d[:33] + iccp + d[33:] for d in datas}

        def pillow_without(d: bytes) -> object:
            real = decode.check_stream
            decode.check_stream = lambda *a: None
            try:
                return decode_pixels(d)
            finally:
                decode.check_stream = real

        rows: dict[str, Callable[[bytes], object]] = {
            "check_bytes (CRCs only)": crcs_only,
            "check_bytes": check_bytes,
            "check_bytes, iCCP": partial(_with_icc, with_icc),
            "check_stream": lambda d: check_stream(d, "", 0),
            "Pillow decode_pixels": decode_pixels,
            "Pillow ... without": pillow_without,
            "load_png": lambda d: _png.load_png(
                d, channels=None, size=None, out=None, path="", record_id=0
            ),
            "tf.io.decode_png": lambda d: tf.io.decode_png(d),
        }
        times: dict[str, list[float]] = {k: [] for k in rows}
        for _ in range(args.rounds):
            for name, fn in rows.items():
                t = time.process_time()
                for d in datas:
                    fn(d)
                times[name].append((time.process_time() - t) / len(datas) * 1e6)
        size = sum(map(len, datas)) / len(datas)
        print(
            f"{folder}: {len(datas)} PNGs, {size:.0f} bytes each; us per file (CPU), min / median"
        )
        for name, ts in times.items():
            print(f"  {name:24s} {min(ts):8.1f} / {statistics.median(ts):8.1f}")


if __name__ == "__main__":
    main()
