"""Epoch after epoch in one process: each epoch's rate, first batch and the cores it used.

Usage::

    python benchmarks/tf_epochs.py INDEX [--backend tf] [--epochs 10]

One loader (batch 256, 2 workers unless told), ``--epochs`` epochs of the whole index, each
with ``set_epoch``. Per epoch: images/s, seconds to its first
batch, and the cores it used (this process's CPU time over the epoch's wall time; the torch
backend's workers are other processes, so use this for the tf backend). Then one JSON line:
the median, lowest and highest rate of the epochs after the first. Made to show the tf
backend's epoch-to-epoch spread and what starting an epoch costs it (NOTE [tf iterations] in
``tfpathloader/load/tf_backend.py``: a new iterator per epoch).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("index")
    p.add_argument("--backend", default="tf", choices=("tf", "torch"))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=256)
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from tfpathloader import PathIndex
    from tfpathloader.load.loader import make_loader

    index = PathIndex.read(args.index)
    loader = make_loader(
        backend=args.backend,
        index=index,
        batch_size=args.batch_size,
        num_workers=args.workers,
        seed=0,
    )
    rates = []
    for epoch in range(args.epochs):
        loader.set_epoch(epoch)
        cpu, t0 = time.process_time(), time.perf_counter()
        n, first = 0, None
        for batch in loader:
            if first is None:
                first = time.perf_counter() - t0
            n += len(batch["index"])
        wall = time.perf_counter() - t0
        cores = (time.process_time() - cpu) / wall
        rates.append(n / wall)
        line = f"epoch {epoch}: {n / wall:9,.0f} images/s  first batch {first or 0:.3f} s"
        print(f"{line}  {cores:.2f} cores")
    later = rates[1:] or rates
    summary = {
        "backend": args.backend,
        "images": n,
        "epochs": args.epochs,
        "median_images_per_s": round(statistics.median(later)),
        "min_images_per_s": round(min(later)),
        "max_images_per_s": round(max(later)),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
