"""Long runs: 20 epochs with persistent workers stay flat (memory, file descriptors) and exact.

The full-size numbers come from `python benchmarks/long_run.py data/index.tfrecord`.
"""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest
from conftest import make_images
from procstats import proc_stats

from tfpathloader import write_index
from tfpathloader.load.loader import make_loader


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "tf"])
def test_twenty_epochs_stay_flat_and_exact(tmp_path, backend):
    paths, labels = make_images(tmp_path, 600, classes=6, size=(16, 16))
    index = write_index(tmp_path / "index.tfrecord", paths, labels)
    me = os.getpid()
    loader = make_loader(backend=backend, index=index, batch_size=32, num_workers=2, seed=1)
    stats, firsts = [], set()
    # tf.data's allocations settle over the first epochs, then stay flat (a new iterator per
    # epoch: NOTE [tf iterations]).
    epochs = 20 if backend == "torch" else 40
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        ids = np.concatenate([b["index"].numpy() for b in loader])
        assert np.array_equal(np.sort(ids), np.arange(600))  # exactly once, every epoch
        firsts.add(ids[:50].tobytes())
        gc.collect()
        procs = {"main": proc_stats(me)}
        if backend == "torch":
            # Forked children, or a forkserver's once TensorFlow is imported (NOTE [start
            # method]): the pool knows its workers either way.
            kids = sorted(w.process.pid for w in loader._pool._workers)
            procs.update({f"worker{k}": proc_stats(p) for k, p in enumerate(kids)})
        stats.append(procs)
    assert len(firsts) == epochs  # every epoch in a different order
    settled, last = stats[2 if backend == "torch" else epochs // 2], stats[-1]
    assert settled.keys() == last.keys()
    for proc in last:
        assert last[proc]["fds"] == settled[proc]["fds"], proc  # no descriptor leak
        assert last[proc]["threads"] == settled[proc]["threads"], proc
        limit = (
            3.0 if proc != "main" or backend == "torch" else 12.0
        )  # MB over the last 17-20 epochs
        assert last[proc]["rss_mb"] - settled[proc]["rss_mb"] < limit, (proc, settled, last)
    if backend == "torch":
        assert len(last) == 3  # main and the two persistent workers, the same ones throughout
    loader.close()
