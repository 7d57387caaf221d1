"""Benchmark the path index at scale: build, first open, cached open, bytes held per record.

Not a test: run it by hand and quote its numbers.

    python benchmarks/index_10m.py --records 10000000 --out /tmp/idx10m

Goals (issue 2): cached open under 2 s; memory under path bytes + 24 B per record.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time

import numpy as np
from procstats import status

from tfpathloader import PathIndex, write_index


def synthetic_paths(n: int, classes: int) -> tuple[list[str], np.ndarray]:
    """ImageNet-like relative paths ("train/c0421/c0421_0001234.jpg"), label-sorted."""
    labels = (np.arange(n, dtype=np.int64) * classes) // n
    paths = [f"train/c{c:04d}/c{c:04d}_{i:08d}.jpg" for i, c in enumerate(labels.tolist())]
    return paths, labels


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--records", type=int, default=10_000_000)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--out", default="/tmp/tfpathloader-bench-index")
    ap.add_argument("--keep", action="store_true", help="keep the files afterwards")
    args = ap.parse_args()
    n = args.records
    shutil.rmtree(args.out, ignore_errors=True)
    os.makedirs(args.out)
    out = os.path.join(args.out, "index.tfrecord")
    result: dict[str, float | int | str] = {"records": n, "shards": args.shards}

    t = time.perf_counter()
    paths, labels = synthetic_paths(n, args.classes)
    result["make_paths_s"] = round(time.perf_counter() - t, 2)
    path_bytes = sum(len(p) for p in paths)
    result["path_bytes_per_record"] = round(path_bytes / n, 2)

    t = time.perf_counter()
    write_index(out, paths, labels, shards=args.shards, cache=False)
    result["build_s"] = round(time.perf_counter() - t, 2)
    result["index_file_bytes"] = sum(
        os.path.getsize(os.path.join(args.out, f))
        for f in os.listdir(args.out)
        if f.startswith("index")
    )
    del paths

    t = time.perf_counter()
    first = PathIndex.read(out)  # parses every record, writes the cache
    result["first_open_s"] = round(time.perf_counter() - t, 2)
    assert len(first) == n
    del first

    base = status(os.getpid(), "VmRSS")
    t = time.perf_counter()
    index = PathIndex.read(out)
    result["cached_open_s"] = round(time.perf_counter() - t, 4)
    result["rss_after_cached_open_mb"] = round((status(os.getpid(), "VmRSS") - base) / 1024, 1)
    # Touch every byte (as a full epoch would), then count what the index holds.
    checksum = (
        int(index.labels.sum()) + int(index.offsets[-1]) + int(index.path_buffer[::4096].sum())
    )
    _ = index.path(n - 1), checksum
    held = index.nbytes()
    result["bytes_held"] = held
    result["bytes_per_record_excluding_paths"] = round((held - path_bytes) / n, 3)
    result["goal_bytes_per_record"] = (
        f"< path bytes + 24 (= {result['path_bytes_per_record']} + 24)"
    )
    result["bytes_per_record_total"] = round(held / n, 2)
    print(json.dumps(result, indent=2))
    if not args.keep:
        shutil.rmtree(args.out, ignore_errors=True)


if __name__ == "__main__":
    main()
