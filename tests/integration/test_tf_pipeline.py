"""The tf backend's one pipeline per loader, its iterators' lifetime, and fork safety beside it."""

from __future__ import annotations

import gc
import sys

import numpy as np
import pytest
import torch
from conftest import make_images, run_python

from tfpathloader import GlobalShuffleSampler, write_index
from tfpathloader.load import _tf_epochs, _tf_pipeline
from tfpathloader.load._torch.workers import start_method
from tfpathloader.load.loader import make_loader


@pytest.fixture
def png_index(tmp_path):
    paths, labels = make_images(tmp_path, 40, classes=4, size=(6, 5))
    return write_index(tmp_path / "index.tfrecord", paths, labels)


def ids_of(loader):
    return [b["index"].clone() for b in loader]


def expected_ids(n, epoch, batch_size):
    sampler = GlobalShuffleSampler(n, seed=3)
    sampler.set_epoch(epoch)
    ids = np.array(list(sampler), dtype=np.int64)
    return [torch.from_numpy(ids[k : k + batch_size]) for k in range(0, n, batch_size)]


@pytest.mark.tf
@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_one_pipeline_serves_every_epoch_and_abandoned_iterations(png_index, on_error):
    loader = make_loader(
        backend="tf", index=png_index, batch_size=8, seed=3, num_workers=2, on_error=on_error
    )
    for epoch in (0, 1, 2):
        loader.set_epoch(epoch)
        want = expected_ids(len(png_index), epoch, 8)
        if epoch == 1:  # leave an iteration half-consumed: the next one goes on from there
            it = iter(loader)
            next(it)
            next(it)
            del it
            want = want[2:]
        got = ids_of(loader)
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            assert torch.equal(a, b)
    pipeline = loader._pipeline()
    loader.set_epoch(3)
    list(loader)
    assert loader._pipeline() is pipeline  # built once
    fns = (
        [loader._read_batch_fn, loader._decode_batch_fn]
        if on_error == "raise"
        else [loader._load_fn]
    )
    for fn in fns:  # NOTE [one reader]: read and decode are the two stages of a batch
        assert fn.experimental_get_tracing_count() == 1  # traced once, not per epoch
    loader.close()


@pytest.mark.tf
def test_an_iterator_released_inside_a_garbage_collection_is_freed_at_a_safe_point(png_index):
    loader = make_loader(backend="tf", index=png_index, batch_size=8, seed=3, num_workers=2)
    list(loader)
    key = loader._epochs.key
    released = []

    class Finalizer:  # releases the iterator from a collection, as the loader's finalizer does
        def __del__(self):
            released.append(_tf_pipeline._collecting)
            _tf_epochs._release(loader._epochs.feed, key)

    cycle = [Finalizer()]
    cycle.append(cycle)  # only the collector can free it
    del cycle
    gc.collect()
    assert released and released[0] > 0  # inside the collection
    assert key not in _tf_pipeline._LIVE and len(_tf_pipeline._GRAVE) == 1  # kept, not freed
    other = make_loader(backend="tf", index=png_index, batch_size=8, seed=3, num_workers=2)
    assert len(ids_of(other)) == 5
    assert _tf_pipeline._GRAVE == []  # freed at the next safe point
    other.close()


@pytest.mark.tf
def test_one_iterator_serves_every_epoch_left_early_failed_or_superseded(png_index, tmp_path):
    loader = make_loader(backend="tf", index=png_index, batch_size=8, seed=3, num_workers=2)
    list(loader)
    key = loader._epochs.key
    for epoch in (1, 2, 3):
        loader.set_epoch(epoch)
        it = iter(loader)
        next(it)
        newer = iter(loader)  # ends the first iteration: its epoch goes on from batch 1
        with pytest.raises(RuntimeError, match="newer iter"):
            next(it)
        got = [b["index"].tolist() for b in newer]
        assert got == [w.tolist() for w in expected_ids(40, epoch, 8)[1:]]
    assert loader._epochs.key == key  # one iterator, every epoch
    # a record that fails mid-epoch: the error names it, and the next epoch is whole
    victim = expected_ids(40, 4, 8)[2][0].item()
    path = png_index.path(victim)
    good = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(b"not an image")
    loader.set_epoch(4)
    with pytest.raises(Exception, match=str(victim)):
        list(loader)
    with open(path, "wb") as f:
        f.write(good)
    loader.set_epoch(5)
    assert [b["index"].tolist() for b in loader] == [w.tolist() for w in expected_ids(40, 5, 8)]
    loader.close()
    loader.set_epoch(6)  # a closed loader makes a new iterator when iterated again
    assert len(ids_of(loader)) == 5 and loader._epochs.key != key
    loader.close()


@pytest.mark.tf
def test_resume_starts_the_one_pipeline_at_the_saved_batch(png_index):
    kw = dict(backend="tf", index=png_index, batch_size=8, seed=3, num_workers=2)
    first = make_loader(**kw)
    first.set_epoch(1)
    it = iter(first)
    next(it), next(it)
    state = first.state_dict()
    del it
    second = make_loader(**kw)
    second.load_state_dict(state)
    rest = ids_of(second)
    assert [r.tolist() for r in rest] == [w.tolist() for w in expected_ids(40, 1, 8)[2:]]
    # the same loader resumes too, then delivers the next epoch whole
    first.load_state_dict(state)
    assert [r.tolist() for r in ids_of(first)] == [r.tolist() for r in rest]
    first.set_epoch(2)
    assert len(ids_of(first)) == 5


@pytest.mark.tf
def test_as_tf_dataset_keeps_the_epoch_it_was_made_in(png_index):
    loader = make_loader(backend="tf", index=png_index, batch_size=8, seed=3, num_workers=2)
    loader.set_epoch(1)
    ds = loader.as_tf_dataset()
    loader.set_epoch(2)
    list(loader)  # the loader's own pipeline moves on; the dataset does not
    got = [b["index"].numpy().tolist() for b in ds]
    assert got == [w.tolist() for w in expected_ids(40, 1, 8)]


def test_start_method_is_a_forkserver_once_tensorflow_is_imported(monkeypatch):
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    assert start_method(remote=True) == "spawn"
    if "fork" in torch.multiprocessing.get_all_start_methods():
        assert start_method(remote=False) == "fork"
    monkeypatch.setitem(sys.modules, "tensorflow", object())
    if "forkserver" in torch.multiprocessing.get_all_start_methods():
        ctx = start_method(remote=False)
        assert ctx.get_start_method() == "forkserver"


@pytest.mark.tf
@pytest.mark.slow
def test_torch_workers_start_beside_a_half_consumed_tf_iterator(png_index, tmp_path):
    # A forked worker beside live tf.data threads once hung at start-up; with TensorFlow in the
    # process the torch backend's workers come from a forkserver (NOTE [start method]).
    code = f"""
        import sys
        from tfpathloader import PathIndex
        from tfpathloader.load.loader import make_loader
        index = PathIndex.read({str(tmp_path / "index.tfrecord")!r})
        tf_loader = make_loader(backend="tf", index=index, batch_size=8, seed=3, num_workers=2)
        it = iter(tf_loader)
        first = next(it)  # the tf.data threads are live and its iterator half-consumed
        torch_loader = make_loader(
            backend="torch", index=index, batch_size=8, seed=3, num_workers=2
        )
        method = torch_loader.dataloader.multiprocessing_context.get_start_method()
        ids = [b["index"].tolist() for b in torch_loader]
        ids2 = [b["index"].tolist() for b in torch_loader]  # persistent workers, again
        rest = [b["index"].tolist() for b in it]
        assert ids == ids2 and ids[0] == first["index"].tolist() and ids[1:] == rest
        print("OK", method, torch_loader.dataset.pool.pickles)
    """
    result = run_python(code, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK forkserver True" in result.stdout


@pytest.mark.tf
@pytest.mark.slow
def test_a_script_that_ends_mid_epoch_exits(png_index, tmp_path):
    # An iterator freed during interpreter shutdown used to wait forever for its threads
    # (NOTE [iterator lifetime]): here one is left suspended in a global at exit.
    code = f"""
        from tfpathloader import PathIndex
        from tfpathloader.load.loader import make_loader
        index = PathIndex.read({str(tmp_path / "index.tfrecord")!r})
        loader = make_loader(backend="tf", index=index, batch_size=4, seed=3, num_workers=2)
        it = iter(loader)
        next(it)
        print("leaving")
    """
    result = run_python(code, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "leaving" in result.stdout
