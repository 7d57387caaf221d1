"""Decode-aware transforms in both backends, and seeded user callables."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import plan_batch
from photos import make_photo_set
from PIL import Image

from tfpathloader import ImageLoadError, write_index
from tfpathloader import transforms as T
from tfpathloader.load.loader import make_loader


def _coordinate_pngs(folder, n=12, size=(32, 40)):
    """RGB PNGs whose pixel (y, x) is (4x, 4y, image number): a crop shows where it came from."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    paths = []
    for i in range(n):
        img = np.stack([xx * 4 + 1, yy * 4 + 2, np.full_like(xx, i * 9)], axis=2)
        Image.fromarray(img.astype(np.uint8)).save(folder / f"{i}.png")
        paths.append(f"{i}.png")
    return write_index(folder / "index.tfrecord", paths, [i % 3 for i in range(n)])


# RandomResizedCrop with a fixed area and ratio gives a 16x16 box of a 32x40 image: no resize,
# so the output pixels are exactly the box's.
_EXACT = T.Compose(
    [T.RandomResizedCrop(16, scale=(0.2, 0.2), ratio=(1.0, 1.0)), T.RandomHorizontalFlip()]
)


def _images(loader):
    out = {}
    for b in loader:
        assert b["image"].dtype == torch.uint8
        for img, i in zip(b["image"], b["index"], strict=True):
            out[int(i)] = img.permute(1, 2, 0).numpy().copy()
    return out


def _check_planned_boxes(images, seed):
    ids = np.asarray(sorted(images))
    boxes, flips = plan_batch(_EXACT, seed, 0, ids, np.full(len(ids), 32), np.full(len(ids), 40))
    for i, (top, left, h, w), flip in zip(ids, boxes, flips, strict=True):
        img = images[int(i)]
        assert img.shape == (16, 16, 3) and (h, w) == (16, 16)
        want_x = np.arange(left, left + 16)[::-1] if flip else np.arange(left, left + 16)
        assert np.array_equal(img[0, :, 0], want_x * 4 + 1)
        assert np.array_equal(img[:, 0, 1], np.arange(top, top + 16) * 4 + 2)


def test_torch_pipeline_decodes_the_planned_box_whatever_the_workers(tmp_path):
    index = _coordinate_pngs(tmp_path)
    kw = {"backend": "torch", "index": index, "batch_size": 4, "transform": _EXACT, "seed": 5}
    a = _images(make_loader(num_workers=0, **kw))
    loader = make_loader(num_workers=2, **kw)
    b = _images(loader)
    assert loader._pool is not None and len(loader._pool._arrays) > 0  # shared-memory slots
    assert a.keys() == b.keys() == set(range(12))
    assert all(np.array_equal(a[i], b[i]) for i in a)
    _check_planned_boxes(a, seed=5)


@pytest.mark.tf
@pytest.mark.slow
def test_tf_pipeline_decodes_the_same_boxes(tmp_path):
    index = _coordinate_pngs(tmp_path)
    kw = {"index": index, "batch_size": 8, "transform": _EXACT, "seed": 5}  # 8: grouped loop
    tf_images = _images(make_loader(backend="tf", **kw))
    _check_planned_boxes(tf_images, seed=5)
    torch_images = _images(make_loader(backend="torch", **kw))
    assert all(np.array_equal(tf_images[i], torch_images[i]) for i in range(12))


@pytest.mark.tf
@pytest.mark.parametrize("channels", [3, pytest.param(1, marks=pytest.mark.slow)])
def test_jpeg_crops_equal_in_both_backends(tmp_path, channels):
    index = make_photo_set(tmp_path, 6, seed=1)  # real-looking JPEGs, 300-500 px
    pipe = T.Compose([T.RandomResizedCrop(64), T.RandomHorizontalFlip()])
    kw = {"index": index, "batch_size": 3, "transform": pipe, "seed": 2, "channels": channels}
    a, b = _images(make_loader(backend="torch", **kw)), _images(make_loader(backend="tf", **kw))
    assert a.keys() == b.keys() == set(range(6))
    for i in a:
        assert a[i].shape == b[i].shape == (64, 64, channels)
        # One decode path (NOTE [one decode path]): the same box, flip, decode and resize.
        np.testing.assert_array_equal(a[i], b[i])


@pytest.mark.tf
@pytest.mark.slow
def test_corrupt_jpeg_names_the_record_in_both_backends(tmp_path):
    index = make_photo_set(tmp_path, 4, seed=0)
    path = index.path(2)
    data = open(path, "rb").read()
    open(path, "wb").write(data[:600])  # header intact, scan data cut
    for backend in ("torch", "tf"):
        loader = make_loader(
            backend=backend,
            index=index,
            batch_size=4,
            shuffle="none",
            transform=T.RandomResizedCrop(32),
        )
        with pytest.raises(ImageLoadError, match="record 2") as e:
            list(loader)
        assert path in str(e.value)


def test_pipeline_and_size_conflict_and_varied_sizes_refused(tmp_path):
    index = _coordinate_pngs(tmp_path, n=2)
    with pytest.raises(ValueError, match=r"size= and a tfpathloader\.transforms"):
        make_loader(index=index, batch_size=2, transform=T.CenterCrop(8), size=(8, 8))
    with pytest.raises(ValueError, match="varied sizes"):
        make_loader(index=index, batch_size=2, transform=T.Resize(8))


def _torch_noise(image, rng):
    """A torchvision-style transform: draws from torch's global generator."""
    assert image.shape[0] == 3 and image.flags.writeable and not image.flags.c_contiguous
    return (torch.from_numpy(image.copy()) // 2 + (torch.rand(1) * 100).to(torch.uint8)).numpy()


def test_user_callable_drawing_from_torch_is_seeded_per_record(tmp_path):
    index = _coordinate_pngs(tmp_path)
    kw = {"backend": "torch", "index": index, "batch_size": 4, "transform": _torch_noise}
    torch.manual_seed(123)
    _images(make_loader(num_workers=0, seed=1, **{**kw, "transform": None}))
    plain = torch.get_rng_state()  # DataLoader itself draws a base seed per iteration
    torch.manual_seed(123)
    a = _images(make_loader(num_workers=0, seed=1, **kw))
    assert torch.equal(torch.get_rng_state(), plain)  # the transform left it as it was
    b = _images(make_loader(num_workers=2, seed=1, **kw))
    c = _images(make_loader(num_workers=0, seed=2, **kw))
    assert all(np.array_equal(a[i], b[i]) for i in a)
    assert any(not np.array_equal(a[i], c[i]) for i in a)


@pytest.mark.tf
@pytest.mark.slow
def test_user_callable_drawing_from_torch_matches_in_tf(tmp_path):
    index = _coordinate_pngs(tmp_path)
    kw = {"index": index, "batch_size": 4, "transform": _torch_noise, "seed": 1}
    a = _images(make_loader(backend="torch", **kw))
    b = _images(make_loader(backend="tf", **kw))
    assert all(np.array_equal(a[i], b[i]) for i in a)


@pytest.mark.tf
@pytest.mark.slow
def test_skip_with_a_pipeline_is_the_same_in_both_backends(tmp_path):
    index = _coordinate_pngs(tmp_path, n=10)
    open(index.path(3), "wb").write(b"not an image")
    got = {}
    for backend in ("torch", "tf"):
        loader = make_loader(
            backend=backend,
            index=index,
            batch_size=4,
            transform=_EXACT,
            seed=5,
            on_error="skip",
        )
        with pytest.warns(RuntimeWarning, match="skipped 1"):
            images = _images(loader)
        got[backend] = images
        assert [s["record_id"] for s in loader.skipped] == [3]
    assert got["torch"].keys() == got["tf"].keys() == set(range(10)) - {3}
    assert all(np.array_equal(got["torch"][i], got["tf"][i]) for i in got["tf"])


@pytest.mark.tf
def test_tf_crop_resize_leaves_torch_threads_of_the_training_loop_alone(tmp_path):
    """With num_workers=0 the tf backend runs torch's resize on tf.data's threads, one OpenMP
    thread each; the process-wide setting a training loop uses is unchanged (NOTE [one OpenMP
    thread])."""
    index = _coordinate_pngs(tmp_path, n=4)
    before = torch.get_num_threads()
    loader = make_loader(backend="tf", index=index, batch_size=4, transform=_EXACT, seed=0)
    assert len(_images(loader)) == 4
    assert torch.get_num_threads() == before
