"""The one decode path (NOTE [one decode path]): its pixels, its decoders, its checks.

Both backends call the same function, so most of what matters is checked here once; the
cross-backend grid at the end checks that the backends really do call it.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import simplejpeg
import torch
from photos import make_photo_set
from PIL import Image

from tfpathloader import ImageLoadError, make_loader
from tfpathloader import transforms as T
from tfpathloader.load import decode, jpeg
from tfpathloader.load.decode import Recipe, decode_image, inspect, render
from tfpathloader.load.png import _ADAM7


def _save(arr, fmt="PNG", **kw):
    buf = io.BytesIO()
    (arr if isinstance(arr, Image.Image) else Image.fromarray(arr)).save(buf, format=fmt, **kw)
    return buf.getvalue()


RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (20, 28, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_photo_set(tmp_path_factory.mktemp("photos"), 12, seed=3, progress=False)


# -- JPEG -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rgb", "grey", "progressive", "q50", "cmyk"])
@pytest.mark.parametrize("channels", [1, 3])
def test_whole_jpegs_are_pillows_pixels(kind, channels):
    img = Image.fromarray(RGB[:, :, 0] if kind == "grey" else RGB)
    kw = {"quality": 50 if kind == "q50" else 90, "progressive": kind == "progressive"}
    data = _save(img.convert("CMYK") if kind == "cmyk" else img, "JPEG", **kw)
    got = decode_image(data, channels=channels)
    with Image.open(io.BytesIO(data)) as im:
        rgb = np.asarray(im.convert("RGB"))
        want = (
            (np.asarray(im)[:, :, None] if im.mode == "L" else decode.grey_of(rgb))
            if channels == 1
            else rgb
        )
    np.testing.assert_array_equal(got, want)


def test_a_jpeg_is_decoded_straight_into_its_row():
    data = _save(RGB, "JPEG", quality=90)
    recipe = Recipe(3)
    row = np.zeros((20, 28, 3), np.uint8)
    src = inspect(data, recipe, record_id=0, path="x.jpg", epoch=0)
    assert render(src, recipe, row) is row
    np.testing.assert_array_equal(row, simplejpeg.decode_jpeg(data))


def test_a_truncated_jpeg_is_named_as_pillow_names_it():
    data = _save(RGB, "JPEG", quality=90)
    with pytest.raises(ImageLoadError, match=r"record 4 \(t\.jpg\): image is corrupt or truncated"):
        decode_image(data[: len(data) // 2], path="t.jpg", record_id=4)


def test_dct_scaled_resizes_decode_at_the_scale_libjpeg_offers(photos):
    data = open(photos.path(0), "rb").read()
    h, w = simplejpeg.decode_jpeg_header(data)[:2]
    size = (h // 4 + 3, w // 4 + 3)  # at least 2x, not 4x: decoded at 1/2
    assert jpeg.dct_scale(T.Plan((0, 0, h, w), size), h, w)[0] == 2
    got = decode_image(data, size=size)
    small = simplejpeg.decode_jpeg(data, min_height=-(-h // 2), min_width=-(-w // 2))
    assert small.shape[:2] == (-(-h // 2), -(-w // 2))
    want = torch.nn.functional.interpolate(
        torch.from_numpy(small).permute(2, 0, 1)[None], size=got.shape[:2], mode="bilinear",
        antialias=True,
    )[0].permute(1, 2, 0)  # fmt: skip
    np.testing.assert_array_equal(got, want.numpy())


def test_dct_scale_keeps_the_box_at_least_the_output():
    plan = T.Plan((10, 20, 400, 300), (100, 70))
    r, scaled = jpeg.dct_scale(plan, 500, 400)
    assert r == 4 and scaled.box[2] >= 100 and scaled.box[3] >= 70
    assert jpeg.dct_scale(T.Plan((0, 0, 300, 300), (224, 224)), 300, 300)[0] == 1


def _crops(index, monkeypatch, nvimgcodec: bool, **kw):
    monkeypatch.setattr(jpeg, "_NV", None if nvimgcodec else False)
    pipe = T.Compose([T.RandomResizedCrop(64), T.RandomHorizontalFlip()])
    loader = make_loader(index=index, batch_size=12, shuffle="none", transform=pipe, **kw)
    return next(iter(loader))["image"].numpy()


@pytest.mark.parametrize("jpeg_dct", ["accurate", "fast"])
def test_region_decode_gives_the_whole_decodes_pixels(photos, monkeypatch, jpeg_dct):
    """NOTE [region decode]: nvImageCodec decodes the box alone, libjpeg-turbo's pixels."""
    if not jpeg._import_nvimgcodec():
        pytest.skip("nvImageCodec is not installed (the nvimgcodec extra)")
    region = _crops(photos, monkeypatch, True, jpeg_dct=jpeg_dct)
    whole = _crops(photos, monkeypatch, False, jpeg_dct=jpeg_dct)
    np.testing.assert_array_equal(region, whole)


def test_the_fast_idct_is_a_grey_level_or_so_from_the_accurate_one(photos):
    data = open(photos.path(1), "rb").read()
    fast = decode_image(data, jpeg_dct="fast").astype(int)
    exact = decode_image(data).astype(int)
    np.testing.assert_array_equal(exact, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    diff = np.abs(fast - exact)
    assert 0.2 < diff.mean() < 2 and diff.max() < 40


@pytest.mark.tf
def test_the_fast_idct_is_tensorflows_default_decode(photos):
    import tensorflow as tf

    data = open(photos.path(2), "rb").read()
    want = tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_FAST").numpy()
    np.testing.assert_array_equal(decode_image(data, jpeg_dct="fast"), want)


# -- PNG ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode",
    [
        "L",
        "LA",
        "RGB",
        "RGBA",
        "P",
        "I;16",
        "1",
        pytest.param("RGB interlaced", marks=pytest.mark.tf),
    ],
)
@pytest.mark.parametrize("pyspng", [True, False])
@pytest.mark.parametrize("channels", [None, 1, 3])
def test_png_pixels_follow_the_pixel_rules_with_either_decoder(mode, pyspng, channels, monkeypatch):
    if not pyspng:
        monkeypatch.setattr(decode, "_pyspng", None)
    if mode == "RGB interlaced":  # Pillow writes no Adam7: by hand, its 7 passes
        data = _png_rows(_adam7_rows(RGB), *RGB.shape[:2], interlace=1)
        with Image.open(io.BytesIO(data)) as im:
            assert im.info.get("interlace") == 1
    elif mode == "I;16":
        data = _save(RGB[:, :, 0].astype(np.uint16) * 257)
    elif mode in ("LA", "RGBA"):
        data = _save(np.dstack([RGB[:, :, : 1 if mode == "LA" else 3], RGB[:, :, 2]]))
    elif mode == "P":
        im = Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE, colors=9)
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        data = buf.getvalue()
    elif mode == "1":
        data = _save(RGB[:, :, 0] > 128)
    else:
        data = _save(RGB if mode == "RGB" else RGB[:, :, 0])
    with Image.open(io.BytesIO(data)) as im:
        if im.mode.startswith("I"):
            grey = (np.asarray(im).astype(np.int64) >> 8).astype(np.uint8)[:, :, None]
            want3 = np.repeat(grey, 3, axis=2)
        elif im.mode in ("L", "LA", "1"):
            grey = np.asarray(im.convert("L"))[:, :, None]
            want3 = np.repeat(grey, 3, axis=2)
        else:
            want3 = np.asarray(im.convert("RGB"))
            grey = None
    got = decode_image(data, channels=channels)
    if channels == 3 or (channels is None and grey is None):
        np.testing.assert_array_equal(got, want3)
    else:
        np.testing.assert_array_equal(got, grey if grey is not None else decode.grey_of(want3))


def _chunk(kind, data, crc=None):
    crc = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _adam7_rows(hwc):
    """Filtered rows (filter 0) in Adam7's passes."""
    subs = [hwc[t::dy, lf::dx] for t, lf, dy, dx in _ADAM7]
    return b"".join(b"\x00" + r.tobytes() for sub in subs if sub.shape[1] for r in sub)


def _png_rows(rows: bytes, h=8, w=8, interlace=0):
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, interlace)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(rows))
        + _chunk(b"IEND", b"")
    )


ROWS = b"".join(b"\x00" + RGB[y, :8].tobytes() for y in range(8))


@pytest.mark.parametrize("pyspng", [True, False])
def test_a_png_short_of_rows_is_refused_by_either_decoder(pyspng, monkeypatch):
    """Pillow leaves missing rows black: the check names them (NOTE [png checks])."""
    if not pyspng:
        monkeypatch.setattr(decode, "_pyspng", None)
    np.testing.assert_array_equal(decode_image(_png_rows(ROWS)), RGB[:8, :8])
    cause = (
        "image data ends after 175 bytes: expected 200" if not pyspng else "IDAT stream too short"
    )
    with pytest.raises(ImageLoadError, match=cause):
        decode_image(_png_rows(ROWS[:-25]))


def test_a_bad_chunk_crc_is_named_before_any_decoder_runs(monkeypatch):
    data = bytearray(_png_rows(ROWS))
    data[45] ^= 0xFF  # a byte of IDAT's data
    monkeypatch.setattr(decode, "_png_pixels", lambda src: pytest.fail("decoded"))
    with pytest.raises(ImageLoadError, match="chunk 'IDAT' fails its CRC checksum"):
        decode_image(bytes(data))


def test_the_bomb_rule_refuses_by_the_header_before_any_decode(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 30)
    monkeypatch.setattr(decode, "_pixels", lambda *a: pytest.fail("decoded"))
    for data in (_png_rows(ROWS), _save(RGB, "JPEG"), _save(RGB, "BMP")):
        with pytest.raises(ImageLoadError, match="decompression-bomb limit"):
            decode_image(data)


def test_other_formats_decode_by_pillow_and_are_told_by_content():
    bmp = _save(RGB, "BMP")
    np.testing.assert_array_equal(decode_image(bmp), RGB)
    with pytest.raises(ImageLoadError, match="not a recognized image format"):
        decode_image(b"hello " * 20)


# -- both backends call it -------------------------------------------------------------------


def _every_other_column_mirrored(img, rng):  # module level: workers may get it by pickle
    return np.ascontiguousarray(img[:, ::2, ::-1])


_HOWS = {
    "as stored": {},
    "size": {"size": (40, 30)},
    "crop": {"transform": T.Compose([T.RandomResizedCrop(48), T.RandomHorizontalFlip()])},
    "callable": {"transform": _every_other_column_mirrored},
}


@pytest.mark.tf
@pytest.mark.parametrize("how", list(_HOWS))
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("jpeg_dct", ["accurate", "fast"])
def test_both_backends_deliver_the_same_pixels(photos, tmp_path, how, channels, jpeg_dct):
    if how in ("as stored", "callable"):  # one size for a batch: the 224px JPEG set's
        from photos import make_jpeg_set

        index = make_jpeg_set(tmp_path, count=12, size=64, progress=False)
    else:
        index = photos
    kw = {"index": index, "batch_size": 6, "seed": 4, "channels": channels, "jpeg_dct": jpeg_dct}
    kw.update(_HOWS[how])
    got = {
        b: [x["image"] for x in make_loader(backend=b, num_workers=2, **kw)]
        for b in ("torch", "tf")
    }
    assert len(got["torch"]) == len(got["tf"]) == 2
    for x, y in zip(got["torch"], got["tf"], strict=True):
        assert torch.equal(x, y), how
