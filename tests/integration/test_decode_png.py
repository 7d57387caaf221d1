"""The torch backend's PNG path (libspng via pyspng): Pillow's pixels and Pillow's outcomes."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tfpathloader import ImageLoadError, make_loader, write_index
from tfpathloader.load import _png
from tfpathloader.load._crop import decode_into, load_cropped
from tfpathloader.load.decode import as_array, decode_image, load_image

pytest.importorskip("pyspng")

# Adam7's passes: (first row, first column, row step, column step).
ADAM7 = (
    (0, 0, 8, 8),
    (0, 4, 8, 8),
    (4, 0, 8, 4),
    (0, 2, 4, 4),
    (2, 0, 4, 2),
    (0, 1, 2, 2),
    (1, 0, 2, 1),
)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _rows(arr: np.ndarray, interlace: bool = False) -> bytes:
    """Filtered rows (filter 0), in Adam7's passes when interlaced (Pillow writes no Adam7)."""
    hwc = arr if arr.ndim == 3 else arr[:, :, None]
    subs = [hwc[t::dy, lf::dx] for t, lf, dy, dx in ADAM7] if interlace else [hwc]
    return b"".join(b"\x00" + r.tobytes() for s in subs if s.shape[1] for r in s)


def png(
    arr: np.ndarray,
    *,
    interlace: bool = False,
    rows: bytes | None = None,
    stream: bytes | None = None,
    before: tuple[tuple[bytes, bytes], ...] = (),
    after: tuple[tuple[bytes, bytes], ...] = (),
    end: bytes = _chunk(b"IEND", b""),
    ihdr: bytes | None = None,
) -> bytes:
    """An 8-bit grey or RGB PNG written by hand, every chunk CRC right (what check_bytes
    passes): the decoders judge the rest."""
    h, w = arr.shape[:2]
    colour = 2 if arr.ndim == 3 else 0
    ihdr = ihdr or struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, int(interlace))
    if stream is None:
        stream = zlib.compress(_rows(arr, interlace) if rows is None else rows, 9)
    parts = [_chunk(b"IHDR", ihdr), *(_chunk(k, d) for k, d in before), _chunk(b"IDAT", stream)]
    return b"\x89PNG\r\n\x1a\n" + b"".join(parts + [_chunk(k, d) for k, d in after]) + end


def pillow_png(arr: np.ndarray, mode: str | None = None) -> bytes:
    """Pillow's own PNG of ``arr``, in ``mode`` (I;16: 16-bit grey)."""
    if mode == "I;16":
        im = Image.fromarray(arr[:, :, 0].astype(np.uint16) * 257)
    else:
        im = Image.fromarray(arr).convert(mode or Image.fromarray(arr).mode)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def outcome(decode, data: bytes, channels=3, size=None):
    """("ok", pixels) or ("error", cause): what a decoder makes of the bytes."""
    try:
        pixels = decode(data, channels, size)
        return ("ok", pixels.shape, pixels.tobytes())
    except ImageLoadError as e:
        return ("error", e.cause)


def today(data, channels, size):  # Pillow, as decode.py decodes
    return decode_image(data, channels=channels, size=size)


def ours(data, channels, size):
    got = decode_into(data, channels=channels, size=size, out=None, path="p", record_id=1)
    return as_array(*got)


def _images():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (13, 7), np.uint8)
    rgb = rng.integers(0, 256, (9, 11, 3), np.uint8)
    return grey, rgb


def fast(data: bytes, **kw) -> np.ndarray | None:
    kw = {"channels": None, "size": None, "out": None, "path": "p", "record_id": 1, **kw}
    return _png.load_png(data, **kw)


@pytest.mark.parametrize("kind", ["grey", "rgb", "grey interlaced", "rgb interlaced", "pillow"])
@pytest.mark.parametrize("channels", [None, 1, 3])
@pytest.mark.parametrize("size", [None, (5, 6)])
def test_libspng_gives_pillows_pixels(kind, channels, size):
    grey, rgb = _images()
    arr = grey if kind.startswith("grey") else rgb
    data = pillow_png(rgb) if kind == "pillow" else png(arr, interlace="interlaced" in kind)
    assert fast(data) is not None  # the libspng path takes it
    want = decode_image(data, channels=channels, size=size)
    got = fast(data, channels=channels, size=size)
    np.testing.assert_array_equal(got, want)
    row = np.full(want.shape, 7, np.uint8)  # a batch row of the right shape is written
    assert fast(data, channels=channels, size=size, out=row) is row
    np.testing.assert_array_equal(row, want)
    wrong = np.zeros((2, 2, 1), np.uint8)  # not its shape: a new array, the row untouched
    got = fast(data, channels=channels, size=size, out=wrong)
    assert got is not wrong and not wrong.any()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode", ["P", "RGBA", "LA", "I;16", "1"])
def test_other_pngs_go_to_pillow(mode):
    _, rgb = _images()
    data = pillow_png(rgb, mode)
    assert fast(data) is None
    for channels in (None, 1, 3):
        assert outcome(ours, data, channels) == outcome(today, data, channels)


def _cases() -> dict[str, bytes]:
    """PNGs (chunk CRCs right) where libspng and Pillow could part: each must keep its outcome."""
    grey, rgb = _images()
    rows = _rows(rgb)
    stream = zlib.compress(rows)
    bad = stream[:-1] + bytes([stream[-1] ^ 1])
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", 11, 9, 8, 2, 0, 0, 0))
    return {
        "wrong Adler-32": png(rgb, stream=bad),
        "Adler-32 missing": png(rgb, stream=stream[:-4]),
        "one byte short": png(rgb, rows=rows[:-1]),
        "one row short (Pillow pads it)": png(rgb, rows=rows[:-34]),
        "a row too many": png(rgb, rows=rows + rows[:34]),
        "data after the zlib stream": png(rgb, stream=stream + b"\0" * 7),
        "a second zlib stream": png(rgb, after=((b"IDAT", stream),)),
        "row filter 5": png(rgb, rows=b"\x05" + rows[1:]),
        "no IEND": png(rgb, end=b""),
        "IEND cut": png(rgb, end=_chunk(b"IEND", b"")[:-3]),
        "garbage after IEND": png(rgb, end=_chunk(b"IEND", b"") + b"junk" * 9),
        "a chunk after IEND": png(rgb, end=_chunk(b"IEND", b"") + _chunk(b"tEXt", b"a\0b")),
        "IDATs apart": png(rgb, after=((b"tEXt", b"a\0b"), (b"IDAT", b""))),
        "unknown critical chunk": png(rgb, before=((b"ABCD", b"x"),)),
        "unknown ancillary chunk": png(rgb, before=((b"abCd", b"x"),), after=((b"zzZz", b""),)),
        "IHDR twice": png(rgb, before=((b"IHDR", ihdr[8:21]),)),
        "tRNS right": png(rgb, before=((b"tRNS", b"\0\1\0\2\0\3"),)),
        "tRNS grey right": png(grey, before=((b"tRNS", b"\0\1"),)),
        "tRNS too short": png(rgb, before=((b"tRNS", b"\0\1"),)),
        "tRNS too long": png(grey, before=((b"tRNS", b"\0\1\0"),)),
        "gAMA too short": png(rgb, before=((b"gAMA", b"\0\1"),)),
        "gAMA too short after IDAT": png(rgb, after=((b"gAMA", b"\0\1"),)),
        "pHYs, sRGB, cHRM, gAMA": png(
            rgb,
            before=(
                (b"gAMA", struct.pack(">I", 45455)),
                (b"cHRM", bytes(32)),
                (b"sRGB", b"\0"),
                (b"pHYs", bytes(9)),
            ),
        ),
        "iCCP, bad compression": png(rgb, before=((b"iCCP", b"name\0\1xx"),)),
        "zTXt, bad compression": png(rgb, before=((b"zTXt", b"k\0\1xx"),)),
        "acTL alone": png(rgb, before=((b"acTL", struct.pack(">II", 1, 0)),)),
        "PLTE in an RGB PNG": png(rgb, before=((b"PLTE", bytes(range(12))),)),
        "empty IDAT first": png(rgb, before=((b"IDAT", b""),)),
        "width 0": png(rgb, ihdr=struct.pack(">IIBBBBB", 0, 9, 8, 2, 0, 0, 0)),
        "interlace 2": png(rgb, ihdr=struct.pack(">IIBBBBB", 11, 9, 8, 2, 0, 0, 2)),
        "bomb header": png(rgb, ihdr=struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)),
    }


CASES = _cases()


@pytest.mark.parametrize("name", list(CASES))
def test_every_case_keeps_pillows_outcome(name):
    data = CASES[name]
    for channels in (None, 1, 3):
        assert outcome(ours, data, channels) == outcome(today, data, channels), channels


def test_the_cases_exercise_both_paths():
    def took(name):
        try:
            return fast(CASES[name]) is not None
        except ImageLoadError:
            return "raised"

    assert {n: took(n) for n in CASES if took(n) is not False} == {
        "data after the zlib stream": True,
        "a second zlib stream": True,
        "garbage after IEND": True,
        "a chunk after IEND": True,
        "unknown ancillary chunk": True,
        "tRNS right": True,
        "tRNS grey right": True,
        "pHYs, sRGB, cHRM, gAMA": True,
        "PLTE in an RGB PNG": True,
        "empty IDAT first": True,
        "bomb header": "raised",
    }


def test_the_bomb_check_runs_before_any_decode(monkeypatch):
    class Refuse:
        def load(self, *args):
            raise AssertionError("decoded before the decompression-bomb check")

    monkeypatch.setattr(_png, "_pyspng", Refuse())
    with pytest.raises(ImageLoadError, match=r"record 1 \(p\): .*decompression-bomb limit"):
        fast(CASES["bomb header"])


def test_without_pyspng_pillow_decodes_everything(monkeypatch, tmp_path):
    grey, rgb = _images()
    files = {"g.png": png(grey), "i.png": png(rgb, interlace=True), "p.png": pillow_png(rgb)}
    monkeypatch.setattr(_png, "_pyspng", None)
    for data in files.values():
        assert fast(data) is None
        assert outcome(ours, data) == outcome(today, data)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    index = write_index(tmp_path / "index.tfrecord", list(files), [0, 1, 2])
    kw = {"backend": "torch", "index": index, "batch_size": 3, "shuffle": "none", "size": (9, 11)}
    batch = next(iter(make_loader(num_workers=0, channels=3, **kw)))
    for img, name in zip(batch["image"], files, strict=True):
        want = load_image(tmp_path / name, channels=3, size=(9, 11))
        np.testing.assert_array_equal(img.permute(1, 2, 0).numpy(), want)


def test_the_loader_decodes_pngs_with_libspng_into_its_batches(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    paths = []
    for i in range(6):
        arr = rng.integers(0, 256, (10, 12) if i % 2 else (10, 12, 3), np.uint8)
        (tmp_path / f"{i}.png").write_bytes(png(arr, interlace=i % 3 == 0))
        paths.append(f"{i}.png")
    index = write_index(tmp_path / "index.tfrecord", paths, [0] * 6)
    calls = []
    real = _png._pyspng.load
    monkeypatch.setattr(_png._pyspng, "load", lambda *a: calls.append(1) or real(*a))
    for channels in (1, 3):
        kw = {"backend": "torch", "index": index, "batch_size": 3, "channels": channels}
        for batch in make_loader(shuffle="none", num_workers=0, **kw):
            for img, i in zip(batch["image"], batch["index"], strict=True):
                want = load_image(index.path(int(i)), channels=channels)
                np.testing.assert_array_equal(img.permute(1, 2, 0).numpy(), want)
    assert len(calls) == 12


@pytest.mark.parametrize("channels", [1, 3])
def test_crop_pipelines_decode_pngs_with_libspng_too(tmp_path, monkeypatch, channels):
    from tfpathloader import transforms as T
    from tfpathloader.transforms import record_rng

    grey, rgb = _images()
    pipeline = T.Compose([T.RandomResizedCrop((6, 5)), T.RandomHorizontalFlip()])
    for k, arr in enumerate((grey, rgb)):
        (tmp_path / f"{k}.png").write_bytes(png(arr, interlace=k == 1))
        path = str(tmp_path / f"{k}.png")
        kw = {"channels": channels, "record_id": k}
        got = load_cropped(path, pipeline, record_rng(0, 0, k), **kw)
        monkeypatch.setattr(_png, "_pyspng", None)  # Pillow's decode, the same crop
        want = load_cropped(path, pipeline, record_rng(0, 0, k), **kw)
        monkeypatch.undo()
        assert got.shape == (6, 5, channels)
        np.testing.assert_array_equal(got, want)
