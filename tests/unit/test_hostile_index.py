"""Hostile index files: incomplete shard sets, absurd labels, a corrupt cache, dead writers."""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
import warnings

import numpy as np
import pytest

from tfpathloader import IndexFormatError, PathIndex, write_index
from tfpathloader.index import _cache


def _sharded(tmp_path, shards=3, n=30, stem="index"):
    paths = [f"c{i % 10}/{i}.png" for i in range(n)]
    write_index(tmp_path / f"{stem}.tfrecord", paths, [i % 10 for i in range(n)], shards=shards)
    return sorted(str(p) for p in tmp_path.glob(f"{stem}-*-of-*.tfrecord"))


@pytest.mark.parametrize("missing", [0, 1, 2])  # first, middle, last
@pytest.mark.parametrize("how", ["glob", "sharded name", "list"])
def test_an_incomplete_shard_set_names_the_missing_file(tmp_path, missing, how):
    files = _sharded(tmp_path)
    os.remove(files[missing])
    source = {
        "glob": str(tmp_path / "index-*.tfrecord"),
        "sharded name": str(tmp_path / "index.tfrecord"),
        "list": [f for k, f in enumerate(files) if k != missing],
    }[how]
    with pytest.raises(IndexFormatError, match="shard set is incomplete") as err:
        PathIndex.read(source)
    assert err.value.file == files[missing]
    assert os.path.basename(files[missing]) in str(err.value)


def test_shards_of_two_writes_are_refused(tmp_path):
    files3 = _sharded(tmp_path, shards=3)
    (tmp_path / "old").mkdir()
    files2 = _sharded(tmp_path / "old", shards=2)
    os.replace(files2[0], tmp_path / os.path.basename(files2[0]))
    with pytest.raises(IndexFormatError, match="different writes are mixed"):
        PathIndex.read(str(tmp_path / "index-*.tfrecord"))
    assert len(PathIndex.read(files3)) == 30  # the complete set, listed, still reads


def test_a_complete_set_reads_and_a_shard_number_beyond_n_is_refused(tmp_path):
    files = _sharded(tmp_path)
    assert len(PathIndex.read(str(tmp_path / "index.tfrecord"))) == 30
    os.replace(files[2], tmp_path / "index-00007-of-00003.tfrecord")
    with pytest.raises(IndexFormatError, match="cannot exist"):
        PathIndex.read(str(tmp_path / "index-*.tfrecord"))


def test_the_largest_label_does_not_allocate_statistics(tmp_path):
    """One label of 2**31 - 1: info, histograms and the audit stay small (np.unique)."""
    big = 2**31 - 1
    paths = [f"{i}.png" for i in range(10)]
    index = write_index(tmp_path / "index.tfrecord", paths, [0, 1, 2, 0, 1, 2, 0, 1, 2, big])
    import scipy.stats  # imported before tracing: only the statistics are measured

    from tfpathloader.tools.audit import audit_ids

    assert scipy.stats
    index = PathIndex.read(index.files[0])
    tracemalloc.start()
    try:
        info = index.info()
        hist = index.label_histogram()
        audit = audit_ids(np.arange(10), index.labels)
        with pytest.raises(ValueError, match="use label_histogram") as err:
            index.label_counts()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, peak  # a dense count would be 16 GiB
    num_classes, counts, audit_counts = info["num_classes"], info["label_counts"], None
    audit_counts = audit["label_counts"]
    hist = {str(k): v for k, v in hist.items()}
    assert "sparse" in str(err.value)
    assert num_classes == big + 1
    assert counts == {"0": 3, "1": 3, "2": 3, str(big): 1}
    assert hist == {"0": 3, "1": 3, "2": 3, str(big): 1}
    assert audit_counts == {"0": 3, "1": 3, "2": 3, str(big): 1}


def test_labels_beyond_the_documented_range_are_refused_in_memory_too(tmp_path):
    with pytest.raises(ValueError, match="below 2\\*\\*31"):
        PathIndex.from_paths(["a.png"], [2**31], root=str(tmp_path))


def test_dense_label_counts_still_work_for_ordinary_labels(image_dir):
    _, index = image_dir
    assert index.label_counts().tolist() == [10, 10, 10]
    assert index.info()["label_counts"] == {"a": 10, "b": 10, "c": 10}


# -- the cache -------------------------------------------------------------------------------


def _cached(tmp_path):
    paths = [f"c{i % 3}/{i}.png" for i in range(40)]
    out = tmp_path / "index.tfrecord"
    write_index(out, paths, [i % 3 for i in range(40)])
    index = PathIndex.read(out)
    assert index.cache_folder is not None
    return out, index.cache_folder, index.labels.copy(), [index.path(i) for i in range(40)]


def _flip(path, at_from_end):
    data = bytearray(open(path, "rb").read())
    data[-at_from_end] ^= 0x01
    data[-at_from_end - 1] ^= 0x80  # two bytes, same size
    st = os.stat(path)
    with open(path, "wb") as f:
        f.write(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("array", ["labels", "paths", "offsets"])
def test_flipped_bytes_in_the_cache_are_caught_and_rebuilt(tmp_path, array):
    out, folder, labels, paths = _cached(tmp_path)
    _flip(os.path.join(folder, f"{array}.npy"), 3)
    with pytest.warns(RuntimeWarning, match=f"corrupt.*{array}.npy"):
        index = PathIndex.read(out)
    assert np.array_equal(index.labels, labels)
    assert [index.path(i) for i in range(40)] == paths
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PathIndex.read(out)  # rebuilt: clean again


def test_labels_saved_as_float64_are_caught_and_rebuilt(tmp_path):
    out, folder, labels, _ = _cached(tmp_path)
    np.save(os.path.join(folder, "labels.npy"), labels.astype(np.float64))
    with pytest.warns(RuntimeWarning, match="labels.npy holds float64, expected int64"):
        index = PathIndex.read(out)
    assert index.labels.dtype == np.int64 and np.array_equal(index.labels, labels)


def test_a_cache_array_of_the_wrong_shape_is_caught(tmp_path):
    out, folder, labels, _ = _cached(tmp_path)
    np.save(os.path.join(folder, "labels.npy"), labels[:-1])
    with pytest.warns(RuntimeWarning, match="labels.npy has shape"):
        assert len(PathIndex.read(out)) == 40


def test_temporary_folders_of_dead_writers_are_removed(tmp_path):
    out, folder, _, _ = _cached(tmp_path)
    base = os.path.dirname(folder)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    stale = os.path.join(base, f".tmp-{dead}-index-abc")
    trash = os.path.join(base, f"index-abc.old-{dead}")
    alive = os.path.join(base, f".tmp-{os.getppid()}-index-abc")
    for d in (stale, trash, alive):
        os.makedirs(d)
        open(os.path.join(d, "labels.npy"), "wb").close()
    PathIndex.read(out)
    assert not os.path.exists(stale) and not os.path.exists(trash)
    assert os.path.exists(alive)  # a live writer's folder is left alone


def test_array_checks_match_what_verify_arrays_accepts():
    arrays = {
        "labels": np.array([0, 1], np.int64),
        "offsets": np.array([0, 3, 5], np.int64),
        "paths": np.frombuffer(b"a.pngb", np.uint8)[:5],
    }
    meta = {"records": 2, "arrays": _cache.array_checks(arrays)}
    assert _cache.verify_arrays(arrays, meta) is None
    assert "does not span" in _cache.verify_arrays(
        {**arrays, "offsets": np.array([0, 3, 4], np.int64)}, meta
    )


# -- loader arguments by type (NOTE [argument types]) ------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("num_workers", True),
        ("num_workers", 1.0),
        ("num_workers", -1),
        ("channels", True),
        ("channels", 3.0),
        ("size", (True, True)),
        ("size", (8, 0)),
        ("size", (8, 8.0)),
        ("timeout", -1),
        ("timeout", True),
        ("timeout", "5"),
        ("timeout", float("nan")),
        ("timeout", float("inf")),
        ("prefetch_factor", True),
        ("prefetch_factor", 0),
        ("pin_memory", "no"),
        ("pin_memory", 1),
        ("persistent_workers", "yes"),
        ("on_error", 1),
        ("on_error", "ignore"),
        ("max_file_bytes", True),
        ("max_file_bytes", 0),
        ("max_file_bytes", "1MB"),
        ("allow_outside_root", "yes"),
        ("allow_outside_root", 1),
        ("device", 0),
    ],
)
@pytest.mark.parametrize("backend", ["torch", "tf"])
def test_loading_arguments_are_checked_by_type(image_dir, backend, name, value):
    from tfpathloader.load.loader import make_loader

    _, index = image_dir
    with pytest.raises(ValueError, match=name):
        make_loader(backend=backend, index=index, batch_size=4, **{"channels": 1, name: value})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("num_workers", np.int64(0)),
        ("timeout", 2.5),
        ("timeout", 0),
        ("pin_memory", False),
        ("max_file_bytes", 10**9),
        ("allow_outside_root", True),
        ("size", (8, 8)),
    ],
)
def test_valid_loading_arguments_pass(image_dir, name, value):
    from tfpathloader.load.loader import make_loader

    _, index = image_dir
    make_loader(backend="torch", index=index, batch_size=4, **{name: value})
