"""Hostile files (tests/hostile_corpus.py): one outcome per case in torch, tf and verify, no hang."""

from __future__ import annotations

import json
import os
import signal
import warnings

import numpy as np
import pytest
import torch
from hostile_corpus import CASES, outcomes, png, rgb

from tfpathloader import ImageLoadError, PathIndex, TransformOutputError, write_index
from tfpathloader.load.decode import read_file
from tfpathloader.load.files import FileReader
from tfpathloader.load.loader import make_loader

pytestmark = pytest.mark.tf


# The default run covers these (one index); --runslow runs the whole corpus.
QUICK = [
    "a FIFO (named pipe)",
    "symlink to an image outside the root",
    "PNG with a bad IDAT CRC",
    "PNG with a wrong zlib checksum (Adler-32), its chunk CRCs right",
    "BMP named .png",
    # NOTE [png checks]: two records each in the shared index (0.4 s for these 13)
    "PNG without IEND",
    "PNG cut right after its IDAT data",
    "PNG whose zlib stream lacks its Adler-32",
    "PNG whose Adler-32 is cut short in an IDAT of its own (libpng and Pillow load it)",
    "PNG a row short of its pixel data",
    "PNG header taller than its pixel data",
    "PNG with an unknown critical chunk",
    "PNG with a second IHDR",
    "PNG with IHDR compression method 1",
    "PNG with an IDAT length field of 2^31",
    "PNG with a tRNS chunk too short for its colour type (alpha is dropped anyway)",
    "PNG with an iCCP chunk ending after its name's NUL, before IDAT",
    "PNG with an iCCP chunk ending after its name's NUL, after IDAT",
]


@pytest.fixture(scope="module")
def corpus_outcomes(tmp_path_factory, request):
    """Outcomes of the cases this session runs, computed once (a FIFO hang fails, not hangs)."""
    full = request.config.getoption("--runslow")
    folder = str(tmp_path_factory.mktemp("hostile"))
    old = signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(600)
    try:
        return outcomes(folder, None if full else QUICK)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _timeout(signum, frame):
    raise TimeoutError("a hostile file made a loader hang")


@pytest.mark.parametrize(
    "name", [n if n in QUICK else pytest.param(n, marks=pytest.mark.slow) for n in CASES]
)
def test_one_outcome_per_case_in_torch_tf_and_verify(corpus_outcomes, name):
    o = corpus_outcomes[name]
    expected = CASES[name].expected
    index, rid = o["index"], o["record"]
    assert o["torch raise"] == o["tf raise"], o
    assert o["torch skip"] == o["tf skip"], o
    kind = o["torch raise"][0]
    if expected == "ok":
        assert o["torch raise"] == ("ok", [rid - 1, rid], "torch.uint8", (2, 3, 8, 8)), o
        assert o["torch skip"] == ("delivered", True, True), o
        assert o["verify"] == "ok", o
    else:
        assert kind == "ImageLoadError", o
        _, got_rid, path, cause = o["torch raise"]
        assert (got_rid, path) == (rid, index.path(rid)), o
        assert expected in cause, o
        assert o["torch skip"] == ("skipped", True, cause), o  # the good record still comes
        assert o["verify"] == cause, o  # verify flags it, in the loaders' words


def test_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(ImageLoadError, match="is a FIFO"):
        read_file(str(tmp_path / "pipe.png"), 3, FileReader(root=str(tmp_path)))
    with pytest.raises(ImageLoadError, match="is a FIFO"):
        FileReader().check(str(tmp_path / "pipe.png"))


def test_a_file_growing_past_the_limit_while_read_is_cut_off(tmp_path, monkeypatch):
    p = tmp_path / "grows.png"
    p.write_bytes(b"x" * 100)
    reader = FileReader(max_file_bytes=150)

    def read(fd, n):  # the file "grows" after fstat: every read returns more
        return b"y" * min(n, 64)

    monkeypatch.setattr(os, "read", read)
    with pytest.raises(ImageLoadError, match=r"over the max_file_bytes limit.*it grew"):
        reader.read(str(p))


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_record_0_unreadable_in_skip_mode_does_not_break_make_loader(tmp_path, on_error):
    paths = ["bad.png"] + [f"{i}.png" for i in range(1, 6)]
    (tmp_path / "bad.png").write_bytes(b"not an image")
    for p in paths[1:]:
        (tmp_path / p).write_bytes(png(rgb(1)[:, :, 0]))
    index = write_index(tmp_path / "index.tfrecord", paths, [0] * 6)
    for backend in ("torch", "tf"):
        kw = {"backend": backend, "index": index, "batch_size": 3, "shuffle": "none"}
        if on_error == "raise":
            with pytest.raises(ImageLoadError) as err:
                make_loader(**kw)
            assert err.value.record_id == 0
            continue
        loader = make_loader(on_error="skip", **kw)
        with pytest.warns(RuntimeWarning, match="skipped 1"):
            batches = list(loader)
        assert [b["index"].tolist() for b in batches] == [[1, 2], [3, 4, 5]]
        assert batches[0]["image"].shape[1] == 1  # grey, learned from record 1


def test_an_all_skipped_batch_is_not_yielded_but_counted_in_both(tmp_path):
    paths = [f"{i}.png" for i in range(6)]
    for i, p in enumerate(paths):
        (tmp_path / p).write_bytes(b"broken" if i in (2, 3) else png(rgb(i)))
    index = write_index(tmp_path / "index.tfrecord", paths, [0] * 6)
    got = {}
    for backend in ("torch", "tf"):
        loader = make_loader(
            backend=backend,
            index=index,
            batch_size=2,
            shuffle="none",
            channels=3,
            on_error="skip",
            num_workers=2 if backend == "torch" else 0,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            it = iter(loader)
            first = next(it)["index"].tolist()
            second = next(it)["index"].tolist()  # batch 1 (records 2, 3) is skipped whole
            consumed = loader.batches_consumed
            rest = list(it)
        got[backend] = (
            first,
            second,
            consumed,
            len(rest),
            [s["record_id"] for s in loader.skipped],
        )
    assert got["torch"] == got["tf"] == ([0, 1], [4, 5], 3, 0, [2, 3])


@pytest.mark.parametrize("on_error", ["raise", pytest.param("skip", marks=pytest.mark.slow)])
def test_transform_output_is_refused_identically(tmp_path, on_error):
    paths = [f"{i}.png" for i in range(4)]
    for i, p in enumerate(paths):
        (tmp_path / p).write_bytes(png(rgb(i)))
    index = write_index(tmp_path / "index.tfrecord", paths, [0] * 4)

    bad_sum = int(rgb(2).sum())  # record 2's image

    def transform(img, rng):
        return img.astype(np.float32) / 255 if int(img.sum()) == bad_sum else img

    got = {}
    for backend in ("torch", "tf"):
        loader = make_loader(
            backend=backend,
            index=index,
            batch_size=4,
            shuffle="none",
            channels=3,
            transform=transform,
            on_error=on_error,
        )
        with pytest.raises(TransformOutputError) as err:
            list(loader)
        got[backend] = (err.value.record_id, err.value.path, err.value.cause)
    assert got["torch"] == got["tf"]
    assert got["torch"][0] == 2 and "expected a C x H x W uint8 array" in got["torch"][2]


@pytest.mark.parametrize(
    ("output", "ok"),
    [
        (np.zeros((3, 4, 4), np.uint8), True),
        (np.zeros((3, 4, 4), np.float32), False),
        (np.zeros((4, 4), np.uint8), False),  # H x W: not C x H x W
        (np.zeros((3, 4, 4), np.int64), False),
        ([[[1]]], False),  # a list: int64 once an array
    ],
)
def test_transform_output_check(output, ok):
    from tfpathloader.load.decode import Recipe, inspect, render

    recipe = Recipe(3, callback=lambda img, rng: output)
    src = inspect(png(rgb(0)), recipe, record_id=5, path="p.png", epoch=0)
    if ok:
        assert render(src, recipe).dtype == np.uint8
    else:
        with pytest.raises(TransformOutputError, match=r"record 5 .*expected a C x H x W uint8"):
            render(src, recipe)


@pytest.mark.slow
def test_a_uint8_transform_output_is_kept_in_both(tmp_path):
    paths = [f"{i}.png" for i in range(4)]
    for i, p in enumerate(paths):
        (tmp_path / p).write_bytes(png(rgb(i)))
    index = write_index(tmp_path / "index.tfrecord", paths, [0] * 4)
    out = {}
    for backend in ("torch", "tf"):
        loader = make_loader(
            backend=backend,
            index=index,
            batch_size=4,
            shuffle="none",
            channels=3,
            transform=lambda img, rng: 255 - img,
        )
        out[backend] = next(iter(loader))["image"]
    assert out["torch"].dtype == out["tf"].dtype == torch.uint8
    assert torch.equal(out["torch"], out["tf"])


@pytest.mark.slow
def test_symlinked_root_itself_is_fine(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    for i in range(2):
        (real / f"{i}.png").write_bytes(png(rgb(i)))
    write_index(real / "index.tfrecord", ["0.png", "1.png"], [0, 1])
    os.symlink(real, tmp_path / "link")
    index = PathIndex.read(str(tmp_path / "link" / "index.tfrecord"))
    for backend in ("torch", "tf"):
        batch = next(iter(make_loader(backend=backend, index=index, batch_size=2, shuffle="none")))
        assert batch["index"].tolist() == [0, 1]


def test_verify_cli_flags_a_symlink_out_and_accepts_it_when_allowed(tmp_path, capsys):
    from tfpathloader.tools.cli import main

    (tmp_path / "data").mkdir()
    (tmp_path / "outside.png").write_bytes(png(rgb(0)))
    os.symlink(tmp_path / "outside.png", tmp_path / "data" / "in.png")
    write_index(tmp_path / "data" / "index.tfrecord", ["in.png"], [0])
    idx = str(tmp_path / "data" / "index.tfrecord")
    assert main(["index", "verify", idx, "--json", "--quiet"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert "outside the index root" in report["failures"][0]["problem"]
    assert main(["index", "verify", idx, "--json", "--quiet", "--allow-outside-root"]) == 0
    capsys.readouterr()
    args = ["index", "verify", idx, "--quiet", "--allow-outside-root", "--max-file-bytes", "10"]
    assert main(args) == 1
    assert "max_file_bytes" in capsys.readouterr().out
