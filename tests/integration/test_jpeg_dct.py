"""``jpeg_dct="fast"``: TensorFlow's default IDCT, the same pixels in both backends (NOTE [jpeg dct])."""

from __future__ import annotations

import numpy as np
import pytest
from photos import make_photo_set

from tfpathloader import make_loader
from tfpathloader import transforms as T

pytest.importorskip("simplejpeg")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_photo_set(tmp_path_factory.mktemp("photos"), 8, seed=5, progress=False)


def _images(backend, index, **kw):
    kw = {"index": index, "batch_size": len(index), "shuffle": "none", **kw}
    return next(iter(make_loader(backend=backend, **kw)))["image"].numpy().astype(int)


def test_fast_is_another_decode_a_level_or_so_from_the_accurate_one(photos):
    accurate = _images("torch", photos, size=(96, 96))
    fast = _images("torch", photos, size=(96, 96), jpeg_dct="fast")
    diff = np.abs(fast - accurate)
    assert diff.max() > 0  # the option reaches the decoder
    assert diff.mean() < 1.0, diff.mean()


@pytest.mark.tf
def test_fast_is_tensorflows_default_decode(photos):
    import tensorflow as tf

    got = _images("torch", photos, batch_size=1, jpeg_dct="fast", channels=3)[0]
    want = tf.io.decode_jpeg(tf.io.read_file(photos.path(0)), channels=3).numpy()
    np.testing.assert_array_equal(got.transpose(1, 2, 0), want)


@pytest.mark.tf
@pytest.mark.parametrize("how", ["size", "pipeline"])
def test_both_backends_decode_fast_alike(photos, how):
    if how == "size":
        kw = {"size": (224, 224)}
    else:  # a CenterCrop box: decode_and_crop_jpeg in tf, full decode + crop in torch
        kw = {"transform": T.Compose([T.Resize(256), T.CenterCrop(224)])}
    a = _images("torch", photos, jpeg_dct="fast", **kw)
    b = _images("tf", photos, jpeg_dct="fast", **kw)
    assert a.shape == b.shape == (len(photos), 3, 224, 224)
    if how == "size":
        np.testing.assert_array_equal(a, b)  # one path in both (NOTE [tf resize])
    else:  # decode_and_crop_jpeg differs from a full decode at a few box edges only
        assert (a == b).mean() > 0.99
    accurate = _images("tf", photos, **kw)
    assert np.abs(accurate - b).max() > 0  # and tf's decoder got the option too


def test_an_unknown_jpeg_dct_names_the_valid_ones(photos):
    with pytest.raises(ValueError, match=r"unknown jpeg_dct 'ifast'; valid: 'accurate' .* 'fast'"):
        make_loader(index=photos, batch_size=2, jpeg_dct="ifast")


def test_fast_without_simplejpeg_says_what_to_install(photos, monkeypatch):
    from tfpathloader.load import _crop

    monkeypatch.setattr(_crop, "_simplejpeg", None)
    with pytest.raises(ImportError, match=r"simplejpeg.*pip install 'tfpathloader\[jpeg\]'"):
        make_loader(backend="torch", index=photos, batch_size=2, jpeg_dct="fast")
