"""Both backends of two checkouts of tfpathloader on the same files, in one run, interleaved.

Each measurement is a fresh process whose ``PYTHONPATH`` points at one checkout: it builds the
loader, runs one warm-up epoch, then times ``--epochs`` epochs (each from ``iter()`` to the last
batch) and prints the median rate and the CPU time per image of its process tree. Rounds take
turns over (checkout, backend), so the ratio new/old of each backend compares neighbours in time
on a shared machine. Usage::

    git worktree add /tmp/old main          # or: git archive main | tar -x -C /tmp/old
    python benchmarks/before_after.py --before /tmp/old --index data/index.tfrecord
    python benchmarks/before_after.py --before /tmp/old --index photos/index.tfrecord --crop
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap

_TRIAL = textwrap.dedent(
    """
    import json, os, statistics, sys, time
    from procstats import cpu_s  # the whole process tree: workers under a forkserver too
    from tfpathloader import PathIndex, make_loader
    from tfpathloader import transforms as T
    a = json.loads(sys.argv[1])
    index = PathIndex.read(a["index"])
    kw = dict(backend=a["backend"], index=index, batch_size=a["batch"], num_workers=a["workers"], seed=0)
    if a["crop"]:
        kw["transform"] = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip()])
    elif a["size"]:
        kw["size"] = (224, 224)
    if a["fast"]:
        kw["jpeg_dct"] = "fast"
    loader = make_loader(**kw)
    limit = a["images"]
    def epoch(e):
        loader.set_epoch(e)
        n, t0 = 0, time.perf_counter()
        for b in loader:
            n += len(b["index"])
            if n >= limit:
                break
        return n / (time.perf_counter() - t0)
    epoch(0)
    c0 = cpu_s(os.getpid())
    rates = [epoch(e) for e in range(1, 1 + a["epochs"])]
    n = min(limit, len(index)) * a["epochs"]
    print(json.dumps({"rate": statistics.median(rates), "cpu_ms": 1000 * (cpu_s(os.getpid()) - c0) / n}))
    """
)


def trial(checkout: str, args: argparse.Namespace, backend: str) -> dict[str, float]:
    a = {"index": args.index, "backend": backend, "batch": args.batch_size, "workers": args.workers,
         "crop": args.crop, "size": args.size, "fast": args.fast, "images": args.images, "epochs": args.epochs}  # fmt: skip
    here = os.path.dirname(os.path.abspath(__file__))  # procstats.py
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([checkout, here]),
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    got = subprocess.run([sys.executable, "-c", _TRIAL, json.dumps(a)], capture_output=True, text=True,
                         env=env, cwd=checkout, timeout=1800)  # fmt: skip
    if got.returncode:
        raise SystemExit(f"{checkout} {backend} failed:\n{got.stderr[-3000:]}")
    return json.loads(got.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--before", required=True, help="the older checkout (a folder holding tfpathloader/)"
    )
    p.add_argument("--after", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    p.add_argument("--index", required=True)
    p.add_argument("--backends", default="torch,tf")
    p.add_argument("--size", action="store_true", help="resize every image to 224x224")
    p.add_argument("--crop", action="store_true", help="RandomResizedCrop(224) + flip")
    p.add_argument("--fast", action="store_true", help="jpeg_dct='fast'")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--images", type=int, default=50_000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    for r in range(args.rounds):
        for backend in args.backends.split(","):
            for name, checkout in (("before", args.before), ("after", args.after)):
                got = trial(checkout, args, backend)
                runs.setdefault((backend, name), []).append(got)
                print(f"round {r}: {backend:5} {name:6} {got['rate']:9,.0f} images/s  "
                      f"{got['cpu_ms']:.3f} CPU ms/image", file=sys.stderr, flush=True)  # fmt: skip
    print(
        "| backend | before (images/s) | after (images/s) | after / before (median of rounds) | CPU ms/image before -> after |"
    )
    print("|---|---:|---:|---:|---|")
    for backend in args.backends.split(","):
        b, a = runs[(backend, "before")], runs[(backend, "after")]
        ratio = statistics.median(x["rate"] / y["rate"] for x, y in zip(a, b, strict=True))
        print(f"| {backend} | {statistics.median(x['rate'] for x in b):,.0f} | {statistics.median(x['rate'] for x in a):,.0f} "
              f"| {ratio:.2f} | {statistics.median(x['cpu_ms'] for x in b):.3f} -> {statistics.median(x['cpu_ms'] for x in a):.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
