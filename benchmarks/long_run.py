"""Long runs: many epochs with persistent workers; memory, file descriptors and orders per epoch.

Not a test (tests/integration/test_long_run.py is the quick version): run it by hand and quote its numbers.

    python benchmarks/long_run.py data/index.tfrecord --epochs 20 --backend torch
    python benchmarks/long_run.py data/index.tfrecord --epochs 20 --backend tf

For every epoch: RSS and PSS (MB) and open file descriptors of the main process and of every
worker process, and whether the epoch delivered every record exactly once in a new order.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time

import numpy as np
from procstats import children, proc_stats

from tfpathloader import PathIndex, make_loader


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("index")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--backend", default="torch", choices=["torch", "tf"])
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    index = PathIndex.read(args.index)
    loader = make_loader(
        backend=args.backend,
        index=index,
        batch_size=args.batch_size,
        num_workers=args.workers,
        seed=0,
    )
    me = os.getpid()
    rows, orders = [], []
    for epoch in range(args.epochs):
        loader.set_epoch(epoch)
        t = time.perf_counter()
        ids = np.concatenate([b["index"].numpy() for b in loader])
        seconds = time.perf_counter() - t
        gc.collect()
        exactly_once = len(ids) == len(index) and np.array_equal(
            np.sort(ids), np.arange(len(index))
        )
        orders.append(ids[:1000].copy())
        row = {
            "epoch": epoch,
            "seconds": round(seconds, 2),
            "exactly_once": bool(exactly_once),
            "main": proc_stats(me),
        }
        for k, pid in enumerate(children(me)):
            row[f"worker{k}"] = proc_stats(pid)
        rows.append(row)
        print(json.dumps(row), flush=True)
    distinct = len({o.tobytes() for o in orders})
    first, last = rows[0], rows[-1]
    summary = {
        "backend": args.backend,
        "epochs": args.epochs,
        "records": len(index),
        "all_exactly_once": all(r["exactly_once"] for r in rows),
        "distinct_orders": distinct,
        "growth_epoch1_to_last": {
            proc: {k: round(last[proc][k] - first[proc][k], 1) for k in first[proc]}
            for proc in first
            if isinstance(first[proc], dict) and proc in last
        },
        "epoch1": {p: v for p, v in first.items() if isinstance(v, dict)},
        "last": {p: v for p, v in last.items() if isinstance(v, dict)},
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
