"""The torch backend's PNG path per image, one process, CPU time: libspng vs Pillow vs a lean loop.

Rows, interleaved over ``--rounds`` rounds (min and median of each), every image of the index:

- ``lean``: ``os.read`` + Pillow decode + ``convert`` (the "lean raw" loop of ``bench``).
- ``pillow``: the torch backend's per-batch ``PathIndexDataset._fetch`` with pyspng hidden
  (Pillow decodes every PNG: the path before NOTE [png decoder]).
- ``spng``: the same with pyspng (libspng decodes what it decodes exactly as Pillow does).

Then, for single files: ``load_png`` alone, its zlib check, ``pyspng.load``, and Pillow's
``decode_pixels``. Usage::

    python benchmarks/png_decode.py /tmp/peers/demo/index.tfrecord --channels 1 --rounds 5
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from tfpathloader.index import PathIndex
from tfpathloader.load import _png
from tfpathloader.load._png_rules import filtered_size
from tfpathloader.load.decode import decode_pixels
from tfpathloader.load.torch_backend import PathIndexDataset


def _per_image(fn: Callable[[], object], n: int) -> float:
    t = time.process_time()
    fn()
    return (time.process_time() - t) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("index")
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    index = PathIndex.read(args.index)
    ds = PathIndexDataset(index, channels=args.channels)
    n = len(index)
    ids = np.arange(n)
    paths = [index.path(i) for i in range(n)]
    mode = "L" if args.channels == 1 else "RGB"
    spng = _png._pyspng

    def lean() -> None:
        for p in paths:
            fd = os.open(p, os.O_RDONLY)
            try:
                data = os.read(fd, os.fstat(fd).st_size)
            finally:
                os.close(fd)
            with Image.open(io.BytesIO(data)) as im:
                np.asarray(im.convert(mode))

    def batches() -> None:
        for s in range(0, n, args.batch):
            ds._fetch(ids[s : s + args.batch], 0, None)

    def pillow() -> None:
        _png._pyspng = None
        try:
            batches()
        finally:
            _png._pyspng = spng

    rows: dict[str, Callable[[], None]] = {"lean": lean, "pillow": pillow}
    if spng is not None:
        rows["spng"] = batches
    times: dict[str, list[float]] = {k: [] for k in rows}
    for _ in range(args.rounds):
        for name, fn in rows.items():
            times[name].append(_per_image(fn, n))
    print(f"{n} images, channels={args.channels}, us per image (CPU): min / median")
    for name, ts in times.items():
        print(f"  {name:8s} {min(ts):6.1f} / {statistics.median(ts):6.1f}")
    datas = [Path(p).read_bytes() for p in paths[:2000]]
    kw = {"channels": args.channels, "size": None, "out": None, "path": "", "record_id": 0}
    parts: dict[str, Callable[[bytes], object]] = {
        "Pillow decode_pixels": lambda d: decode_pixels(d, channels=args.channels),
    }
    if spng is not None:
        walked = {id(d): _png._walk(d) for d in datas}
        parts["load_png"] = lambda d: _png.load_png(d, **kw)
        parts["pyspng.load"] = spng.load

        def check(d: bytes) -> object:
            w = walked[id(d)]
            return w and _png._stream_ok(w[4], filtered_size(w[0], w[1], 8 * w[2], w[3]))

        parts["zlib check"] = check
    print(f"single files ({len(datas)}), us per image (CPU), best of 3:")
    for name, fn in parts.items():
        best = min(_per_image(lambda fn=fn: [fn(d) for d in datas], len(datas)) for _ in range(3))
        print(f"  {name:22s} {best:6.1f}")


if __name__ == "__main__":
    main()
