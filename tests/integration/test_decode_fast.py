"""The torch backend's JPEG path: decoded into the batch slots, Pillow's pixels, slot counts."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from photos import make_photo_set
from PIL import Image

from tfpathloader import ImageLoadError, make_loader, write_index
from tfpathloader.load._crop import decode_into
from tfpathloader.load._torch.workers import default_prefetch
from tfpathloader.load.decode import as_array, decode_image, load_image

pytest.importorskip("simplejpeg")


def _mixed_set(folder, n=24, size=(20, 28)):
    """Same-size files of every kind the JPEG path must tell apart, cycling through the kinds."""
    rng = np.random.default_rng(0)
    h, w = size
    paths = []
    for i in range(n):
        kind = ("rgb.jpg", "grey.jpg", "cmyk.jpg", "rgb.png", "q50.jpg", "prog.jpg")[i % 6]
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        name = f"{i}-{kind}"
        if kind == "grey.jpg":
            Image.fromarray(rgb[:, :, 0]).save(folder / name, quality=90)
        elif kind == "cmyk.jpg":
            Image.fromarray(rgb).convert("CMYK").save(folder / name, quality=90)
        elif kind == "prog.jpg":
            Image.fromarray(rgb).save(folder / name, quality=85, progressive=True)
        else:
            Image.fromarray(rgb).save(folder / name, quality=50 if kind == "q50.jpg" else 90)
        paths.append(name)
    return write_index(folder / "index.tfrecord", paths, [i % 2 for i in range(n)])


@pytest.mark.parametrize("channels", [1, 3])
def test_jpegs_decode_into_the_slots_with_pillows_pixels(tmp_path, channels):
    index = _mixed_set(tmp_path)
    loader = make_loader(
        backend="torch", index=index, batch_size=5, num_workers=2, channels=channels, seed=1
    )
    pool = loader.dataset.pool
    assert pool is not None
    seen = 0
    for batch in loader:
        for img, i in zip(batch["image"], batch["index"], strict=True):
            want = load_image(index.path(int(i)), channels=channels)  # Pillow, as decode.py
            np.testing.assert_array_equal(img.permute(1, 2, 0).numpy(), want)
            seen += 1
    assert seen == len(index)
    assert pool.misses == 0  # every request had its slot: the batches came by shared memory


def test_a_corrupt_jpeg_is_named_as_pillow_names_it(tmp_path):
    index = _mixed_set(tmp_path, n=6)
    data = (tmp_path / "0-rgb.jpg").read_bytes()
    (tmp_path / "0-rgb.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match=r"record 0 \(.*0-rgb\.jpg\): .*truncated"):
        list(make_loader(backend="torch", index=index, batch_size=6, shuffle="none"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_photo_set(tmp_path_factory.mktemp("photos"), 12, seed=3, progress=False)


def test_resized_jpegs_are_close_to_pillows_bilinear(photos):
    # NOTE [resize pixels] in load/_crop.py: unscaled decodes are Pillow's filter to within one
    # grey level; DCT-scaled ones (image at least twice the output) differ more at edges.
    kw = {"index": photos, "batch_size": 12, "shuffle": "none", "size": (64, 48)}
    batch = next(iter(make_loader(backend="torch", **kw)))
    got = batch["image"].permute(0, 2, 3, 1).numpy().astype(int)
    want = np.stack([load_image(photos.path(i), size=(64, 48)) for i in range(12)]).astype(int)
    diff = np.abs(got - want)
    assert got.shape == want.shape == (12, 64, 48, 3)
    assert diff.mean() < 3, diff.mean()  # measured 2.15 here (DCT-scaled 1/4 and 1/8)


@pytest.mark.tf
def test_resized_jpegs_equal_the_tf_backends(photos):
    kw = {"index": photos, "batch_size": 12, "shuffle": "none", "size": (224, 224)}
    a = next(iter(make_loader(backend="torch", **kw)))["image"].numpy().astype(int)
    b = next(iter(make_loader(backend="tf", **kw)))["image"].numpy().astype(int)
    assert a.shape == b.shape == (12, 3, 224, 224)
    # One path in both: DCT-scaled decode, torch's resize kernel (NOTE [tf resize]).
    np.testing.assert_array_equal(a, b)


def test_the_pool_has_two_slots_over_the_requests_and_they_all_come_back(tmp_path):
    index = _mixed_set(tmp_path, n=45)
    loader = make_loader(backend="torch", index=index, batch_size=3, num_workers=2, shuffle="none")
    pool = loader.dataset.pool
    assert len(pool._arrays) == 2 * 4 + 2  # tiny batches: prefetch 4 per worker
    kept = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        for batch in loader:
            if epoch == 1:
                kept.append(batch)  # held beyond the pool's size: later ones use fresh buffers
    assert pool.misses > 0
    misses = pool.misses
    for b in kept:
        for img, i in zip(b["image"], b["index"], strict=True):
            want = load_image(index.path(int(i)), channels=3)
            np.testing.assert_array_equal(img.permute(1, 2, 0).numpy(), want)
    del kept, b, img
    gc.collect()
    assert len(pool._free) == len(pool._arrays)
    for _ in loader:  # a plain loop never runs dry
        pass
    assert pool.misses == misses


def test_default_prefetch_is_dataloaders_for_big_batches():
    assert default_prefetch(2, 256 * 224 * 224 * 3) == 2  # 38.5 MB batches
    assert default_prefetch(2, 256 * 28 * 28) == 4  # 0.2 MB batches
    assert default_prefetch(8, 8 * 2**20) == 2


@pytest.mark.parametrize("channels", [None, 1, 3])
@pytest.mark.parametrize("size", [None, (9, 13)])
def test_decode_into_is_decode_image_for_every_kind(tmp_path, channels, size):
    index = _mixed_set(tmp_path, n=6)
    for i in range(6):
        data = open(index.path(i), "rb").read()
        got, shape = decode_into(
            data, channels=channels, size=size, out=None, path="x", record_id=i
        )
        want = decode_image(data, channels=channels, size=size)
        assert as_array(got, shape).shape == want.shape
        if size is None:  # resized ones are checked for closeness above
            np.testing.assert_array_equal(as_array(got, shape), want)


@pytest.mark.parametrize("channels", [1, 3])
def test_a_crop_written_into_its_row_is_the_crop_made_apart(photos, channels):
    from tfpathloader import transforms as T
    from tfpathloader.load._crop import load_cropped
    from tfpathloader.transforms import record_rng

    pipeline = T.Compose([T.RandomResizedCrop((20, 24)), T.RandomHorizontalFlip()])
    for i in range(len(photos)):
        kw = {"channels": channels, "record_id": i}
        apart = load_cropped(photos.path(i), pipeline, record_rng(0, 0, i), **kw)
        row = np.zeros((20, 24, channels), np.uint8)
        got = load_cropped(photos.path(i), pipeline, record_rng(0, 0, i), out=row, **kw)
        assert got is row
        np.testing.assert_array_equal(row, apart)


def test_crop_pipelines_fill_the_slots_too(photos):
    from tfpathloader import transforms as T

    pipeline = T.Compose([T.RandomResizedCrop(32), T.RandomHorizontalFlip()])
    kw = {"backend": "torch", "index": photos, "batch_size": 4, "transform": pipeline}
    loader = make_loader(num_workers=2, **kw)
    got = {int(i): img for b in loader for img, i in zip(b["image"], b["index"], strict=True)}
    assert loader.dataset.pool.misses == 0 and len(got) == len(photos)
    for b in make_loader(num_workers=0, **kw):  # in process: no slots
        for img, i in zip(b["image"], b["index"], strict=True):
            np.testing.assert_array_equal(img.numpy(), got[int(i)].numpy())


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_workers_not_forked_share_the_slots_too(tmp_path, monkeypatch, method):
    """Beside TensorFlow (forkserver) or with a remote root (spawn), workers get the pool by
    pickle (NOTE [slots without fork]): every batch is decoded into a slot, Pillow's pixels."""
    from tfpathloader.load import torch_backend

    if method not in torch.multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} here")
    ctx = torch.multiprocessing.get_context(method)
    monkeypatch.setattr(torch_backend, "start_method", lambda remote: ctx)
    index = _mixed_set(tmp_path, n=12)
    loader = make_loader(backend="torch", index=index, batch_size=3, num_workers=2, shuffle="none")
    pool = loader.dataset.pool
    assert pool is not None and pool.pickles
    for batch in loader:
        assert np.shares_memory(batch["image"].numpy(), pool._arrays)  # a slot, not a copy
        for img, i in zip(batch["image"], batch["index"], strict=True):
            want = load_image(index.path(int(i)), channels=3)
            np.testing.assert_array_equal(img.permute(1, 2, 0).numpy(), want)
    assert pool.misses == 0
    assert loader.dataloader.multiprocessing_context.get_start_method() == method
