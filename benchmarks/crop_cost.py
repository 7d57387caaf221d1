"""Where a training crop's CPU time goes: each step of the one decode path, and the loader.

    python benchmarks/crop_cost.py INDEX                  # e.g. the photos of peers.py --make-photos
    python benchmarks/crop_cost.py --make-photos DIR      # make 3,000 photos there first

Over the same records and the same plans (``RandomResizedCrop(224)`` + flip, seed 0), CPU
milliseconds (user + system) per image, the median of ``--rounds`` interleaved rounds:

- each step of NOTE [one decode path] timed on its own, one thread, nothing else running: read
  the file, inspect (header, checks, plan), decode what the plan needs (the box by nvImageCodec,
  or a DCT-scaled image), resize and mirror into the batch row;
- ``decode_batch`` as a worker calls it, whole batches, reading included;
- the torch loader with ``--workers`` workers: the CPU of its whole process tree per image.

The sum of the steps is the floor for this path on this machine: what the decoder and the resize
cost with nothing of the loader's around them. The loader's row minus it is what tfpathloader
itself adds per crop (planning, batching, the worker processes, the hand-over).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch
from procstats import cpu_s

from tfpathloader import PathIndex, make_loader
from tfpathloader import transforms as T
from tfpathloader.load.batches import DecodeJob
from tfpathloader.load.decode import Recipe, _pixels, finish, inspect
from tfpathloader.load.files import FileReader
from tfpathloader.storage import RemoteOptions

STEPS = ("read", "inspect", "decode", "resize")
LABELS = {
    "read": "read the file",
    "inspect": "header, checks, plan",
    "decode": "decode the box (or a DCT-scaled image)",
    "resize": "resize + mirror into the row",
    "sum": "**sum of the steps (the floor)**",
    "decode_batch": "`decode_batch`, whole batches, reading included",
    "loader": "torch loader, {w} workers (process tree)",
}


def steps(index: PathIndex, recipe: Recipe, epoch: int, batch: int) -> dict[str, float]:
    """CPU ms per image of each step, timed around each call on this thread, batch by batch
    as ``decode_batch`` runs them (all reads, all plans, then decode and resize per record)."""
    reader, row = FileReader(), np.empty((*recipe.pipeline.output_size, 3), np.uint8)  # type: ignore[union-attr]
    spent = dict.fromkeys(STEPS, 0)
    clock = time.thread_time_ns
    for start in range(0, len(index), batch):
        ids = range(start, min(start + batch, len(index)))
        t0 = clock()
        data = [reader.read(index.path(i), i) for i in ids]
        t1 = clock()
        srcs = [
            inspect(d, recipe, record_id=i, path="", epoch=epoch)
            for i, d in zip(ids, data, strict=True)
        ]
        t2 = clock()
        spent["read"] += t1 - t0
        spent["inspect"] += t2 - t1
        for src in srcs:
            t0 = clock()
            pixels, plan = _pixels(src, recipe.jpeg_dct == "fast")
            t1 = clock()
            finish(pixels, plan, 3, row)
            spent["decode"] += t1 - t0
            spent["resize"] += clock() - t1
    return {k: v / len(index) / 1e6 for k, v in spent.items()}


def batches(index: PathIndex, recipe: Recipe, epoch: int, batch: int) -> float:
    """CPU ms per image of the workers' call (read, then ``decode_batch``) over the index."""
    shape = (*recipe.pipeline.output_size, 3)  # type: ignore[union-attr]
    job = DecodeJob(index, recipe, shape, FileReader(), skip=False, remote=RemoteOptions())
    out = np.empty((batch, *shape), np.uint8)
    t = time.thread_time()
    for start in range(0, len(index), batch):
        job(np.arange(start, min(start + batch, len(index))), epoch, out)
    return (time.thread_time() - t) / len(index) * 1e3


def loader_epoch(loader, epoch: int) -> float:
    """CPU ms per image of one epoch over the loader's process tree."""
    loader.set_epoch(epoch)
    c0, n = cpu_s(os.getpid()), 0
    for b in loader:
        n += len(b["label"])
    return (cpu_s(os.getpid()) - c0) / n * 1e3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("index", nargs="?", help="index of JPEG photos (or --make-photos DIR)")
    p.add_argument("--make-photos", metavar="DIR", help="make 3,000 photos in DIR and use them")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--workers", type=int, default=2, help="the loader's workers (default 2)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument(
        "--fast",
        action="store_true",
        help='tf.data\'s pixel defaults: jpeg_dct="fast", no antialiasing',
    )
    args = p.parse_args(argv)
    if args.make_photos:
        from photos import make_photo_set

        index = make_photo_set(args.make_photos)
    elif args.index:
        index = PathIndex.read(args.index)
    else:
        p.error("give an INDEX or --make-photos DIR")
    torch.set_num_threads(1)  # as in a worker
    crop = T.Compose([T.RandomResizedCrop(224, antialias=not args.fast), T.RandomHorizontalFlip()])
    dct = "fast" if args.fast else "accurate"
    recipe = Recipe(3, crop, jpeg_dct=dct, seed=0)
    loader = make_loader(
        backend="torch", index=index, batch_size=args.batch_size, transform=crop, channels=3,
        jpeg_dct=dct, num_workers=args.workers, persistent_workers=True, seed=0,
    )  # fmt: skip
    loader_epoch(loader, 0)  # start the workers, warm the page cache
    rows: dict[str, list[float]] = {k: [] for k in (*STEPS, "sum", "decode_batch", "loader")}
    for r in range(1, args.rounds + 1):
        got = steps(index, recipe, r, args.batch_size)
        for k, v in got.items():
            rows[k].append(v)
        rows["sum"].append(sum(got.values()))
        rows["decode_batch"].append(batches(index, recipe, r, args.batch_size))
        rows["loader"].append(loader_epoch(loader, r))
        print(f"round {r}/{args.rounds} done", file=sys.stderr)
    loader.close()
    print(f"{len(index):,} images through RandomResizedCrop(224) + flip ({dct} IDCT, "
          f"antialias={not args.fast}); median of {args.rounds} rounds\n")  # fmt: skip
    print("| step | CPU ms per image |\n|---|---:|")
    for k, v in rows.items():
        print(f"| {LABELS[k].format(w=args.workers)} | {statistics.median(v):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
