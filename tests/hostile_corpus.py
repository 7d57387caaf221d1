"""The hostile-file corpus: files made to misbehave, and each one's outcome in torch, tf and verify.

Used by tests/integration/test_hostile_files.py (which asserts every row has one outcome) and
run as a script to print the README's table, so the table stays true:

    PYTHONPATH=. python tests/hostile_corpus.py > table.md
"""

from __future__ import annotations

import io
import os
import re
import socket
import struct
import sys
import tempfile
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from tfpathloader import PathIndex, write_index
from tfpathloader.errors import TFPathLoaderError

SIZE = (8, 8)
BACKENDS = ("torch", "tf")


def rgb(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*SIZE, 3), dtype=np.uint8)


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_with_text_chunk(arr: np.ndarray, *, bad_crc: bool) -> bytes:
    """A PNG with a tEXt chunk before its pixels (its CRC optionally wrong)."""
    data = png(arr)
    text = b"Comment\x00made by a careless script"
    crc = (zlib.crc32(b"tEXt" + text) ^ 0xFFFF) if bad_crc else None
    return data[:33] + _chunk(b"tEXt", text, crc) + data[33:]


def png_bad_idat_crc(arr: np.ndarray) -> bytes:
    data = bytearray(png(arr))
    at = data.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", data[at : at + 4])
    end = at + 8 + length
    data[end : end + 4] = bytes(b ^ 0xFF for b in data[end : end + 4])
    return bytes(data)


def png_huge_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (no pixel data behind it)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def _rows(arr: np.ndarray) -> bytes:
    """An 8-bit image's filtered rows as a PNG holds them (filter 0: none)."""
    return b"".join(b"\x00" + arr[y].tobytes() for y in range(arr.shape[0]))


def png_from_rows(arr: np.ndarray, rows: bytes, *, stream: bytes | None = None) -> bytes:
    """A PNG of ``arr`` written by hand from filtered ``rows`` (or a zlib ``stream`` as given),
    every chunk CRC right: what check_bytes passes, for the decoders to judge."""
    h, w = arr.shape[:2]
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(rows) if stream is None else stream
    head = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
    return head + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def png_bad_adler(arr: np.ndarray) -> bytes:
    """A PNG whose zlib stream ends in a wrong Adler-32 (libspng, as pyspng runs it, skips it)."""
    stream = bytearray(zlib.compress(_rows(arr)))
    stream[-1] ^= 0x01
    return png_from_rows(arr, b"", stream=bytes(stream))


def crafted_png(
    arr: np.ndarray,
    *,
    before: tuple[tuple[bytes, bytes], ...] = (),
    after: tuple[tuple[bytes, bytes], ...] = (),
    ihdr: bytes | None = None,
    idats: tuple[bytes, ...] | None = None,
    end: bytes = _chunk(b"IEND", b""),
) -> bytes:
    """An RGB PNG of ``arr`` written by hand with chunks ``before`` and ``after`` its IDATs
    (the zlib stream split into ``idats``, as given), every CRC right (NOTE [png checks])."""
    h, w = arr.shape[:2]
    ihdr = ihdr or struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idats = (zlib.compress(_rows(arr)),) if idats is None else idats
    parts = [(b"IHDR", ihdr), *before, *((b"IDAT", d) for d in idats), *after]
    return b"\x89PNG\r\n\x1a\n" + b"".join(_chunk(k, d) for k, d in parts) + end


def png_cut_after_idat_data(arr: np.ndarray) -> bytes:
    """A PNG cut right after its IDAT's data: no IDAT CRC, no IEND."""
    data = png(arr)
    at = data.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", data[at : at + 4])
    return data[: at + 8 + length]


def png_idat_length(arr: np.ndarray, length: int) -> bytes:
    """A PNG whose IDAT length field says ``length`` (its CRC where the real length puts it)."""
    data = bytearray(png(arr))
    at = data.index(b"IDAT") - 4
    data[at : at + 4] = struct.pack(">I", length)
    return bytes(data)


def png_adler_cut(arr: np.ndarray) -> bytes:
    """A PNG whose zlib stream lacks the last 2 bytes of its Adler-32, the first 2 in an IDAT of
    their own: libpng reads it only to look for the stream's end, finds none, and stops there."""
    stream = zlib.compress(_rows(arr))[:-2]
    return crafted_png(arr, idats=(stream[:-2], stream[-2:]))


def animated_gif() -> bytes:
    frames = [Image.fromarray(rgb(k)).convert("P") for k in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    return buf.getvalue()


def jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def bmp(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="BMP")
    return buf.getvalue()


def _flipped(data: bytes) -> bytes:
    out = bytearray(data)
    for k in range(len(out) // 2, len(out) // 2 + 40, 7):
        out[k] ^= 0x55
    return bytes(out)


Maker = Callable[[str, str], None]  # (root, absolute path of the case) -> makes it


def _bytes(data: bytes | None) -> Maker:
    def make(root: str, path: str) -> None:
        if data is not None:
            with open(path, "wb") as f:
                f.write(data)

    return make


def _fifo(root: str, path: str) -> None:
    os.mkfifo(path)


def _socket(root: str, path: str) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    _KEEP.append(s)  # closed with the corpus folder


_KEEP: list[socket.socket] = []


def _symlink(target: Callable[[str], str]) -> Maker:
    def make(root: str, path: str) -> None:
        os.symlink(target(root), path)

    return make


def _outside_image(root: str) -> str:
    outside = os.path.join(os.path.dirname(root), "outside")
    os.makedirs(outside, exist_ok=True)
    with open(os.path.join(outside, "x.png"), "wb") as f:
        f.write(png(rgb(77)))
    return os.path.join(outside, "x.png")


def _folder_symlinked_out(root: str, path: str) -> None:
    target = os.path.dirname(_outside_image(root))
    os.symlink(target, os.path.dirname(path))


def _inside_symlink(root: str, path: str) -> None:
    with open(os.path.join(root, "real.png"), "wb") as f:
        f.write(png(rgb(78)))
    os.symlink("real.png", path)


def _loop(root: str, path: str) -> None:
    os.symlink(os.path.basename(path) + ".b", path)
    os.symlink(os.path.basename(path), path + ".b")


def _sparse(size: int) -> Maker:
    def make(root: str, path: str) -> None:
        with open(path, "wb") as f:
            f.write(png(rgb(5)))
            f.truncate(size)  # sparse: no disk, no memory

    return make


def _file_as_folder(root: str, path: str) -> None:
    with open(os.path.dirname(path), "wb") as f:
        f.write(png(rgb(6)))


def _folder(root: str, path: str) -> None:
    os.mkdir(path)


@dataclass(frozen=True)
class Case:
    """One hostile file: how to make it, and a phrase of the cause (``"ok"``: it loads)."""

    name: str
    fname: str
    make: Maker
    expected: str
    options: dict[str, Any] = field(default_factory=dict)  # make_loader / verify options


def cases() -> list[Case]:
    good = png(rgb(1))
    return [
        Case("missing file", "missing.png", _bytes(None), "file not found"),
        Case("zero-byte file", "empty.png", _bytes(b""), "file is empty"),
        Case("truncated PNG", "trunc.png", _bytes(good[: len(good) // 2]), "corrupt or truncated"),
        Case(
            "truncated while listed (NFS, half-synced: header only)",
            "half.png",
            _bytes(good[:33]),
            "ends without its IEND chunk",
        ),
        Case("truncated JPEG", "trunc.jpg", _bytes(jpeg(rgb(2))[:200]), "corrupt or truncated"),
        Case("text file named .png", "notes.png", _bytes(b"text\n" * 50), "not a recognized"),
        Case("a folder where a file should be", "folder.png", _folder, "is a directory"),
        Case(
            "a file where a folder should be",
            "file.png/x.png",
            _file_as_folder,
            "not a folder",
        ),
        Case("a FIFO (named pipe)", "fifo.png", _fifo, "is a FIFO"),
        Case("a socket", "sock.png", _socket, "is a socket"),
        Case(
            "symlink to /dev/zero",
            "zero.png",
            _symlink(lambda root: "/dev/zero"),
            "outside the index root",
        ),
        Case(
            "symlink to /dev/zero, allow_outside_root=True",
            "zero2.png",
            _symlink(lambda root: "/dev/zero"),
            "is a character device",
            {"allow_outside_root": True},
        ),
        Case(
            "symlink to an image outside the root",
            "out.png",
            _symlink(_outside_image),
            "outside the index root",
        ),
        Case(
            "folder symlinked outside the root",
            "linked/x.png",
            _folder_symlinked_out,
            "outside the index root",
        ),
        Case(
            "symlink to an image outside the root, allowed",
            "out2.png",
            _symlink(_outside_image),
            "ok",
            {"allow_outside_root": True},
        ),
        Case("symlink inside the root", "in.png", _inside_symlink, "ok"),
        Case(
            "broken symlink",
            "broken.png",
            _symlink(lambda root: "gone.png"),
            "broken symlink",
        ),
        Case("symlink loop", "loop.png", _loop, "symlink loop"),
        Case(
            "300 MB sparse file named .png (over the 256 MiB default limit)",
            "sparse.png",
            _sparse(300 * 2**20),
            "max_file_bytes",
        ),
        Case(
            "file over a small max_file_bytes",
            "big.png",
            _bytes(png(np.random.default_rng(3).integers(0, 256, (64, 64, 3), np.uint8))),
            "max_file_bytes",
            {"max_file_bytes": 4096},
        ),
        Case(
            "PNG header claiming 100,000 x 100,000 pixels",
            "bomb.png",
            _bytes(png_huge_header(100_000, 100_000)),
            "decompression-bomb",
        ),
        Case("PNG with a bad IDAT CRC", "crc.png", _bytes(png_bad_idat_crc(rgb(3))), "CRC"),
        Case(
            "PNG with a bad CRC in an ancillary chunk",
            "crc2.png",
            _bytes(png_with_text_chunk(rgb(4), bad_crc=True)),
            "CRC",
        ),
        Case(
            "PNG with a good ancillary chunk",
            "text.png",
            _bytes(png_with_text_chunk(rgb(4), bad_crc=False)),
            "ok",
        ),
        Case(
            "PNG with a wrong zlib checksum (Adler-32), its chunk CRCs right",
            "adler.png",
            _bytes(png_bad_adler(rgb(10))),
            "ok",  # libspng skips the Adler-32 (its IDAT CRCs hold); Pillow alone refuses it
        ),
        Case(
            "PNG one byte short of its pixel data, its chunk CRCs right",
            "short.png",
            _bytes(png_from_rows(rgb(11), _rows(rgb(11))[:-1])),
            "corrupt or truncated",
        ),
        Case(
            "PNG with an unknown row filter (type 5), its chunk CRCs right",
            "filter.png",
            _bytes(png_from_rows(rgb(12), b"\x05" + _rows(rgb(12))[1:])),
            "corrupt or truncated",
        ),
        Case(
            "PNG with bytes after its zlib stream and after IEND",
            "tail.png",
            _bytes(
                png_from_rows(rgb(13), b"", stream=zlib.compress(_rows(rgb(13))) + b"\x00" * 9)
                + b"garbage" * 5
            ),
            "ok",
        ),
        Case(
            "PNG without IEND",
            "noiend.png",
            _bytes(crafted_png(rgb(14), end=b"")),
            "without its IEND chunk",
        ),
        Case(
            "PNG cut right after its IDAT data",
            "cut.png",
            _bytes(png_cut_after_idat_data(rgb(15))),
            "runs past the end of the file",
        ),
        Case(
            "PNG whose zlib stream lacks its Adler-32",
            "noadler.png",
            _bytes(crafted_png(rgb(16), idats=(zlib.compress(_rows(rgb(16)))[:-4],))),
            "ok",  # every row is there (libspng; Pillow alone refuses it)
        ),
        Case(
            "PNG whose Adler-32 is cut short in an IDAT of its own (libpng and Pillow load it)",
            "adlersplit.png",
            _bytes(png_adler_cut(rgb(17))),
            "ok",
        ),
        Case(
            "PNG a row short of its pixel data",
            "rowshort.png",
            _bytes(png_from_rows(rgb(18), _rows(rgb(18))[: -(1 + 3 * SIZE[1])])),
            "IDAT stream too short",
        ),
        Case(
            "PNG header taller than its pixel data",
            "tall.png",
            _bytes(crafted_png(rgb(19), ihdr=struct.pack(">IIBBBBB", 8, 16, 8, 2, 0, 0, 0))),
            "IDAT stream too short",
        ),
        Case(
            "PNG with an unknown critical chunk",
            "critical.png",
            _bytes(crafted_png(rgb(20), before=((b"ABCD", b"x"),))),
            "unknown critical chunk",
        ),
        Case(
            "PNG with a second IHDR",
            "ihdr2.png",
            _bytes(
                crafted_png(
                    rgb(21), before=((b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)),)
                )
            ),
            "invalid chunk position",
        ),
        Case(
            "PNG with IHDR compression method 1",
            "method.png",
            _bytes(crafted_png(rgb(22), ihdr=struct.pack(">IIBBBBB", 8, 8, 8, 2, 1, 0, 0))),
            "invalid compression method",
        ),
        Case(
            "PNG with an IDAT length field of 2^31",
            "len31.png",
            _bytes(png_idat_length(rgb(23), 2**31)),
            "expected at most 2^31-1",
        ),
        Case(
            "PNG with a tRNS chunk too short for its colour type (alpha is dropped anyway)",
            "trns.png",
            _bytes(crafted_png(rgb(24), before=((b"tRNS", b"\x00\x01"),))),
            "ok",
        ),
        Case(
            "PNG with an iCCP chunk ending after its name's NUL, before IDAT",
            "iccp.png",
            _bytes(crafted_png(rgb(25), before=((b"iCCP", b"name\x00"),))),
            "ok",  # colour profiles are not applied
        ),
        Case(
            "PNG with an iCCP chunk ending after its name's NUL, after IDAT",
            "iccp2.png",
            _bytes(crafted_png(rgb(26), after=((b"iCCP", b"name\x00"),))),
            "ok",
        ),
        Case("animated GIF", "anim.gif", _bytes(animated_gif()), "animated GIF"),
        Case(
            "JPEG without its end marker (last 2 bytes cut)",
            "noeoi.jpg",
            _bytes(jpeg(rgb(2))[:-2]),
            "corrupt or truncated",
        ),
        Case(
            "JPEG with garbage after its end marker",
            "trailer.jpg",
            _bytes(jpeg(rgb(2)) + b"garbage" * 10),
            "ok",
        ),
        Case(
            "JPEG with flipped bytes in its entropy data (both decode it, corrupt pixels)",
            "flipped.jpg",
            _bytes(
                _flipped(jpeg(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)))
            ),
            "ok",
        ),
        Case("JPEG named .png", "jpeg.png", _bytes(jpeg(rgb(7))), "ok"),
        Case("BMP named .png", "bmp.png", _bytes(bmp(rgb(8))), "ok"),
    ]


CASES = {c.name: c for c in cases()}


def build(folder: str, names: list[str]) -> PathIndex:
    """An index of [good, case] pairs, one pair per case: record 2k + 1 is case k."""
    good = png(rgb(9))
    paths, labels = [], []
    for k, name in enumerate(names):
        case = CASES[name]
        g = f"good{k:02d}.png"
        with open(os.path.join(folder, g), "wb") as f:
            f.write(good)
        rel = f"c{k:02d}-{case.fname}"
        if "/" in case.fname:
            rel = f"c{k:02d}-{case.fname.split('/')[0]}/{case.fname.split('/')[1]}"
        case.make(folder, os.path.join(folder, rel))
        paths += [g, rel]
        labels += [0, 1]
    return write_index(os.path.join(folder, "index.tfrecord"), paths, labels)


def _start_at(loader: Any, batch: int) -> None:
    # The batch to deliver next, as a loaded state would (the sampler holds the one counter).
    loader.set_epoch(loader.epoch)
    for _ in range(batch):
        loader.sampler.consume_step()


def outcomes(folder: str, names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Each case's outcome: raise mode and skip mode in both backends, and ``verify --decode``.

    Cases with the same options share one index (and one loader per backend and mode).
    """
    from tfpathloader.load.loader import make_loader
    from tfpathloader.tools.verify import verify_index

    names = names or list(CASES)
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(repr(sorted(CASES[n].options.items())), []).append(n)
    out: dict[str, dict[str, Any]] = {n: {} for n in names}
    for g, members in enumerate(groups.values()):
        sub = os.path.join(folder, f"group{g}")
        os.makedirs(sub)
        index = build(sub, members)
        opts = CASES[members[0]].options
        for backend in BACKENDS:
            kw = {
                "backend": backend,
                "index": index,
                "batch_size": 2,
                "shuffle": "none",
                "channels": 3,
                "size": SIZE,
                **opts,
            }
            raising = make_loader(num_workers=0, **kw)
            for k, name in enumerate(members):
                _start_at(raising, k)
                it = iter(raising)
                try:
                    batch = next(it)
                except TFPathLoaderError as e:
                    got: tuple = (type(e).__name__, e.record_id, e.path, e.cause)  # type: ignore[attr-defined]
                else:
                    img = batch["image"]
                    got = ("ok", batch["index"].tolist(), str(img.dtype), tuple(img.shape))
                finally:
                    del it
                out[name][f"{backend} raise"] = got
            skipping = make_loader(
                num_workers=2 if backend == "torch" else 0, on_error="skip", **kw
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                delivered = [b["index"].tolist() for b in skipping]
            flat = {i for b in delivered for i in b}
            skipped = {s["record_id"]: s["cause"] for s in skipping.skipped}
            for k, name in enumerate(members):
                rid = 2 * k + 1
                out[name][f"{backend} skip"] = (
                    ("delivered", 2 * k in flat, rid in flat)
                    if rid not in skipped
                    else ("skipped", 2 * k in flat, skipped[rid])
                )
            if hasattr(skipping, "close"):
                skipping.close()
        report = verify_index(
            index,
            decode=True,
            workers=1,
            progress=False,
            **{k: v for k, v in opts.items() if k in ("max_file_bytes", "allow_outside_root")},
        )
        failed = {f.record_id: f.problem for f in report.failures}
        for k, name in enumerate(members):
            out[name]["verify"] = failed.get(2 * k + 1, "ok")
            out[name]["index"] = index
            out[name]["record"] = 2 * k + 1
    return out


def _cell(o: dict[str, Any], backend: str) -> str:
    r, s = o[f"{backend} raise"], o[f"{backend} skip"]
    if r[0] == "ok":
        return "loads" if s[0] == "delivered" else f"loads; skip mode: {s}"
    return f"{r[0]}; skipped in skip mode" if s[0] == "skipped" else f"{r[0]}; skip mode: {s}"


def table(out: dict[str, dict[str, Any]]) -> str:
    """The README table: case | torch | tf | verify --decode (and the cause, once)."""
    lines = [
        "| case | torch | tf | `index verify --decode` | cause (the same words in all three) |",
        "|---|---|---|---|---|",
    ]
    for name, o in out.items():
        r = o["torch raise"]
        cause = r[3] if r[0] != "ok" else "-"
        verify = "ok" if o["verify"] == "ok" else "flagged"
        cause = cause.replace("|", "\\|")
        lines.append(f"| {name} | {_cell(o, 'torch')} | {_cell(o, 'tf')} | {verify} | {cause} |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    with tempfile.TemporaryDirectory() as d:
        Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS  # the default limit
        result = outcomes(d)
        text = re.sub(re.escape(d) + r"/group\d+", "<root>", table(result))
        sys.stdout.write(text.replace(d, "<root>/..") + "\n")
