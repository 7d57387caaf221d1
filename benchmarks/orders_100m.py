"""Benchmark the orders at 100 million records: epoch start, memory, ids per second.

Not a test: run it by hand and quote its numbers.

    python benchmarks/orders_100m.py [--records 100000000]

Goals (issue 3): `stateless` epoch start + first 1,000 ids under 10 ms and under 1 MB.
For reference, numpy's `permutation(100_000_000)` takes about 5.7 s on the 2-core CI machine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
import tracemalloc

from tfpathloader import GlobalShuffleSampler


def _start_epoch(n: int, permutation: str, epoch: int, k: int) -> float:
    t = time.perf_counter()
    s = GlobalShuffleSampler(n, seed=0, permutation=permutation, batch_size=256)
    s.set_epoch(epoch)
    first = s.ids(0, k)
    elapsed = time.perf_counter() - t
    assert len(first) == k
    return elapsed


def timed_first_ids(n: int, permutation: str, k: int = 1000) -> dict[str, float]:
    """A new epoch's start plus its first k ids: in a fresh process (cold) and in a running one."""
    cold = _start_epoch(n, permutation, 0, k)  # includes numpy's first-use costs
    warm = min(_start_epoch(n, permutation, e, k) for e in (1, 2, 3))
    tracemalloc.start()
    _start_epoch(n, permutation, 4, k)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "cold_epoch_start_and_first_ids_ms": round(cold * 1e3, 2),
        "epoch_start_and_first_ids_ms": round(warm * 1e3, 2),
        "peak_memory_mb": round(peak / 2**20, 3),
    }


def ids_per_second(n: int, permutation: str, take: int) -> dict[str, float]:
    s = GlobalShuffleSampler(n, seed=0, permutation=permutation, batch_size=256)
    s.set_epoch(1)
    s.ids(0, 1)  # build the epoch's order first: we time the steady state here
    t = time.perf_counter()
    got = 0
    for b in itertools.islice(s.batches(), take // 256):
        got += len(b)
    batched = got / (time.perf_counter() - t)
    t = time.perf_counter()
    for _ in itertools.islice(iter(s), take):
        pass
    single = take / (time.perf_counter() - t)
    return {"batched_ids_per_s": round(batched), "python_int_ids_per_s": round(single)}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--records", type=int, default=100_000_000)
    ap.add_argument("--take", type=int, default=2_000_000, help="ids to time per method")
    args = ap.parse_args()
    n = args.records
    out = {"records": n}
    for perm in ("stateless", "exact"):
        out[perm] = {**timed_first_ids(n, perm), **ids_per_second(n, perm, args.take)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
