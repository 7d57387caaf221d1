"""The tf backend's iterations: epochs, resume, checkpoints, static shapes, exit, fork safety."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from conftest import ROOT, make_images, run_python

from tfpathloader import GlobalShuffleSampler, write_index
from tfpathloader.load.loader import make_loader
from tfpathloader.load.workers import start_method

pytestmark = pytest.mark.tf


@pytest.fixture
def png_index(tmp_path):
    paths, labels = make_images(tmp_path, 40, classes=4, size=(6, 5))
    return write_index(tmp_path / "index.tfrecord", paths, labels)


def expected_ids(n, epoch, batch_size, seed=3):
    sampler = GlobalShuffleSampler(n, seed=seed)
    sampler.set_epoch(epoch)
    ids = np.array(list(sampler), dtype=np.int64)
    return [ids[k : k + batch_size].tolist() for k in range(0, n, batch_size)]


def test_each_iteration_of_the_dataset_is_the_next_epoch(png_index):
    loader = make_loader(backend="tf", index=png_index, batch_size=8, seed=3, num_workers=2)
    ds = loader.as_tf_dataset()
    assert ds.element_spec["image"].shape.as_list() == [None, 6, 5, 1]  # H, W, C known
    for epoch in range(3):  # as Dataset.shuffle(reshuffle_each_iteration=True)
        assert [b["index"].numpy().tolist() for b in ds] == expected_ids(40, epoch, 8)
        assert loader.epoch == epoch and loader.batches_left == 0


def test_batch_size_is_static_when_every_batch_is_full(png_index):
    loader = make_loader(backend="tf", index=png_index, batch_size=8, drop_last=True)
    assert loader.as_tf_dataset().element_spec["image"].shape.as_list() == [8, 6, 5, 1]


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_an_iteration_left_early_resumes_where_it_stopped(png_index, on_error):
    kw = {"backend": "tf", "index": png_index, "batch_size": 8, "seed": 3, "on_error": on_error}
    loader = make_loader(num_workers=2, **kw)
    want = expected_ids(40, 0, 8)
    got = []
    for b in loader:  # prefetched batches beyond the one taken are not counted
        got.append(b["index"].tolist())
        break
    assert loader.batches_consumed == 1
    got += [b["index"].tolist() for b in loader]  # the rest of the epoch, exactly
    assert got == want
    loader.set_epoch(1)
    ds = loader.as_tf_dataset()
    first = next(iter(ds))["index"].numpy().tolist()
    assert first == expected_ids(40, 1, 8)[0] and loader.batches_consumed == 1
    assert [b["index"].numpy().tolist() for b in ds] == expected_ids(40, 1, 8)[1:]


def test_a_checkpoint_restores_the_position_in_the_epoch(png_index, tmp_path):
    import tensorflow as tf

    kw = {"backend": "tf", "index": png_index, "batch_size": 8, "seed": 3, "num_workers": 2}
    loader = make_loader(**kw)
    it = iter(loader.as_tf_dataset())
    taken = [next(it)["index"].numpy().tolist() for _ in range(2)]
    path = tf.train.Checkpoint(data=loader.checkpoint).write(str(tmp_path / "ckpt"))
    fresh = make_loader(**kw)
    tf.train.Checkpoint(data=fresh.checkpoint).read(path).assert_consumed()
    rest = [b["index"].numpy().tolist() for b in fresh.as_tf_dataset()]
    assert taken + rest == expected_ids(40, 0, 8)
    # and the next iteration is the next epoch
    assert [b["index"].numpy().tolist() for b in fresh.as_tf_dataset()] == expected_ids(40, 1, 8)


@pytest.mark.slow
def test_keras_fit_trains_each_epoch_on_its_own_order(png_index):
    import tensorflow as tf

    loader = make_loader(backend="tf", index=png_index, batch_size=8, seed=3, channels=1)
    seen: list[list[int]] = []
    ds = loader.as_tf_dataset().map(lambda b: (tf.cast(b["image"], tf.float32), b["label"]))

    class Record(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(list(loader.sampler.epoch_ids()))

    model = tf.keras.Sequential([tf.keras.Input((6, 5, 1)), tf.keras.layers.Flatten(),
                                 tf.keras.layers.Dense(4)])  # fmt: skip
    model.compile("sgd", tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(ds, epochs=3, verbose=0, callbacks=[Record()])
    assert len(seen) == 3 and seen[0] != seen[1] != seen[2]
    assert loader.epoch == 2


@pytest.mark.slow
def test_keras_fit_on_the_repeated_stream_resumes_mid_epoch_exactly(png_index):
    """As the tf.data guide says: ``fit(ds.repeat(), steps_per_epoch=len(loader))`` takes full
    epochs of the stream from a mid-epoch checkpoint (without it Keras took 3, 4, 1, 4)."""
    import tensorflow as tf

    kw = {"backend": "tf", "index": png_index, "batch_size": 8, "seed": 3, "channels": 1}
    first = make_loader(**kw)
    it = iter(first.as_tf_dataset())
    taken = [next(it)["index"].numpy().tolist() for _ in range(2)]
    loader = make_loader(**kw)
    loader.load_state_dict(first.state_dict())
    steps: list[int] = []

    class Count(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            steps.append(0)

        def on_train_batch_end(self, batch, logs=None):
            steps[-1] += 1

    ds = loader.as_tf_dataset().map(lambda b: (tf.cast(b["image"], tf.float32), b["label"]))
    model = tf.keras.Sequential([tf.keras.Input((6, 5, 1)), tf.keras.layers.Flatten(),
                                 tf.keras.layers.Dense(4)])  # fmt: skip
    model.compile("sgd", tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(ds.repeat(), steps_per_epoch=len(loader), epochs=3, verbose=0, callbacks=[Count()])
    assert taken == expected_ids(40, 0, 8)[:2]
    assert steps == [5, 5, 5]
    # 15 batches from (epoch 0, batch 2): the rest of epoch 0, epochs 1 and 2, 2 of epoch 3
    assert (loader.epoch, loader.batches_consumed) == (3, 2)


def test_iterators_freed_inside_a_garbage_collection_are_harmless(png_index):
    """Iterations left in reference cycles are freed by the collector, at any moment, while
    other loaders trace and run their pipelines."""
    for k in range(6):
        loader = make_loader(backend="tf", index=png_index, batch_size=4, seed=k, num_workers=2)
        it = iter(loader)
        next(it)
        cycle = [it, loader]
        cycle.append(cycle)  # only the collector frees it
        del it, loader, cycle
        other = make_loader(backend="tf", index=png_index, batch_size=8, seed=k)
        assert sum(len(b["index"]) for b in other) == 40
        if k % 2:
            gc.collect()


def test_start_method_is_a_forkserver_once_tensorflow_is_imported(monkeypatch):
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    assert start_method(remote=False) == "fork"
    assert start_method(remote=True) == "forkserver"
    monkeypatch.setitem(sys.modules, "tensorflow", object())
    assert start_method(remote=False) == "forkserver"


@pytest.mark.slow
def test_torch_workers_start_beside_a_half_consumed_tf_iterator(png_index, tmp_path):
    # A forked worker beside live tf.data threads once hung at start-up; with TensorFlow in the
    # process the torch backend's workers come from a forkserver (NOTE [start method]).
    code = f"""
        from tfpathloader import PathIndex
        from tfpathloader.load.loader import make_loader
        index = PathIndex.read({str(tmp_path / "index.tfrecord")!r})
        tf_loader = make_loader(backend="tf", index=index, batch_size=8, seed=3, num_workers=2)
        it = iter(tf_loader)
        first = next(it)  # the tf.data threads are live and its iterator half-consumed
        torch_loader = make_loader(
            backend="torch", index=index, batch_size=8, seed=3, num_workers=2
        )
        ids = [b["index"].tolist() for b in torch_loader]
        ids2 = [b["index"].tolist() for b in torch_loader]  # persistent workers, again
        rest = [b["index"].tolist() for b in it]
        assert ids == ids2 and ids[0] == first["index"].tolist() and ids[1:] == rest
        print("OK", torch_loader._pool.method)
    """
    result = run_python(code, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK forkserver" in result.stdout


_ENDINGS = {
    "a for loop left by break": "for b in loader:\n    break",
    "a suspended iteration": "it = iter(loader)\nnext(it)",
    "an exception kept with its traceback": (
        "try:\n    for b in loader:\n        raise ValueError\nexcept ValueError as e:\n    err = e"
    ),
    "a dataset iterator deleted": "it = iter(loader.as_tf_dataset())\nnext(it)\ndel it",
    "a finished epoch": "for b in loader:\n    pass",
}


def _exit_time(code: str) -> float:
    """Seconds from the script's last line to its exit."""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=ROOT,
                            stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "last line"
    t0 = time.monotonic()
    assert proc.wait(timeout=60) == 0
    return time.monotonic() - t0


_DECODES = {  # in tf.data's thread, slowly; or in worker processes (NOTE [tf workers])
    "threads": "num_workers=0, transform=lambda img, rng: (time.sleep(0.05), img)[1]",
    "workers": "num_workers=2, transform=T.Resize((6, 5))",
}


@pytest.mark.parametrize("decode", list(_DECODES))
@pytest.mark.parametrize(
    "ending",
    [
        e if e == "a suspended iteration" else pytest.param(e, marks=pytest.mark.slow)
        for e in _ENDINGS
    ],
)
def test_a_script_exits_within_a_second_of_its_last_line(png_index, tmp_path, ending, decode):
    """NOTE [tf exit]: whatever ends the loop, the loader delays the exit by under a second.

    The baseline is the same imports without a loader: a process holding TensorFlow and torch
    takes about 1.2 s to tear down on this machine whatever it did (TensorFlow alone 0.8 s).
    """
    head = f"""
        import time
        import tensorflow, torch
        from tfpathloader import PathIndex, transforms as T
        from tfpathloader.load.loader import make_loader
        index = PathIndex.read({str(tmp_path / "index.tfrecord")!r})
    """
    loop = f"""
        loader = make_loader(backend="tf", index=index, batch_size=4, seed=3, {_DECODES[decode]})
    """
    last = "\nprint('last line', flush=True)\n"
    baseline = _exit_time(textwrap.dedent(head) + last)
    took = _exit_time(textwrap.dedent(head) + textwrap.dedent(loop) + _ENDINGS[ending] + last)
    assert took - baseline < 1.0, (ending, took, baseline)
