"""Fuzzed PNGs through both loaders: crafted files, CRCs right, one outcome in both backends?

Not a test: run it by hand and quote its counts. The files are written into a folder with
their index and loaded by the torch and the tf backends (2 workers each),
``on_error="skip"`` and ``size=(12, 12)``; per file, the counts say how often both loaded it to
the same pixels, both refused it for the same reason, or they parted (the first few such files
are kept in ``--out`` for a look). ``--kind chunks``: random chunks (known, unknown, APNG,
critical), random lengths and payloads, IDATs split, files cut; ``--kind streams``: zlib
streams cut, padded, corrupted and split, at sizes up to 120x120.

    python benchmarks/png_fuzz.py --kind chunks --files 4000 --seed 7
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import struct
import tempfile
import warnings
import zlib

import numpy as np

from tfpathloader import make_loader, write_index

_KINDS = [b"tEXt", b"zTXt", b"iTXt", b"iCCP", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"pHYs"]
_KINDS += [b"bKGD", b"sBIT", b"hIST", b"sPLT", b"tIME", b"eXIf", b"PLTE", b"IHDR", b"IDAT"]
_KINDS += [b"IEND", b"abCd", b"ABCD", b"ab1d"] + [b"acTL", b"fcTL", b"fdAT"] * 2


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _payload(rng: np.random.Generator, kind: bytes, w: int, h: int) -> bytes:
    r = rng.random()
    if kind == b"acTL" and r < 0.6:
        return struct.pack(">II", int(rng.integers(0, 4)), 0)
    if kind == b"fcTL" and r < 0.6:
        fw, fh = (w, h) if r < 0.4 else (int(rng.integers(1, w + 1)), int(rng.integers(1, h + 1)))
        px, py = (0, 0) if r < 0.4 else (int(rng.integers(0, 2)), int(rng.integers(0, 2)))
        seq = int(rng.integers(0, 3))
        return struct.pack(">IIIIIHHBB", seq, fw, fh, px, py, 1, 10, 0, 0)
    if kind == b"fdAT" and r < 0.6:
        return struct.pack(">I", int(rng.integers(0, 4))) + zlib.compress(rng.bytes(5))
    if kind in (b"iCCP", b"zTXt") and r < 0.6:
        return b"nm\0" + bytes([int(rng.integers(0, 2))]) + zlib.compress(b"x" * 20)
    if kind == b"IHDR" and r < 0.6:
        return struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"" if r < 0.8 else rng.bytes(int(rng.integers(1, 40)))


def chunks_case(rng: np.random.Generator) -> bytes:
    """A small PNG with random chunks around its IDATs, now and then cut or without IEND."""
    colour = int(rng.choice([0, 2, 3, 6]))
    h, w = int(rng.integers(1, 12)), int(rng.integers(1, 12))
    spp = {0: 1, 2: 3, 3: 1, 6: 4}[colour]
    rows = b"".join(b"\0" + rng.bytes(w * spp) for _ in range(h))
    stream = zlib.compress(rows)
    ihdr = bytearray(struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0))
    if rng.random() < 0.1:
        ihdr[int(rng.integers(8, 13))] = int(rng.integers(0, 4))
    parts = [(b"IHDR", bytes(ihdr))]
    if colour == 3 and rng.random() < 0.9:
        parts.append((b"PLTE", rng.bytes(3 * int(rng.integers(1, 257)))))
    for _ in range(int(rng.integers(0, 3))):
        kind = _KINDS[int(rng.integers(len(_KINDS)))]
        parts.append((kind, _payload(rng, kind, w, h)))
    cuts = sorted(int(x) for x in rng.integers(0, len(stream) + 1, int(rng.integers(0, 3))))
    bounds = zip([0, *cuts], [*cuts, len(stream)], strict=True)
    parts += [(b"IDAT", stream[a:b]) for a, b in bounds]
    for _ in range(int(rng.integers(0, 2))):
        kind = _KINDS[int(rng.integers(len(_KINDS)))]
        parts.append((kind, _payload(rng, kind, w, h)))
    data = b"\x89PNG\r\n\x1a\n" + b"".join(_chunk(k, d) for k, d in parts)
    data += _chunk(b"IEND", b"") if rng.random() < 0.9 else b""
    return data[: int(rng.integers(8, len(data) + 1))] if rng.random() < 0.1 else data


def streams_case(rng: np.random.Generator) -> bytes:
    """A PNG whose zlib stream is cut, padded or corrupted, and split into IDATs."""
    colour, spp = [(0, 1), (2, 3), (6, 4)][int(rng.integers(3))]
    h, w = int(rng.integers(1, 120)), int(rng.integers(1, 120))
    top = 256 if rng.random() < 0.5 else 4
    rows = b"".join(b"\0" + rng.integers(0, top, w * spp, np.uint8).tobytes() for _ in range(h))
    r = rng.random()
    if r < 0.15:
        rows += rows[: int(rng.integers(1, 200))]
    elif r < 0.3:
        rows = rows[: -int(rng.integers(1, 1 + 2 * w * spp))]
    stream = zlib.compress(rows, int(rng.choice([0, 1, 9])))
    r = rng.random()
    if r < 0.5:
        stream = stream[: -int(rng.integers(1, 8))]
    elif r < 0.6:
        stream += rng.bytes(int(rng.integers(1, 10)))
    elif r < 0.7:
        stream = stream[:-1] + bytes([stream[-1] ^ 1])
    cuts = sorted(int(x) for x in rng.integers(0, len(stream) + 1, int(rng.integers(0, 4))))
    bounds = zip([0, *cuts], [*cuts, len(stream)], strict=True)
    idats = [_chunk(b"IDAT", stream[a:b]) for a, b in bounds]
    if len(idats) > 1 and rng.random() < 0.15:
        idats.insert(int(rng.integers(1, len(idats))), _chunk(b"tEXt", b"a\0b"))
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + ihdr + b"".join(idats) + _chunk(b"IEND", b"")


def outcomes(folder: str, n: int, backend: str) -> dict[int, tuple[str, bytes]]:
    """Each record's ("ok", pixels) or ("error", cause), as ``backend`` loads it."""
    index = write_index(os.path.join(folder, "index.tfrecord"), [f"{i}.png" for i in range(n)],
                        [0] * n)  # fmt: skip
    loader = make_loader(backend=backend, index=index, batch_size=64, shuffle="none",
                         on_error="skip", size=(12, 12), channels=3, num_workers=2)  # fmt: skip
    got: dict[int, tuple[str, bytes]] = {}
    for batch in loader:
        for i, img in zip(batch["index"].tolist(), batch["image"], strict=True):
            got[i] = ("ok", img.numpy().tobytes())
    for s in loader.skipped:
        got[s["record_id"]] = ("error", s["cause"].encode())
    loader.close()
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", choices=["chunks", "streams"], default="chunks")
    ap.add_argument("--files", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default="/tmp/png_fuzz")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(args.seed)
    make = chunks_case if args.kind == "chunks" else streams_case
    folder = tempfile.mkdtemp(prefix="png_fuzz_")
    for i in range(args.files):
        with open(os.path.join(folder, f"{i}.png"), "wb") as f:
            f.write(make(rng))
    torch_side = outcomes(folder, args.files, "torch")
    tf_side = outcomes(folder, args.files, "tf")
    counts: collections.Counter[str] = collections.Counter()
    for i in range(args.files):
        a, b = torch_side[i], tf_side[i]
        if a == b:
            counts["both load, same pixels" if a[0] == "ok" else "both refuse, same cause"] += 1
            continue
        counts[f"parted: torch {a[0]}, tf {b[0]}"] += 1
        if sum(v for k, v in counts.items() if k.startswith("parted")) <= 10:
            os.makedirs(args.out, exist_ok=True)
            shutil.copy(os.path.join(folder, f"{i}.png"), os.path.join(args.out, f"{i}.png"))
    shutil.rmtree(folder)
    print(f"{args.files} {args.kind} files, seed {args.seed}:")
    for name, n in counts.most_common():
        print(f"  {n:6d} {name}")


if __name__ == "__main__":
    main()
