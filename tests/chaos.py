"""SIGKILL a random process under a torch loader at a random moment, many times (NOTE [worker death]).

Each trial iterates one epoch while a killer thread, after a random delay, sends SIGKILL to a
random victim: a worker, the forkserver (when workers come from one) or multiprocessing's
resource tracker. The trial must end, within its deadline, either with the epoch complete or
with a LoaderWorkerError; after an error the loader is iterated again (the documented
recovery), and the ids of the whole epoch must be the sampler's, each exactly once. Anything
else is counted: a hang (the deadline passed), a raw error (any other exception), a wrong
epoch. Run by tests/integration/test_faults.py (slow tier), or as a script for the numbers::

    PYTHONPATH=. python tests/chaos.py --trials 200 --tf   # the forkserver beside TensorFlow
"""

from __future__ import annotations

import argparse
import json
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter

import numpy as np
from PIL import Image

from tfpathloader import GlobalShuffleSampler, LoaderWorkerError, make_loader, write_index

DEADLINE_S = 30.0


def _data(folder: str, n: int) -> object:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(f"{folder}/{i}.png")
        paths.append(f"{i}.png")
    return write_index(f"{folder}/index.tfrecord", paths, [i % 3 for i in range(n)])


def _victims(loader: object) -> dict[str, list[int]]:
    pool = getattr(loader, "_pool", None)
    out = {"worker": [w.process.pid for w in pool._workers] if pool is not None else []}
    fs = multiprocessing.forkserver._forkserver._forkserver_pid
    if fs:
        out["forkserver"] = [fs]
    rt = multiprocessing.resource_tracker._resource_tracker._pid
    if rt:
        out["resource tracker"] = [rt]
    return out


def _slow(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    time.sleep(0.002)  # an epoch of ~1 s, so a kill lands anywhere in it
    return img


def trial(index: object, rng: random.Random, persistent: bool) -> dict[str, object]:
    """One epoch under one random kill: how it ended and how long it took."""
    loader = make_loader(index=index, batch_size=16, num_workers=2, seed=rng.randrange(1000),
                         persistent_workers=persistent, transform=_slow)  # fmt: skip
    want = GlobalShuffleSampler(len(index), seed=loader.config.seed).ids().tolist()
    got: list[int] = []
    killed: dict[str, object] = {}

    done = threading.Event()

    def kill() -> None:
        time.sleep(rng.uniform(0.0, 0.8))
        victims = _victims(loader)
        while not any(victims.values()):  # workers not started yet (or the epoch is over)
            if done.wait(0.01):
                return
            victims = _victims(loader)
        kind = rng.choice(sorted(k for k, v in victims.items() if v))
        pid = rng.choice(victims[kind])
        try:
            os.kill(pid, signal.SIGKILL)
            killed.update(kind=kind, pid=pid)
        except ProcessLookupError:
            killed.update(kind=kind, pid=pid, missed=True)

    errors = 0
    t0 = time.monotonic()
    killer = threading.Thread(target=kill, daemon=True)
    killer.start()
    outcome = "finished"
    while time.monotonic() - t0 < DEADLINE_S:
        try:
            for b in loader:
                got += b["index"].tolist()
            break
        except LoaderWorkerError:
            errors += 1
            outcome = "LoaderWorkerError, recovered"
        except Exception as e:  # anything else is a failure of the library
            outcome = f"raw {type(e).__name__}: {e}"
            break
    else:
        outcome = "hang"
    took = time.monotonic() - t0
    done.set()
    killer.join()
    loader.close()
    if outcome in ("finished", "LoaderWorkerError, recovered") and got != want:
        outcome = "wrong epoch"
    return {"victim": killed.get("kind"), "missed": bool(killed.get("missed")), "outcome": outcome,
            "errors": errors, "seconds": round(took, 2), "persistent": persistent}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, object]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--tf", action="store_true", help="import TensorFlow first: forkserver workers")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.tf:
        import tensorflow  # noqa: F401  (workers then come from a forkserver)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as folder:
        index = _data(folder, 600)
        shm_before = set(os.listdir("/dev/shm"))
        trials = [trial(index, rng, persistent=k % 2 == 0) for k in range(args.trials)]
        time.sleep(1)
        leaked = sorted(set(os.listdir("/dev/shm")) - shm_before)
    counts = Counter(f"{t['victim']}: {t['outcome']}" for t in trials)
    bad = [t for t in trials if t["outcome"] not in ("finished", "LoaderWorkerError, recovered")]
    summary = {"start method": "forkserver" if args.tf else "fork", "trials": len(trials),
               "by victim and outcome": dict(sorted(counts.items())), "failures": bad,
               "slowest trial s": max(t["seconds"] for t in trials), "dev/shm left": leaked}  # fmt: skip
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
