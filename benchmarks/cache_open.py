"""Cached-open time of a large path index, this checkout against another, side by side.

Not a test: run it by hand and quote its numbers (NOTE [cache integrity] in index/_cache.py).

    python benchmarks/cache_open.py --records 10000000 --before /path/to/old/checkout

Builds one index (8 shards), lets each checkout write its own cache entry, then opens it from
the cache in fresh processes, alternating checkouts round by round (warm page cache: the
arrays were just written or read). Prints the median seconds per checkout and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_OPEN = """
import sys, time
import tfpathloader
from tfpathloader import PathIndex
print(tfpathloader.__file__)
t = time.perf_counter()
index = PathIndex.read(sys.argv[1])
dt = time.perf_counter() - t
assert index.cache_folder is not None
print(dt)
"""


def _open(pythonpath: str, index: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _OPEN, index],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": pythonpath},
        cwd=pythonpath,  # not this folder: `python -c` puts the cwd first on sys.path
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith(os.path.abspath(pythonpath)), (lines[0], pythonpath)
    return float(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--records", type=int, default=10_000_000)
    ap.add_argument("--before", required=True, help="the other checkout (its PYTHONPATH)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default="/tmp/tfpathloader-bench-cache")
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(HERE, "benchmarks"))
    from index_10m import synthetic_paths

    from tfpathloader import write_index

    shutil.rmtree(args.out, ignore_errors=True)
    os.makedirs(args.out)
    out = os.path.join(args.out, "index.tfrecord")
    paths, labels = synthetic_paths(args.records, 1000)
    write_index(out, paths, labels, shards=8, cache=False)
    del paths, labels
    rows = {"after": HERE, "before": args.before}
    first = {k: _open(p, out) for k, p in rows.items()}  # parses, writes each one's cache
    times: dict[str, list[float]] = {k: [] for k in rows}
    for _ in range(args.rounds):
        for k, p in rows.items():
            times[k].append(_open(p, out))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        json.dumps(
            {
                "records": args.records,
                "first_open_s": {k: round(v, 2) for k, v in first.items()},
                "cached_open_s_median": {k: round(v, 4) for k, v in med.items()},
                "cached_open_s_all": {k: [round(x, 4) for x in v] for k, v in times.items()},
                "after_minus_before_s": round(med["after"] - med["before"], 4),
            },
            indent=2,
        )
    )
    shutil.rmtree(args.out, ignore_errors=True)


if __name__ == "__main__":
    main()
