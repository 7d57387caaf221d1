"""A corpus of bad inputs: each case's outcome, the same in both loaders, in raise and skip mode.

Run `python -m pytest tests/test_bad_inputs.py -v` for the list of cases and their outcomes.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import sys
import tempfile

import numpy as np
import pytest
import torch
from conftest import BACKENDS, ROOT, run_python
from PIL import Image

from tfpathloader import ImageLoadError, IndexFormatError, PathIndex, write_index
from tfpathloader.errors import BatchShapeError
from tfpathloader.index import encode_example
from tfpathloader.index._records import RecordWriter
from tfpathloader.load.loader import make_loader

SIZE = (8, 8)


def _png(arr, **kw):
    buf = io.BytesIO()
    Image.fromarray(arr, **kw).save(buf, format="PNG")
    return buf.getvalue()


def _gif(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="GIF")
    return buf.getvalue()


def _rgb(seed):
    return np.random.default_rng(seed).integers(0, 256, (*SIZE, 3), dtype=np.uint8)


def _jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


# name -> (file name, bytes or a marker, expected: "ok" or a phrase of the cause)
def corpus():
    rgb = _rgb(1)
    good_png = _png(rgb)
    good_jpeg = _jpeg_bytes(Image.fromarray(_rgb(2)))
    cmyk = _jpeg_bytes(Image.fromarray(np.dstack([_rgb(3), _rgb(4)[:, :, :1]]), mode="CMYK"))
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=12)
    buf = io.BytesIO()
    palette.save(buf, format="PNG")
    return {
        "missing file": ("missing.png", None, "file not found"),
        "empty file": ("empty.png", b"", "file is empty"),
        "truncated PNG": ("trunc.png", good_png[: len(good_png) // 2], "corrupt or truncated"),
        "truncated JPEG": ("trunc.jpg", good_jpeg[: len(good_jpeg) // 2], "corrupt or truncated"),
        "text file named .png": ("notes.png", b"just some text\n" * 20, "not a recognized image"),
        "directory": ("a_folder.png", "DIR", "is a directory"),
        "over the decompression-bomb limit": (
            "huge.png",
            _png(np.zeros((40, 40), np.uint8)),
            "decompression-bomb",
        ),
        "over the limit, JPEG": (
            "huge.jpg",
            _jpeg_bytes(Image.new("RGB", (40, 40))),
            "decompression-bomb",
        ),
        "over the limit, GIF": (
            "huge.gif",
            _gif(np.zeros((40, 40), np.uint8)),
            "decompression-bomb",
        ),
        "CMYK JPEG": ("cmyk.jpg", cmyk, "ok"),
        "16-bit PNG": ("sixteen.png", _png(_rgb(5)[:, :, 0].astype(np.uint16) * 257), "ok"),
        "palette PNG": ("palette.png", buf.getvalue(), "ok"),
        "RGBA PNG": ("rgba.png", _png(np.dstack([rgb, _rgb(6)[:, :, :1]])), "ok"),
        "non-ASCII file name": ("zürich-東京-é.png", good_png, "ok"),
    }


CASES = corpus()


def build(folder, name):
    """An index of [good, CASE, good, good]: record 1 is the case."""
    fname, content, expected = CASES[name]
    good = _png(_rgb(9))
    paths = ["good0.png", fname, "good2.png", "good3.png"]
    for p in paths[::2] + paths[3:]:
        (folder / p).write_bytes(good)
    if content == "DIR":
        (folder / fname).mkdir()
    elif content is not None:
        (folder / fname).write_bytes(content)
    return write_index(folder / "index.tfrecord", paths, [0, 1, 0, 1]), expected


@pytest.fixture
def small_bomb_limit(monkeypatch):
    # 40x40 = 1,600 pixels is over this limit; the 8x8 good images are not.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)


@pytest.mark.tf  # compares the two backends
@pytest.mark.parametrize("name", list(CASES))
def test_raise_mode_outcome_is_the_same_in_both_loaders(tmp_path, name, small_bomb_limit):
    index, expected = build(tmp_path, name)
    results = {}
    for backend in ("torch", "tf"):
        loader = make_loader(
            backend=backend,
            index=index,
            batch_size=4,
            shuffle="none",
            channels=3,
            num_workers=2 if backend == "torch" else 0,
        )
        try:
            batches = list(loader)
        except ImageLoadError as e:
            results[backend] = ("error", e.record_id, e.path, e.cause)
        else:
            assert len(batches) == 1
            results[backend] = ("ok", batches[0]["index"].tolist(), batches[0]["image"])
    if expected == "ok":
        for backend in ("torch", "tf"):
            assert results[backend][:2] == ("ok", [0, 1, 2, 3]), (backend, results[backend])
        a, b = results["torch"][2].int(), results["tf"][2].int()
        assert a.shape == b.shape == (4, 3, *SIZE)
        assert torch.equal(a, b)  # CMYK JPEGs too: the tf backend hands them to Pillow
    else:
        assert results["torch"] == results["tf"], results
        kind, rid, path, cause = results["torch"]
        assert (kind, rid, path) == ("error", 1, index.path(1))
        assert expected in cause, cause


@pytest.mark.tf  # compares the two backends
@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c[2] != "ok"])
def test_skip_mode_skips_counts_and_reports_the_same(tmp_path, name, small_bomb_limit):
    index, expected = build(tmp_path, name)
    results = {}
    for backend in ("torch", "tf"):
        loader = make_loader(
            backend=backend, index=index, batch_size=4, shuffle="none", channels=3, on_error="skip"
        )
        with pytest.warns(RuntimeWarning, match="skipped 1 unreadable"):
            delivered = [b["index"].tolist() for b in loader]
        results[backend] = (delivered, [(s["record_id"], s["cause"]) for s in loader.skipped])
    assert results["torch"] == results["tf"]
    delivered, skipped = results["torch"]
    assert delivered == [[0, 2, 3]]
    assert len(skipped) == 1 and skipped[0][0] == 1 and expected in skipped[0][1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_first_bad_record_of_a_batch_is_the_one_reported(tmp_path, backend):
    """A batch's records are all planned before any is decoded; the outcome stays the one of
    taking them in order: record 1 fails only when decoded, record 2 already when planned."""
    _, truncated, _ = CASES["truncated JPEG"]
    good = _png(_rgb(9))
    text = b"just some text\n" * 20  # refused by inspect(): no image header
    files = {"good0.png": good, "trunc.jpg": truncated, "notes.png": text, "good3.png": good}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    index = write_index(tmp_path / "index.tfrecord", list(files), [0, 1, 0, 1])
    kw = {"backend": backend, "index": index, "batch_size": 4, "shuffle": "none", "channels": 3}
    with pytest.raises(ImageLoadError) as err:
        list(make_loader(num_workers=1, **kw))
    assert (err.value.record_id, err.value.path) == (1, index.path(1))
    assert "corrupt or truncated" in err.value.cause
    loader = make_loader(on_error="skip", **kw)
    with pytest.warns(RuntimeWarning, match="skipped 2 unreadable"):
        assert [b["index"].tolist() for b in loader] == [[0, 3]]
    assert [s["record_id"] for s in loader.skipped] == [1, 2]
    assert "corrupt or truncated" in loader.skipped[0]["cause"]
    assert "not a recognized image" in loader.skipped[1]["cause"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_path_escaping_the_root_is_refused_before_any_loader(tmp_path, backend):
    (tmp_path / "data").mkdir()
    Image.fromarray(_rgb(0)).save(tmp_path / "outside.png")
    Image.fromarray(_rgb(1)).save(tmp_path / "data" / "inside.png")
    out = str(tmp_path / "data" / "index.tfrecord")
    with RecordWriter(out) as w:
        w.write(encode_example(0, 0, "inside.png"))
        w.write(encode_example(1, 0, "../outside.png"))
    with pytest.raises(IndexFormatError, match="leaves the index root") as err:
        PathIndex.read(out)
    assert err.value.record == 1
    index = PathIndex.read(out, allow_outside_root=True)  # explicitly allowed: both load it
    batch = next(iter(make_loader(backend=backend, index=index, batch_size=2, shuffle="none")))
    assert batch["index"].tolist() == [0, 1]


@pytest.mark.tf  # compares the two backends
def test_unreadable_file_is_named_in_both_loaders():
    """Permission bits do not stop root, so as root the check drops to 'nobody' first."""
    folder = tempfile.mkdtemp(prefix="tfpl-perm-", dir="/tmp")
    try:
        os.chmod(folder, 0o755)
        good = _png(_rgb(3))
        for p in ("a.png", "secret.png", "c.png", "d.png"):
            with open(os.path.join(folder, p), "wb") as f:
                f.write(good)
        index = write_index(
            os.path.join(folder, "index.tfrecord"),
            ["a.png", "secret.png", "c.png", "d.png"],
            [0, 0, 1, 1],
        )
        os.chmod(os.path.join(folder, "secret.png"), 0)
        for root, dirs, files in os.walk(folder):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o755)
            for f in files:
                if f != "secret.png":
                    os.chmod(os.path.join(root, f), 0o644)
        code = f"""
        import json, os, sys
        sys.path.insert(0, {os.path.join(ROOT, "tests")!r})
        import numpy, torch, tensorflow
        from tfpathloader import PathIndex
        from tfpathloader.load.loader import make_loader
        index = PathIndex.read({index.files[0]!r})
        loaders = {{b: make_loader(backend=b, index=index, batch_size=4, shuffle="none")
                   for b in ("torch", "tf")}}
        for ld in loaders.values():   # trace and import everything while still root
            list(ld)
        if os.geteuid() == 0:
            os.setgid(65534)
            os.setuid(65534)
        out = {{}}
        for name, ld in loaders.items():
            ld.set_epoch(1)
            try:
                list(ld)
                out[name] = "ok"
            except Exception as e:
                out[name] = [type(e).__name__, getattr(e, "record_id", None), getattr(e, "cause", str(e))]
        print(json.dumps(out))
        """
        result = run_python(code)
        assert result.returncode == 0, result.stderr[-3000:]
        got = json.loads(result.stdout.strip().splitlines()[-1])
        assert got["torch"] == got["tf"] == ["ImageLoadError", 1, "permission denied"]
    finally:
        for root, _, files in os.walk(folder):
            for f in files:
                os.chmod(os.path.join(root, f), stat.S_IRUSR | stat.S_IWUSR)
        shutil.rmtree(folder, ignore_errors=True)


def test_verify_reports_every_bad_input(tmp_path, small_bomb_limit, capsys):
    from tfpathloader.tools.cli import main

    folder = tmp_path / "all"
    folder.mkdir()
    paths, expected = [], {}
    for k, (fname, content, outcome) in enumerate(CASES.values()):
        p = f"{k:02d}-{fname}"
        if content == "DIR":
            (folder / p).mkdir()
        elif content is not None:
            (folder / p).write_bytes(content)
        paths.append(p)
        expected[k] = outcome
    write_index(folder / "index.tfrecord", paths, [0] * len(paths))
    code = main(
        [
            "index",
            "verify",
            str(folder / "index.tfrecord"),
            "--decode",
            "--json",
            "--quiet",
            "--workers",
            "1",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 1
    failed = {f["record_id"]: f["problem"] for f in report["failures"]}
    assert set(failed) == {k for k, o in expected.items() if o != "ok"}
    for k, problem in failed.items():
        assert expected[k] in problem, (k, problem)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))


def _huge_blank_png(width: int, height: int) -> bytes:
    """A valid grey PNG of width x height zeros, written row by row (never held decoded)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    z = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0, then the samples
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.tf
def test_a_decompression_bomb_is_refused_before_it_is_decoded(tmp_path):
    """Pillow refuses by the header; the tf backend must too, not after decoding 1.2 GB."""
    side = 20_000  # 400 M pixels: over 2x Pillow's default limit; 1.2 GB decoded as RGB
    (tmp_path / "bomb.png").write_bytes(_huge_blank_png(side, side))
    write_index(tmp_path / "index.tfrecord", ["bomb.png"], [0])
    code = f"""
    import json, resource
    from tfpathloader import ImageLoadError, PathIndex
    from tfpathloader.load.loader import make_loader
    index = PathIndex.read({str(tmp_path / "index.tfrecord")!r})
    out = {{}}
    for backend in ("torch", "tf"):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:  # refused when the loader reads the first record's header (its batch shape)
            list(make_loader(backend=backend, index=index, batch_size=1, shuffle="none",
                             channels=3, num_workers=0))
            cause = "loaded"
        except ImageLoadError as e:
            cause = e.cause
        grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        out[backend] = [cause, grew // 1024]
    print(json.dumps(out))
    """
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    for backend, (cause, grew_mb) in got.items():
        assert "decompression-bomb" in cause, (backend, cause)
        # Decoding would take 1,200 MB; refusing by the header takes next to nothing.
        assert grew_mb < 300, (backend, grew_mb)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch_size", [8, 5])
def test_mixed_image_sizes_in_a_batch_name_the_record_in_both_loaders(
    tmp_path, batch_size, backend
):
    paths = []
    for i in range(16):
        shape = (10, 12, 3) if i == 6 else (*SIZE, 3)
        Image.fromarray(np.full(shape, i, np.uint8)).save(tmp_path / f"{i}.png")
        paths.append(f"{i}.png")
    index = write_index(tmp_path / "index.tfrecord", paths, [0] * 16)
    first = 0 if batch_size == 8 else 5  # the first record of the batch holding record 6
    kw = {"index": index, "batch_size": batch_size, "shuffle": "none", "channels": 3}
    with pytest.raises(BatchShapeError) as err:  # the library's error, from a worker too
        list(make_loader(backend=backend, num_workers=2, **kw))
    message = str(err.value)
    assert (err.value.record_id, err.value.path) == (6, index.path(6))
    assert f"record 6 ({index.path(6)}) has shape (10, 12, 3)" in message
    assert f"but record {first} has (8, 8, 3)" in message
    assert "pass size=(height, width)" in message
    # Resized, the same images batch.
    batches = list(make_loader(backend=backend, size=SIZE, **kw))
    assert [b["image"].shape[1:] for b in batches] == [(3, *SIZE)] * len(batches)


@pytest.mark.tf  # compares the two backends
@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_cmyk_jpegs_among_others_give_pillows_pixels_in_both_loaders(tmp_path, on_error):
    paths = []
    for i in range(16):
        img = Image.fromarray(_rgb(100 + i))
        if i in (3, 12):  # any K: where libjpeg's and Pillow's CMYK -> RGB differ
            img = Image.fromarray(np.dstack([_rgb(i), _rgb(50 + i)[:, :, :1]]), mode="CMYK")
        (tmp_path / f"{i}.jpg").write_bytes(_jpeg_bytes(img))
        paths.append(f"{i}.jpg")
    index = write_index(tmp_path / "index.tfrecord", paths, [0] * 16)
    kw = {"index": index, "batch_size": 8, "shuffle": "none", "channels": 3, "on_error": on_error}
    a = [b["image"] for b in make_loader(backend="torch", **kw)]
    b = [b["image"] for b in make_loader(backend="tf", **kw)]
    assert len(a) == len(b) == 2
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
