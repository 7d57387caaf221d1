"""Memory of DataLoader workers over a 10-million-record index: columnar index vs list of str.

Not a test: run it by hand and quote its numbers.

    python benchmarks/index_10m.py --keep --out /tmp/idx10m     # once, makes the index
    python benchmarks/worker_memory.py /tmp/idx10m/index.tfrecord

Each variant runs one full epoch with 4 persistent workers, every worker looking up the path of
every record it serves (what a real loader does before reading the file), then reports the
resident (RSS) and proportional (PSS: shared pages divided among the processes sharing them)
memory of the main process and of each worker:

- ``pathindex``: tfpathloader's PathIndex (memory-mapped arrays; forked workers share them);
- ``list``: the same paths as a Python list of str, the usual hand-written dataset. Reading an
  item touches its refcount, so forked workers copy the pages the list lives on.
"""

from __future__ import annotations

import argparse
import gc
import json
import os

import numpy as np
import torch
import torch.utils.data
from procstats import proc_stats

from tfpathloader import PathIndex


class IndexPaths(torch.utils.data.Dataset):
    def __init__(self, index: PathIndex):
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    def __getitems__(self, ids):
        return sum(len(p) for p in self.index.paths(np.asarray(ids)))


class ListPaths(torch.utils.data.Dataset):
    def __init__(self, paths: list[str], labels: list[int]):
        self.paths = paths
        self.labels = labels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitems__(self, ids):
        return sum(len(self.paths[i]) + self.labels[i] * 0 for i in ids)


def run(dataset, workers: int, batch: int) -> dict:
    n = len(dataset)
    sampler = torch.utils.data.BatchSampler(range(n), batch, drop_last=False)
    dl = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=lambda x: x,
        persistent_workers=True,
        multiprocessing_context="fork",
    )
    total = sum(dl)
    it = dl._iterator
    procs = {"main": proc_stats(os.getpid())}
    for k, w in enumerate(it._workers):
        procs[f"worker{k}"] = proc_stats(w.pid)
    del it, dl
    gc.collect()
    workers_pss = sum(v["pss_mb"] for k, v in procs.items() if k.startswith("worker"))
    return {
        "path_chars": total,
        "processes": procs,
        "total_pss_mb": round(workers_pss + procs["main"]["pss_mb"], 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("index")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4096)
    args = ap.parse_args()
    index = PathIndex.read(args.index)
    result = {"records": len(index), "workers": args.workers}
    result["pathindex"] = run(IndexPaths(index), args.workers, args.batch)
    paths = index.paths(np.arange(len(index)))
    labels = index.labels.tolist()
    result["list"] = run(ListPaths(paths, labels), args.workers, args.batch)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
