"""Elastic exactly-once at scale: 100M records, 1,024 ranks x 8 workers, resumed twice elsewhere.

The job runs part of an epoch on 1,024 ranks (8 DataLoader workers each, batch 96), is killed,
resumes from rank 0's state on 768 ranks (batch 160), is killed again, and finishes on 1,536
ranks (batch 64), with the constant-memory (stateless) permutation. Every rank of every phase
computes its own ids with GlobalShuffleSampler from the saved state alone, each worker its own
batches (every 8th); a bitmap over the 100M records checks that the epoch delivered every record
exactly once (bar the last layout's documented tail padding). Memory stays bounded: two bitmaps
(12.5 MB each) and one rank's ids at a time.

    python benchmarks/elastic_100m.py                      # the full size (a few minutes)
    python benchmarks/elastic_100m.py --records 1000000 --ranks 64 --json out.json

It also times, per rank, the first batch after a resume (load the state, build the order, take
one batch) at resume points early, midway and late in the epoch: it must not grow with the
position (the stateless permutation has random access).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

from tfpathloader import GlobalShuffleSampler, OrderSpec


def _phase(n, spec, state, steps, seen, dup, workers):
    """Run ``steps`` steps (None: to the end) on every rank; mark ids; return rank 0's state."""
    states = []
    for rank in range(spec.world_size):
        s = GlobalShuffleSampler(n, spec=spec, rank=rank, fingerprint="sim")
        if state is not None:
            s.load_state_dict(state)
        todo = s.num_steps if steps is None else min(steps, s.num_steps)
        # Worker w of this rank builds batches w, w + workers, ... (DataLoader's round robin);
        # together they are the rank's first `todo` batches.
        per_step = np.repeat(np.arange(todo), [s.layout.batch_size_at(k) for k in range(todo)])
        ids = s.ids(0, len(per_step))
        for w in range(workers):
            mine = ids[per_step % workers == w]
            byte, bit = mine >> 3, (1 << (mine & 7)).astype(np.uint8)
            already = (seen[byte] & bit) != 0
            np.bitwise_or.at(dup, byte[already], bit[already])
            np.bitwise_or.at(seen, byte, bit)
        for _ in range(todo):
            s.consume_step()
        states.append(s.state_dict())
    assert all(st["position"] == states[0]["position"] for st in states), "ranks disagree"
    return states[0]


_BITS = np.array([bin(b).count("1") for b in range(256)], dtype=np.int64)


def _popcount(bitmap: np.ndarray) -> int:
    """Set bits of a bitmap (a table lookup per byte, a 1 MB chunk at a time)."""
    return sum(int(_BITS[bitmap[i : i + (1 << 20)]].sum()) for i in range(0, len(bitmap), 1 << 20))


def first_batch_cost(n, spec, state, reps=20):
    """Seconds for a new rank to load ``state`` and produce its first batch (median)."""
    times = []
    for r in range(reps):
        t = time.perf_counter()
        s = GlobalShuffleSampler(n, spec=spec, rank=r % spec.world_size, fingerprint="sim")
        s.load_state_dict(state)
        next(iter(s.batches()))
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--records", type=int, default=100_000_000)
    ap.add_argument("--ranks", type=int, default=1024, help="ranks of the first phase")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    n, w0 = args.records, args.ranks
    rng = np.random.default_rng(args.seed)
    base = {"shuffle": "global", "permutation": "stateless", "seed": 7}
    phases = [
        OrderSpec(**base, world_size=w0, batch_size=96),
        OrderSpec(**base, world_size=w0 * 3 // 4, batch_size=160),
        OrderSpec(**base, world_size=w0 * 3 // 2, batch_size=64),
    ]
    seen = np.zeros((n + 7) // 8, dtype=np.uint8)  # bitmaps: 12.5 MB each at 100M records
    dup = np.zeros_like(seen)
    t0 = time.perf_counter()
    # Random kill points: somewhere in the first 40% of the epoch, then in the next 40%.
    k1 = int(rng.uniform(0.05, 0.4) * n) // phases[0].global_batch
    s1 = _phase(n, phases[0], None, k1, seen, dup, args.workers)
    k2 = int(rng.uniform(0.05, 0.4) * n) // phases[1].global_batch
    s2 = _phase(n, phases[1], s1, k2, seen, dup, args.workers)
    s3 = _phase(n, phases[2], s2, None, seen, dup, args.workers)
    seconds = time.perf_counter() - t0
    last = phases[2]
    left = n - s2["position"]
    padding = (-left) % last.world_size
    result = {
        "records": n,
        "phases": [
            {
                "ranks": p.world_size,
                "batch_size": p.batch_size,
                "workers": args.workers,
                "resumed_at": st,
            }
            for p, st in zip(phases, [0, s1["position"], s2["position"]], strict=True)
        ],
        "end_position": s3["position"],
        "never_delivered": n - _popcount(seen),
        "delivered_twice": _popcount(dup),
        "tail_padding_allowed": padding,
        "exactly_once": False,
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    result["exactly_once"] = result["never_delivered"] == 0 and result["delivered_twice"] <= padding
    costs = {}
    for frac in (0.01, 0.5, 0.99):
        pos = int(frac * n) // last.global_batch * last.global_batch
        state = {**s2, "position": pos}
        costs[f"{frac:.0%}"] = round(first_batch_cost(n, last, state) * 1e3, 3)
    result["first_batch_after_resume_ms"] = costs
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    if not result["exactly_once"]:
        raise SystemExit("NOT exactly once")


if __name__ == "__main__":
    main()
