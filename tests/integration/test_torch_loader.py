"""The PyTorch loader: order, pixels, resume, errors, transforms, layout, arguments."""

from __future__ import annotations

import gc
import json
import os

import numpy as np
import pytest
import torch
from conftest import BACKENDS, make_images
from PIL import Image

from tfpathloader import GlobalShuffleSampler, ImageLoadError, PathIndex, write_index
from tfpathloader.load.loader import make_loader


def pillow_pixels(path, mode="L"):
    return np.asarray(Image.open(path).convert(mode))


@pytest.fixture
def rgb_index(tmp_path):
    paths, labels = make_images(tmp_path, 40, classes=4, size=(6, 5), mode="RGB")
    return write_index(tmp_path / "index.tfrecord", paths, labels)


@pytest.mark.slow
def test_full_demo_epoch_with_two_workers(demo_data):
    index = PathIndex.read(demo_data / "index.tfrecord")
    loader = make_loader(backend="torch", index=index, batch_size=500, num_workers=2, seed=3)
    loader.set_epoch(1)
    ids, first_checked = [], 0
    for batch in loader:
        assert batch["image"].dtype == torch.uint8 and batch["image"].shape[1:] == (1, 28, 28)
        assert batch["label"].dtype == torch.int64 and batch["index"].dtype == torch.int64
        ids.append(batch["index"].numpy())
        np.testing.assert_array_equal(batch["label"].numpy(), index.labels[batch["index"].numpy()])
        for k in range(0, len(batch["index"]), 7):  # every 7th image against Pillow
            i = int(batch["index"][k])
            np.testing.assert_array_equal(
                batch["image"][k, 0].numpy(), pillow_pixels(index.path(i))
            )
            first_checked += 1
    ids = np.concatenate(ids)
    assert len(ids) == 70_000 and len(np.unique(ids)) == 70_000
    expected = GlobalShuffleSampler(70_000, seed=3, batch_size=500)
    expected.set_epoch(1)
    np.testing.assert_array_equal(ids, expected.epoch_ids())
    assert first_checked >= 10_000


def test_every_pixel_equals_pillow(image_dir):
    _, index = image_dir
    loader = make_loader(backend="torch", index=index, batch_size=7, num_workers=2)
    n = 0
    for batch in loader:
        for img, i in zip(batch["image"], batch["index"], strict=True):
            np.testing.assert_array_equal(img[0].numpy(), pillow_pixels(index.path(int(i))))
            n += 1
    assert n == 30


def test_rgb_batches_are_nchw_in_channels_last_memory(rgb_index):
    loader = make_loader(backend="torch", index=rgb_index, batch_size=8, num_workers=2)
    batch = next(iter(loader))
    img = batch["image"]
    assert img.shape == (8, 3, 6, 5) and img.dtype == torch.uint8
    assert img.is_contiguous(memory_format=torch.channels_last)
    i = int(batch["index"][3])
    np.testing.assert_array_equal(
        img[3].permute(1, 2, 0).numpy(), pillow_pixels(rgb_index.path(i), "RGB")
    )
    grey = make_loader(backend="torch", index=rgb_index, batch_size=8, channels=1)
    g = next(iter(grey))
    assert g["image"].shape == (8, 1, 6, 5)
    np.testing.assert_array_equal(
        g["image"][3, 0].numpy(), pillow_pixels(rgb_index.path(int(g["index"][3])))
    )


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_after_k_batches_with_workers_ahead(image_dir, workers):
    _, index = image_dir
    kwargs = {
        "backend": "torch",
        "index": index,
        "batch_size": 4,
        "num_workers": workers,
        "seed": 9,
    }
    full = make_loader(**kwargs)
    full.set_epoch(2)
    reference = [b["index"].tolist() for b in full]
    for k in (0, 1, 3, len(reference) - 1, len(reference)):
        loader = make_loader(**kwargs)
        loader.set_epoch(2)
        it = iter(loader)
        head = [next(it)["index"].tolist() for _ in range(k)]
        state = json.loads(json.dumps(loader.state_dict()))  # workers have prefetched further
        assert state["position"] == (min(k * 4, len(index)) if k < len(reference) else len(index))
        del it
        fresh = make_loader(**kwargs)
        fresh.load_state_dict(state)
        rest = [b["index"].tolist() for b in fresh]
        assert head + rest == reference, k


def test_set_epoch_changes_order_and_repeating_warns(image_dir):
    _, index = image_dir
    loader = make_loader(backend="torch", index=index, batch_size=10)
    a = [b["index"].tolist() for b in loader]
    with pytest.warns(UserWarning, match="set_epoch"):
        b = [b["index"].tolist() for b in loader]
    loader.set_epoch(1)
    c = [b["index"].tolist() for b in loader]
    assert a == b != c
    assert len(loader) == 3


def test_raise_names_record_path_and_cause(tmp_path):
    paths, labels = make_images(tmp_path, 12)
    index = write_index(tmp_path / "index.tfrecord", paths, labels)
    broken = index.path(5)
    with open(broken, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n truncated")
    loader = make_loader(backend="torch", index=index, batch_size=4, num_workers=2, shuffle="none")
    with pytest.raises(ImageLoadError) as err:
        list(loader)
    assert err.value.record_id == 5 and err.value.path == broken
    assert (
        "record 5" in str(err.value) and broken in str(err.value) and "corrupt" in err.value.cause
    )


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_counts_and_reports_per_epoch(tmp_path, workers):
    paths, labels = make_images(tmp_path, 20)
    index = write_index(tmp_path / "index.tfrecord", paths, labels)
    os.unlink(index.path(3))
    with open(index.path(11), "w") as f:
        f.write("not an image")
    loader = make_loader(
        backend="torch", index=index, batch_size=6, num_workers=workers, on_error="skip"
    )
    with pytest.warns(RuntimeWarning, match="skipped 2 unreadable"):
        got = np.concatenate([b["index"].numpy() for b in loader])
    assert sorted(got.tolist()) == sorted(set(range(20)) - {3, 11})
    assert sorted(s["record_id"] for s in loader.skipped) == [3, 11]
    causes = {s["record_id"]: s["cause"] for s in loader.skipped}
    assert causes[3] == "file not found" and "not a recognized image" in causes[11]
    assert "record 3" in loader.skip_report()
    loader.set_epoch(1)
    assert loader.skipped == []  # the report is per epoch


def _noise(image, rng):
    return (
        (image.astype(np.int16) + rng.integers(0, 50, size=image.shape))
        .clip(0, 255)
        .astype(np.uint8)
    )


def test_transform_is_seeded_by_record_and_epoch_not_worker(image_dir):
    _, index = image_dir

    def run(workers, epoch):
        loader = make_loader(
            backend="torch",
            index=index,
            batch_size=5,
            num_workers=workers,
            transform=_noise,
            seed=1,
        )
        loader.set_epoch(epoch)
        out = {}
        for b in loader:
            for img, i in zip(b["image"], b["index"], strict=True):
                out[int(i)] = img.numpy().copy()
        return out

    a, b, c = run(0, 0), run(2, 0), run(2, 1)
    assert all(np.array_equal(a[i], b[i]) for i in range(30))
    assert any(not np.array_equal(a[i], c[i]) for i in range(30))
    plain = pillow_pixels(index.path(0))
    assert not np.array_equal(a[0][0], plain)


def test_resize_makes_mixed_sizes_batch(tmp_path):
    for i, size in enumerate([(8, 8), (10, 6), (5, 9)]):
        Image.new("L", size, color=40 * i).save(tmp_path / f"{i}.png")
    index = write_index(tmp_path / "index.tfrecord", [f"{i}.png" for i in range(3)], [0, 1, 2])
    with pytest.raises(ValueError, match="pass size="):
        list(make_loader(backend="torch", index=index, batch_size=3, shuffle="none"))
    batch = next(iter(make_loader(backend="torch", index=index, batch_size=3, size=(7, 4))))
    assert batch["image"].shape == (3, 1, 7, 4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_kept_batches_stay_valid_when_the_buffer_pool_runs_dry(image_dir, backend):
    """NOTE [batch transport]: batches view their slots, in both backends, and a slot is reused
    only once nothing views it."""
    # With TensorFlow imported (a full test run) the workers come from a forkserver and share
    # the slots by pickle: the same rules hold either way.
    _, index = image_dir
    loader = make_loader(backend=backend, index=index, batch_size=2, num_workers=2)
    kept = list(loader)  # 15 batches, more than the pool's slots: some come through the pipe
    pool = loader._pool
    assert pool is not None and len(pool._free) == 0
    memory = np.frombuffer(pool._memory, np.uint8)
    start, end = memory.ctypes.data, memory.ctypes.data + memory.nbytes
    in_slots = [start <= b["image"].data_ptr() < end for b in kept]
    assert sum(in_slots) == len(pool._arrays)  # no copy: the first batches are the slots
    for b in kept:
        for img, i in zip(b["image"], b["index"], strict=True):
            np.testing.assert_array_equal(img[0].numpy(), pillow_pixels(index.path(int(i))))
    if backend == "tf":  # and kept tf.data tensors too
        import tensorflow as tf

        tensors = list(loader.as_tf_dataset())
        for b in tensors:
            for img, i in zip(b["image"].numpy(), b["index"].numpy(), strict=True):
                np.testing.assert_array_equal(img[..., 0], pillow_pixels(index.path(int(i))))
        del tensors
    del kept, b, img
    gc.collect()
    if backend == "tf":  # tf drops the numpy arrays it held at its next conversion
        tf.constant(np.zeros(1))
    assert len(pool._free) == len(pool._arrays)  # every slot came back


def test_pin_memory_is_off_quietly_without_cuda(image_dir, recwarn):
    _, index = image_dir
    loader = make_loader(backend="torch", index=index, batch_size=10, num_workers=1)
    assert loader.pin_memory == torch.cuda.is_available()
    list(loader)
    assert not [w for w in recwarn if "pin" in str(w.message).lower()]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "jax"}, "unknown backend 'jax'; valid: torch, tf"),
        ({"shuffle": "random"}, "unknown shuffle 'random'"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"channels": 2}, "channels must be 1, 3 or None"),
        ({"on_error": "ignore"}, "unknown on_error 'ignore'; valid: raise, skip"),
        ({"size": (0, 4)}, "size must be \\(height, width\\)"),
        ({"num_workers": -1}, "num_workers must be an integer >= 0"),
        ({"rank": 2, "world_size": 2}, "Invalid rank 2"),
    ],
)
def test_bad_arguments_raise_value_error(image_dir, kwargs, message):
    _, index = image_dir
    args = {"backend": "torch", "index": index, "batch_size": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        make_loader(**args)


def test_distributed_shares_cover_the_epoch_once(image_dir):
    _, index = image_dir
    seen = []
    steps = set()
    for rank in range(3):
        loader = make_loader(backend="torch", index=index, batch_size=4, rank=rank, world_size=3)
        batches = [b["index"].tolist() for b in loader]
        steps.add(len(batches))
        seen += [i for b in batches for i in b]
    assert steps == {3} and sorted(seen) == list(range(30))
