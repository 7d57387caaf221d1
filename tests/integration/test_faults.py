"""Faults: a worker killed mid-epoch, an index rebuilt under its cache."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from conftest import make_images

from tfpathloader import LoaderWorkerError, PathIndex, write_index
from tfpathloader.index import encode_example
from tfpathloader.index._records import RecordWriter
from tfpathloader.load.loader import make_loader


def worker_pids(loader) -> set[int]:
    """The pids of a running torch loader's workers: forked children of this process, or
    children of a forkserver once TensorFlow is imported (NOTE [start method])."""
    return {w.process.pid for w in loader._pool._workers}


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_killed_worker_is_a_clear_error_and_the_epoch_resumes(tmp_path):
    paths, labels = make_images(tmp_path, 96)
    index = write_index(tmp_path / "index.tfrecord", paths, labels)
    reference = [
        b["index"].tolist() for b in make_loader(backend="torch", index=index, batch_size=4)
    ]
    loader = make_loader(backend="torch", index=index, batch_size=4, num_workers=2)
    it = iter(loader)
    got = [next(it)["index"].tolist() for _ in range(3)]
    workers = worker_pids(loader)
    assert len(workers) == 2 and all(alive(p) for p in workers)
    os.kill(min(workers), signal.SIGKILL)
    t0 = time.time()

    def consume():
        for batch in it:
            got.append(batch["index"].tolist())

    with pytest.raises(LoaderWorkerError) as err:
        consume()
    assert time.time() - t0 < 30  # an error, not a hang
    assert "loader worker" in str(err.value) and "killed by signal 9" in str(err.value)
    assert "rest of the epoch" in str(err.value)
    assert not any(alive(p) for p in workers)  # the loader stopped its workers
    # The loader still knows what was delivered: iterating again finishes the epoch exactly.
    rest = [b["index"].tolist() for b in loader]
    assert got + rest == reference


def _shard(path, labels):
    with RecordWriter(str(path)) as w:
        for i, lab in enumerate(labels):
            w.write(encode_example(i, lab, f"img/{i:03d}.png"))


def test_rebuilt_index_is_never_read_from_a_stale_cache(tmp_path):
    path = tmp_path / "idx.tfrecord"
    _shard(path, [1] * 20)
    assert PathIndex.read(path).labels.tolist() == [1] * 20  # cache written
    st = os.stat(path)
    # Rebuilt with different labels but the same size, and its mtime set back: replaced file.
    _shard(path, [2] * 20)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.path.getsize(path) == st.st_size
    assert PathIndex.read(path).labels.tolist() == [2] * 20
    # Rewritten in place (same inode, same size, same mtime): only ctime tells.
    st2 = os.stat(path)
    replacement = tmp_path / "other.tfrecord"
    _shard(replacement, [3] * 20)
    with open(path, "r+b") as f:
        f.write(replacement.read_bytes())
    os.utime(path, ns=(st2.st_atime_ns, st2.st_mtime_ns))
    assert os.stat(path).st_ino == st2.st_ino
    assert PathIndex.read(path).labels.tolist() == [3] * 20


def test_index_rewritten_by_write_index_while_open(tmp_path):
    paths, labels = make_images(tmp_path, 12)
    first = write_index(tmp_path / "index.tfrecord", paths, labels)
    old_labels = np.asarray(first.labels).copy()
    write_index(tmp_path / "index.tfrecord", paths[:8], [7] * 8)
    again = PathIndex.read(tmp_path / "index.tfrecord")
    assert again.labels.tolist() == [7] * 8
    np.testing.assert_array_equal(first.labels, old_labels)  # the open index is unharmed


def test_worker_killed_during_the_training_step_is_a_loader_worker_error(tmp_path):
    """A worker killed while the training step runs is found at the next batch (nothing is
    raised inside the step), whether it was forked or came from a forkserver."""
    paths, labels = make_images(tmp_path, 96)
    index = write_index(tmp_path / "index.tfrecord", paths, labels)
    reference = [
        b["index"].tolist() for b in make_loader(backend="torch", index=index, batch_size=4)
    ]
    loader = make_loader(backend="torch", index=index, batch_size=4, num_workers=2)
    got: list[list[int]] = []
    where = []

    def train():
        for batch in loader:
            got.append(batch["index"].tolist())
            if len(got) == 3:
                os.kill(min(worker_pids(loader)), signal.SIGKILL)
                t0 = time.time()
                where.append("forward")
                while time.time() - t0 < 3:  # "the forward pass": no loader call here
                    sum(range(1000))
                where.append("after")

    with pytest.raises(LoaderWorkerError) as err:
        train()
    assert where == ["forward", "after"]  # the step ran to its end
    assert "died" in str(err.value) and "state_dict" in str(err.value)
    rest = [b["index"].tolist() for b in loader]  # fresh workers; the epoch resumes
    assert got + rest == reference
    loader.close()
