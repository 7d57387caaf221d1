"""benchmarks/bench.py and benchmarks/peers.py: every row over the same files, each in its own
process, ratios to raw; the image-set makers of benchmarks/photos.py."""

from __future__ import annotations

import json
import os

import bench
import numpy as np
import peers
import pytest
from bench import ROWS, _tabulate, format_bench_table, memory_mib, run_bench
from conftest import make_images
from photos import make_jpeg_set, make_photo_set
from procstats import cpu_s, descendants, proc_stats

from tfpathloader import write_index


def _check_columns_agree(result):
    """images/s and "x raw" come from the same numbers: ratio == median rate / raw median rate."""
    raw = result["rows"]["raw"]["images_per_s"]
    for r in result["rows"].values():
        if "skipped" in r:
            continue
        assert r["images_per_s"] == pytest.approx(float(np.median(r["runs"])), abs=0.1)
        assert r["ratio_to_raw"] == pytest.approx(r["images_per_s"] / raw, rel=0.01, abs=2e-3)


@pytest.mark.slow
def test_bench_raw_rows_in_their_own_processes(tmp_path):
    paths, labels = make_images(tmp_path, 40, size=(16, 16))
    index = write_index(tmp_path / "index.tfrecord", paths, labels)
    result = run_bench(index, rows=("raw", "raw-lean"), workers=1, repeat=2, progress=False)
    rows = result["rows"]
    assert result["images"] == 40 and result["image_shape"] == [16, 16, 1]
    assert set(rows) == {"raw", "raw-lean"} and rows["raw"]["ratio_to_raw"] == 1.0
    for r in rows.values():
        assert r["images_per_s"] > 0 and len(r["runs"]) == 2
        assert r["first_batch_s"] is None  # no batches in a raw row
    _check_columns_agree(result)
    assert "| lean raw: os.read + decode |" in format_bench_table(result)


@pytest.mark.slow
def test_bench_cli_every_row(tmp_path, capsys):
    paths, labels = make_images(tmp_path, 48, size=(16, 16))
    index = write_index(tmp_path / "index.tfrecord", paths, labels)
    argv = [index.files[0], "--workers", "1", "--batch-size", "16", "--repeat", "1"]
    assert bench.main([*argv, "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = result["rows"]
    assert list(rows) == ["raw", "raw-lean", "torch", "tf"]  # our rows: no peers
    for name, r in rows.items():
        assert r["images_per_s"] > 0 and len(r["runs"]) == 1
        assert r["mem_mib"] > 0 and r["uss_mib"] > 0  # from the untimed memory epoch
        if name not in ("raw", "raw-lean"):
            assert r["first_batch_s"] > 0 and r["cold_start_s"] > 0
    _check_columns_agree(result)


def test_the_bench_holds_only_our_rows():
    assert list(ROWS) == ["raw", "raw-lean", "torch", "tf", "torch-fast", "tf-fast"]
    assert list(peers.CATALOG)[: len(ROWS)] == list(ROWS)  # the peers come after ours


@pytest.mark.slow
def test_peers_script_every_row(tmp_path, capsys):
    paths, labels = make_images(tmp_path, 48, size=(16, 16))
    index = write_index(tmp_path / "index.tfrecord", paths, labels)
    argv = [index.files[0], "--workers", "1", "--batch-size", "16", "--repeat", "1"]
    assert peers.main([*argv, "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = result["rows"]
    assert list(rows) == [
        "raw",
        "raw-lean",
        "torch",
        "tf",
        "baseline",
        "stateful",
        "grain",
        "tf-hand",
        "dali",
    ]
    for name, r in rows.items():
        if "skipped" in r:  # a peer whose package is missing says so
            assert name in ("stateful", "grain", "dali") and "pip install" in r["skipped"]
            continue
        assert r["images_per_s"] > 0 and len(r["runs"]) == 1
        assert r["mem_mib"] > 0 and r["uss_mib"] > 0  # from the untimed memory epoch
        if name not in ("raw", "raw-lean"):
            assert r["first_batch_s"] > 0 and r["cold_start_s"] > 0
    _check_columns_agree(result)


def test_skipped_rows_say_why_in_the_table():
    run = {"images": 10, "first_s": 0.1, "seconds": 1.0, "uss_mib": 50.0, "cpu_ms_per_image": 2}
    raw = {**run, "first_s": None, "seconds": 0.5}
    table = _tabulate(
        {"raw": [raw], "torch": [run], "grain": []},
        {"torch": 0.5},
        {"grain": "the grain row needs the 'grain' package: pip install 'tfpathloader[bench]'"},
        ["raw", "torch", "grain"],
        {name: peers.CATALOG[name].title for name in ("raw", "torch", "grain")},
    )
    assert table["torch"]["ratio_to_raw"] == 0.5 and table["torch"]["images_per_s"] == 10
    result = {
        "images": 10,
        "image_shape": [8, 8, 1],
        "workers": 1,
        "batch_size": 4,
        "repeat": 1,
        "rows": table,
    }
    text = format_bench_table(result)
    assert "| Grain MapDataset + mp_prefetch | skipped: the grain row needs" in text


def test_bench_rejects_unknown_rows(image_dir):
    _, index = image_dir
    with pytest.raises(ValueError, match="unknown bench rows"):
        run_bench(index, rows=("raw", "dali"))


def test_memory_and_cpu_of_a_process_tree():
    import subprocess
    import sys

    if not os.path.exists(f"/proc/{os.getpid()}/smaps_rollup"):
        pytest.skip("needs Linux /proc")
    uss, own = memory_mib(os.getpid())
    assert uss > 1 and own > 1
    assert cpu_s(os.getpid()) > 0
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert descendants(os.getpid())[0] == os.getpid() and child.pid in descendants(os.getpid())
        stats = proc_stats(child.pid)
        assert stats["threads"] >= 1 and stats["fds"] >= 3 and stats["rss_mb"] > 0
        assert set(stats) == {"fds", "rss_mb", "pss_mb", "private_dirty_mb", "threads"}
    finally:
        child.kill()
        child.wait()


def test_make_jpeg_set(tmp_path):
    from PIL import Image

    index = make_jpeg_set(tmp_path / "jpeg", count=6, size=32, progress=False)
    assert len(index) == 6 and index.classes == ("china", "flower")
    assert index.labels.tolist() == [0, 0, 0, 1, 1, 1]
    im = Image.open(index.path(4))
    assert im.format == "JPEG" and im.size == (32, 32) and im.mode == "RGB"


def test_make_photo_set_is_imagenet_like_and_seeded(tmp_path):
    from PIL import Image

    index = make_photo_set(tmp_path / "a", 2, 3, classes=2, progress=False)
    again = make_photo_set(tmp_path / "b", 1, 3, classes=1, progress=False)
    assert len(index) == 2 and index.labels.tolist() == [0, 1]
    for i in range(2):
        im = Image.open(index.path(i))
        assert im.format == "JPEG" and im.mode == "RGB" and 300 <= min(im.size) <= 500
        assert 4 / 3 - 0.02 <= max(im.size) / min(im.size) <= 16 / 9 + 0.02
    # image k depends on (seed, k) only: a smaller set is a prefix of a bigger one
    with open(index.path(0), "rb") as f, open(again.path(0), "rb") as g:
        assert f.read() == g.read()


def test_pillow_crop_row_is_torchvisions_random_resized_crop(tmp_path):
    """The Pillow peers' crop: the box torchvision would draw, resized, flipped half the time."""
    from bench import RowSpec, pillow_crop
    from PIL import Image

    from tfpathloader.transforms import RandomResizedCrop

    src = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    Image.fromarray(src).save(tmp_path / "a.png")
    spec = RowSpec((), None, (), (), 1, 1, 0, 3, (16, 16), crop=True)
    flips = 0
    for k in range(20):
        got = pillow_crop(str(tmp_path / "a.png"), spec, np.random.default_rng(k))
        rng = np.random.default_rng(k)
        top, left, h, w = RandomResizedCrop((16, 16)).box(60, 80, rng)
        want = Image.fromarray(src[top : top + h, left : left + w]).resize(
            (16, 16), Image.Resampling.BILINEAR
        )
        want = np.asarray(want)
        flipped = rng.random() < 0.5
        flips += flipped
        assert got.shape == (16, 16, 3)
        np.testing.assert_array_equal(got, want[:, ::-1] if flipped else want)
    assert 0 < flips < 20


@pytest.mark.slow
def test_bench_crop_rows_deliver_the_crop(tmp_path):
    index = make_photo_set(tmp_path / "p", 16, 3, classes=2, progress=False)
    rows = ("raw", "raw-lean", "torch", "tf", "baseline", "tf-hand")
    rows += ("torch-fast", "tf-fast", "tf-hand-exact")  # NOTE [equal pixels]
    result = run_bench(
        index,
        rows=rows,
        catalog=peers.CATALOG,
        workers=1,
        batch_size=8,
        repeat=1,
        size=(32, 32),
        crop=True,
        progress=False,
    )
    assert result["crop"] is True and set(result["rows"]) == set(rows)
    assert all(r["images_per_s"] > 0 for r in result["rows"].values())
    assert "(RandomResizedCrop + flip)" in format_bench_table(result)
    with pytest.raises(ValueError, match="crop needs"):
        run_bench(index, rows=("raw",), crop=True, progress=False)


@pytest.mark.slow
def test_crop_cost_splits_a_crop_into_its_steps(tmp_path, capsys):
    import crop_cost

    index = make_photo_set(tmp_path, 12, classes=2, progress=False)
    argv = [index.files[0], "--rounds", "1", "--workers", "1", "--batch-size", "5"]
    assert crop_cost.main(argv) == 0
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("| ") and not line.startswith("| step"):
            label, ms = line.strip("| ").rsplit(" | ", 1)
            rows[label] = float(ms)
    steps = [rows[crop_cost.LABELS[k]] for k in crop_cost.STEPS]
    assert len(rows) == 7 and all(v > 0 for v in rows.values()), rows
    assert rows[crop_cost.LABELS["sum"]] == pytest.approx(sum(steps), abs=0.003)
    assert steps[2] == max(steps)  # decoding the box is most of a crop
