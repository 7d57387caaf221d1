"""The shuffle-quality audit reproduces the article: buffer shuffle biased, global shuffle even."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tfpathloader import OrderSpec, write_index
from tfpathloader.tools.audit import AUDIT_KEYS, audit_figure, audit_ids, delivered_ids
from tfpathloader.tools.cli import main


@pytest.fixture(scope="module")
def article_index(tmp_path_factory):
    """The article's layout: 70,000 records sorted by label, 7,000 per label (no images needed)."""
    folder = tmp_path_factory.mktemp("article")
    labels = np.arange(70_000) // 7000
    paths = [f"train/{c}/{i:05d}.png" for i, c in enumerate(labels)]
    return write_index(folder / "index.tfrecord", paths, labels, progress=False)


def test_buffer_shuffle_is_biased_like_the_article(article_index):
    ids = delivered_ids(
        article_index, OrderSpec(shuffle="buffer", buffer_size=10_000), draws=50_000
    )
    r = audit_ids(ids, article_index.labels)
    assert set(AUDIT_KEYS) <= set(r)
    assert r["label_counts"]["9"] == 0 and r["label_first_draw"]["9"] is None
    assert r["missing_labels"] == ["9"]
    assert r["label_first_draw"]["2"] > 4000
    assert r["spearman_z"] > 100
    assert r["chi2_p"] < 1e-100 and r["ks_p"] < 1e-100
    assert r["duplicates"] == 0


@pytest.mark.parametrize("permutation", ["exact", "stateless"])
def test_global_shuffle_passes_the_audit(article_index, permutation):
    ids = delivered_ids(article_index, OrderSpec(permutation=permutation), draws=50_000)
    r = audit_ids(ids, article_index.labels)
    assert abs(r["spearman_z"]) < 4
    assert max(r["label_first_draw"].values()) <= 100
    assert r["ks_p"] > 0.01 and r["chi2_p"] > 0.001
    assert r["duplicates"] == 0 and r["missing_labels"] == []


def test_duplicates_and_padding_are_counted_apart():
    labels = np.array([0, 0, 1, 1, 2])
    ids = np.array([4, 2, 0, 1, 3, 2, 4])  # id 2 drawn twice (a bug), id 4 repeated as padding
    pad = np.array([False] * 6 + [True])
    r = audit_ids(ids, labels, padding=pad)
    assert r["duplicates"] == 1 and r["padding_repeats"] == 1
    assert r["unique"] == 5 and r["coverage"] == 1.0


def test_audit_rejects_ids_outside_the_index():
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 3\)"):
        audit_ids([0, 3], np.array([0, 1, 2]))


def test_cli_audit_writes_json_and_figure(article_index, tmp_path, capsys):
    out = tmp_path / "audit"
    code = main(
        [
            "audit",
            article_index.files[0],
            "--shuffle",
            "global,buffer",
            "--buffer-size",
            "10000",
            "--draws",
            "50000",
            "--out",
            str(out),
            "--json",
        ]
    )
    printed = json.loads(capsys.readouterr().out)
    assert code == 0
    assert json.loads((out / "audit.json").read_text()) == printed
    orders = printed["orders"]
    assert orders["buffer (10,000)"]["label_counts"]["9"] == 0
    assert abs(orders["global"]["spearman_z"]) < 4
    png = (out / "audit.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_cli_audit_table(article_index, tmp_path, capsys):
    code = main(
        [
            "audit",
            article_index.files[0],
            "--shuffle",
            "none",
            "--draws",
            "1000",
            "--out",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "| none | 1,000 |" in out and "1, 2, 3, 4, 5, 6, 7, 8, 9" in out


def test_figure_has_one_row_per_order(tmp_path):
    from PIL import Image

    labels = np.repeat(np.arange(4), 25)
    seqs = {
        "a": np.arange(100),
        "b": np.arange(100)[::-1],
        "c": np.random.default_rng(0).permutation(100),
    }
    path = audit_figure(seqs, labels, tmp_path / "f.png")
    one = audit_figure({"a": np.arange(100)}, labels, tmp_path / "g.png")
    h3, h1 = Image.open(path).size[1], Image.open(one).size[1]
    assert h3 > 2.5 * h1


@pytest.mark.parametrize("backend", ["torch", "tf"])
def test_cli_audit_of_what_a_real_loader_delivered(tmp_path, capsys, backend):
    from conftest import make_images

    paths, labels = make_images(tmp_path, 200, classes=10)  # label-sorted
    index = write_index(tmp_path / "index.tfrecord", paths, labels)
    code = main(
        [
            "audit",
            index.files[0],
            "--shuffle",
            "buffer,global",
            "--buffer-size",
            "20",
            "--backend",
            backend,
            "--batch-size",
            "16",
            "--num-workers",
            "1",
            "--out",
            str(tmp_path / "a"),
            "--json",
        ]
    )
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["backend"] == backend
    buffer, uniform = result["orders"]["buffer (20)"], result["orders"]["global"]
    assert buffer["draws"] == uniform["draws"] == 200
    assert buffer["duplicates"] == uniform["duplicates"] == 0
    assert buffer["spearman_z"] > 10 > abs(uniform["spearman_z"])
