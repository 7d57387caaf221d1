"""`tfpathloader demo` and `tfpathloader index build | info | verify`."""

from __future__ import annotations

import gzip
import json
import os
import struct

import numpy as np
import pytest
from PIL import Image

from tfpathloader import PathIndex
from tfpathloader.tools.cli import main
from tfpathloader.tools.demo import _sklearn_sources, make_demo


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    make_demo(out, per_label=30, test_per_label=5, workers=2, progress=False)
    return out


def test_demo_is_label_sorted_and_distinct(small_demo, capsys):
    code, out, _ = run_cli(capsys, "index", "info", str(small_demo / "index.tfrecord"), "--json")
    assert code == 0
    info = json.loads(out)
    assert info["records"] == 300 and info["num_classes"] == 10
    assert info["label_counts"] == {str(c): 30 for c in range(10)}
    index = PathIndex.read(small_demo / "index.tfrecord")
    np.testing.assert_array_equal(index.labels, np.arange(300) // 30)
    pixels = [np.asarray(Image.open(index.path(i))) for i in range(len(index))]
    assert all(p.shape == (28, 28) and p.dtype == np.uint8 for p in pixels)
    assert len({p.tobytes() for p in pixels}) == 300  # no two images are equal
    test = PathIndex.read(small_demo / "test.tfrecord")
    assert len(test) == 50 and test.label_counts().tolist() == [5] * 10


def test_demo_image_tfrecord_matches_the_pngs(small_demo):
    from tfpathloader.index._proto import Example
    from tfpathloader.index._records import iter_records

    index = PathIndex.read(small_demo / "index.tfrecord")
    for n, data in enumerate(iter_records(str(small_demo / "images.tfrecord"))):
        f = Example.FromString(data).features.feature
        assert f["index"].int64_list.value[0] == n
        assert f["label"].int64_list.value[0] == n // 30
        raw = f["image_string"].bytes_list.value[0]
        assert raw == np.asarray(Image.open(index.path(n))).tobytes()
    assert n == 299


def test_demo_is_reproducible_and_seeded(tmp_path):
    a = make_demo(tmp_path / "a", per_label=3, test_per_label=1, workers=1, progress=False, seed=1)
    b = make_demo(tmp_path / "b", per_label=3, test_per_label=1, workers=2, progress=False, seed=1)
    c = make_demo(tmp_path / "c", per_label=3, test_per_label=1, workers=1, progress=False, seed=2)
    assert a == b
    png = "train/4/00012.png"
    assert (tmp_path / "a" / png).read_bytes() == (tmp_path / "b" / png).read_bytes()
    assert (tmp_path / "a" / png).read_bytes() != (tmp_path / "c" / png).read_bytes()
    assert c["seed"] == 2


def test_test_split_uses_other_source_digits():
    train, test = _sklearn_sources(seed=0, test_fraction=0.25)
    for c in range(10):
        train_set = {x.tobytes() for x in train[c]}
        assert len(test[c]) >= 40 and len(train[c]) >= 120
        # sklearn's digits contain no exact repeats across a label, so disjoint bytes = disjoint scans
        assert not train_set & {x.tobytes() for x in test[c]}


def _write_idx(path, arr, gz):
    header = struct.pack(">I", 0x0800 | arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    if gz:
        path = str(path) + ".gz"
        data = gzip.compress(data)
    with open(path, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("gz", [False, True])
def test_demo_from_mnist_idx_files(tmp_path, gz):
    rng = np.random.default_rng(0)
    mn = tmp_path / "mnist"
    mn.mkdir()
    ytr = rng.integers(0, 10, 50)
    _write_idx(mn / "train-images-idx3-ubyte", rng.integers(0, 256, (50, 28, 28)), gz)
    _write_idx(mn / "train-labels-idx1-ubyte", ytr, gz)
    _write_idx(mn / "t10k-images-idx3-ubyte", rng.integers(0, 256, (12, 28, 28)), gz)
    _write_idx(mn / "t10k-labels-idx1-ubyte", rng.integers(0, 10, 12), gz)
    summary = make_demo(
        tmp_path / "out", mnist=mn, per_label=None, test_per_label=None, progress=False
    )
    assert summary["splits"]["train"]["records"] == 50
    index = PathIndex.read(tmp_path / "out" / "index.tfrecord")
    np.testing.assert_array_equal(index.labels, np.sort(ytr))  # label-sorted
    assert len(PathIndex.read(tmp_path / "out" / "test.tfrecord")) == 12


def test_index_build_info_verify(tmp_path, capsys):
    root = tmp_path / "imgs"
    for cls in ("cat", "dog"):
        for i in range(3):
            p = root / cls / f"{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (5, 5), color=i * 40).save(p)
    code, out, _ = run_cli(capsys, "index", "build", str(root), "--shards", "2", "--quiet")
    assert code == 0 and "indexed 6 images in 2 classes" in out
    code, out, _ = run_cli(capsys, "index", "info", str(root / "index.tfrecord"))
    assert code == 0 and "records:   6" in out and "cat" in out and "shards:    2" in out
    code, out, _ = run_cli(
        capsys, "index", "verify", str(root / "index.tfrecord"), "--decode", "--quiet"
    )
    assert code == 0 and "ok: all 6 files exist and decode" in out
    # Break two images: one missing, one not an image.
    os.unlink(root / "cat" / "1.png")
    (root / "dog" / "2.png").write_text("not a png")
    code, out, _ = run_cli(capsys, "index", "verify", str(root / "index.tfrecord"), "--quiet")
    assert code == 1 and "record 1:" in out and "file not found" in out and "dog/2.png" not in out
    code, out, _ = run_cli(
        capsys, "index", "verify", str(root / "index.tfrecord"), "--decode", "--json", "--quiet"
    )
    report = json.loads(out)
    assert code == 1 and not report["ok"]
    assert [(f["record_id"], f["problem"].split(" (")[0]) for f in report["failures"]] == [
        (1, "file not found"),
        (5, "not a recognized image format"),
    ]


def test_cli_errors_are_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "bad.tfrecord"
    bad.write_bytes(b"garbage that is not a tfrecord at all")
    code, _, err = run_cli(capsys, "index", "info", str(bad))
    assert code == 2 and str(bad) in err and "record 0" in err and "Traceback" not in err


def test_help_mentions_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    for cmd in ("demo", "index"):
        assert cmd in out


@pytest.mark.slow
def test_full_demo_index_info(demo_data, capsys):
    code, out, _ = run_cli(capsys, "index", "info", str(demo_data / "index.tfrecord"), "--json")
    info = json.loads(out)
    assert code == 0 and info["records"] == 70_000
    assert info["label_counts"] == {str(c): 7000 for c in range(10)}
    index = PathIndex.read(demo_data / "index.tfrecord")
    np.testing.assert_array_equal(index.labels, np.arange(70_000) // 7000)
    test = PathIndex.read(demo_data / "test.tfrecord")
    assert len(test) == 2000 and test.label_counts().tolist() == [200] * 10
