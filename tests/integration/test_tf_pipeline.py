"""The tf backend builds one tf.data pipeline per loader: epochs fed in, ids exactly the sampler's."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import make_images

from tfpathloader import GlobalShuffleSampler, write_index
from tfpathloader.load import _tf_feed
from tfpathloader.load.loader import make_loader

pytestmark = pytest.mark.tf


@pytest.fixture
def index(tmp_path):
    paths, labels = make_images(tmp_path, 37, classes=3, size=(6, 5))
    return write_index(tmp_path / "index.tfrecord", paths, labels)


def epoch_ids(loader):
    return [b["index"].numpy().copy() for b in loader]


def expected(index, epoch, *, batch_size, seed, **_):
    """The ids the loaders' sampler gives (the contract both backends share), per batch."""
    sampler = GlobalShuffleSampler(len(index), seed=seed, batch_size=batch_size)
    sampler.set_epoch(epoch)
    ids = sampler.epoch_ids()
    return [ids[k : k + batch_size] for k in range(0, len(ids), batch_size)]


def test_one_pipeline_for_all_epochs_with_the_samplers_ids(index):
    kw = {"batch_size": 8, "seed": 3}
    loader = make_loader(backend="tf", index=index, **kw)
    pipelines = set()
    for epoch in range(3):
        loader.set_epoch(epoch)
        got = epoch_ids(loader)
        pipelines.add(id(_tf_feed.live(loader._key)[1]))
        want = expected(index, epoch, **kw)
        assert len(got) == len(want) == len(loader)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)
    assert len(pipelines) == 1  # built once, not per epoch
    t0 = time.perf_counter()
    loader.set_epoch(3)
    next(iter(loader))
    assert time.perf_counter() - t0 < 5  # no new pipeline (a generous bound for a busy CI)


def test_an_epoch_left_early_does_not_leak_into_the_next(index):
    kw = {"batch_size": 4, "seed": 1}
    loader = make_loader(backend="tf", index=index, **kw)
    loader.set_epoch(0)
    it = iter(loader)
    first = [next(it)["index"].numpy().copy() for _ in range(2)]
    del it  # left early: batches prefetched for epoch 0 are still in the pipeline
    rest = epoch_ids(loader)  # the same epoch again resumes after what was consumed
    want0 = expected(index, 0, **kw)
    np.testing.assert_array_equal(np.concatenate(first + rest), np.concatenate(want0))
    loader.set_epoch(1)
    it = iter(loader)
    next(it)
    del it
    loader.set_epoch(2)
    np.testing.assert_array_equal(
        np.concatenate(epoch_ids(loader)), np.concatenate(expected(index, 2, **kw))
    )
    loader.close()  # ends the pipeline; iterating again builds a new one
    loader.set_epoch(5)
    np.testing.assert_array_equal(
        np.concatenate(epoch_ids(loader)), np.concatenate(expected(index, 5, **kw))
    )
