"""`tfpathloader bench` runs every row over the same files and reports ratios to the raw limit."""

from __future__ import annotations

import json

import pytest
from conftest import make_images

from tfpathloader import write_index
from tfpathloader.tools.bench import make_jpeg_set, run_bench
from tfpathloader.tools.cli import main


def test_bench_rows_and_ratios(tmp_path, capsys):
    paths, labels = make_images(tmp_path, 120, size=(16, 16))
    index = write_index(tmp_path / "index.tfrecord", paths, labels)
    code = main(
        [
            "bench",
            index.files[0],
            "--rows",
            "raw,torch,baseline",
            "--workers",
            "1",
            "--batch-size",
            "16",
            "--repeat",
            "1",
            "--json",
            "--quiet",
        ]
    )
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert result["images"] == 120 and result["image_shape"] == [16, 16, 1]
    rows = result["rows"]
    assert set(rows) == {"raw", "torch", "baseline"}
    assert rows["raw"]["ratio_to_raw"] == 1.0
    for r in rows.values():
        assert r["images_per_s"] > 0 and len(r["runs"]) == 1
        # The two columns come from the same numbers (NOTE [bench columns]).
        expected = r["images_per_s"] / rows["raw"]["images_per_s"]
        assert r["ratio_to_raw"] == pytest.approx(expected, abs=2e-3)


def test_bench_rejects_unknown_rows(image_dir):
    _, index = image_dir
    with pytest.raises(ValueError, match="unknown bench rows"):
        run_bench(index, rows=("raw", "dali"))


def test_make_jpeg_set(tmp_path):
    from PIL import Image

    index = make_jpeg_set(tmp_path / "jpeg", count=6, size=32, progress=False)
    assert len(index) == 6 and index.classes == ("china", "flower")
    assert index.labels.tolist() == [0, 0, 0, 1, 1, 1]
    im = Image.open(index.path(4))
    assert im.format == "JPEG" and im.size == (32, 32) and im.mode == "RGB"
