"""The private APIs the loaders rely on still exist and behave as they expect (NOTE [private API]).

Each is used only in ``tfpathloader/load/_private.py``; an upgrade of torch or nvImageCodec that
renames or changes one fails here, loudly, by name, and the library raises PrivateAPIError.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tfpathloader.load import _private


@pytest.mark.parametrize("antialias", [True, False])
def test_resize_into_writes_interpolates_pixels_into_the_given_row(antialias):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    crop = image[3:30, 5:50]  # a strided view, as a crop box is
    batch = np.zeros((2, 11, 16, 3), np.uint8)
    _private.resize_into(crop, batch[1], antialias)
    want = torch.nn.functional.interpolate(
        torch.from_numpy(crop).permute(2, 0, 1)[None],
        size=(11, 16),
        mode="bilinear",
        antialias=antialias,
    )[0].permute(1, 2, 0)
    np.testing.assert_array_equal(batch[1], want.numpy())
    assert not batch[0].any()


def test_a_kernel_that_reallocates_its_output_is_an_error_not_stale_pixels(monkeypatch):
    def reallocating(src, size, align, sh, sw, *, out):  # what a changed out= contract would do
        out.set_(torch.zeros_like(out).contiguous())

    monkeypatch.setattr(_private, "_resize_op", lambda antialias: reallocating)
    row = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(_private.PrivateAPIError, match="reallocated its out= tensor"):
        _private.resize_into(np.ones((8, 8, 3), np.uint8), row, True)


def test_a_missing_kernel_is_named(monkeypatch):
    class NoOps:
        def __getattr__(self, name):
            raise AttributeError(name)

    monkeypatch.setattr(torch.ops, "aten", NoOps())
    with pytest.raises(_private.PrivateAPIError, match=r"_upsample_bilinear2d_aa\.out"):
        _private.resize_into(np.ones((8, 8, 3), np.uint8), np.zeros((4, 4, 3), np.uint8), True)


def test_nvimgcodec_imports_quietly_or_reports_absent(capfd):
    nv = _private.import_nvimgcodec()
    out, err = capfd.readouterr()
    assert out == "" and err == "", "nvImageCodec's import printed to the terminal"
    if nv is None:
        pytest.skip("nvImageCodec is not installed (the nvimgcodec extra)")
    assert hasattr(nv, "NVIMGCODEC_DEVICE_CPU_ONLY") and hasattr(nv, "Region")


def test_one_openmp_thread_limits_the_calling_thread_only():
    """NOTE [one OpenMP thread]: tf.data's threads get one; the training loop's setting stays."""
    import threading

    before = torch.get_num_threads()
    seen = []

    def on_a_tf_data_thread():
        _private.one_openmp_thread()
        seen.append(torch.get_num_threads())

    t = threading.Thread(target=on_a_tf_data_thread)
    t.start()
    t.join()
    assert seen == [1]
    _private.one_openmp_thread()  # on the main thread: nothing changes
    assert torch.get_num_threads() == before
