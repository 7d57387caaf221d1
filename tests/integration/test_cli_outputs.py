"""The command line says where it wrote what, never overwrites silently, and teaches on errors."""

from __future__ import annotations

import argparse
import json
import os

import pytest
from conftest import ROOT, make_images

from tfpathloader import make_loader
from tfpathloader.tools.cli import main as cli_main
from train_app.compare import main as compare_main

pytest.importorskip("matplotlib")
pytest.importorskip("scipy")


def test_index_build_says_where_and_info_on_a_folder_names_the_index(tmp_path, capsys):
    make_images(tmp_path / "imgs", 9)
    assert cli_main(["index", "build", str(tmp_path / "imgs"), "-q"]) == 0
    out = capsys.readouterr().out
    assert os.path.join(str(tmp_path / "imgs"), "index.tfrecord") in out
    assert cli_main(["index", "info", str(tmp_path / "imgs")]) == 2
    err = capsys.readouterr().err
    assert "is a folder, not a path index; did you mean" in err
    assert os.path.join(str(tmp_path / "imgs"), "index.tfrecord") in err
    assert cli_main(["index", "info", str(tmp_path)]) == 2
    assert f"tfpathloader index build {tmp_path}" in capsys.readouterr().err


def test_make_loader_names_a_misspelt_required_argument(image_dir):
    _, index = image_dir
    with pytest.raises(TypeError, match=r"did you mean 'batch_size'"):
        make_loader(index=index, batchsize=256)
    with pytest.raises(TypeError, match="needs batch_size="):
        make_loader(index=index)


def test_audit_twice_keeps_the_first(image_dir, tmp_path, capsys):
    root, _ = image_dir
    out = tmp_path / "audit"
    args = ["audit", str(root / "index.tfrecord"), "--out", str(out), "-q"]
    assert cli_main(args) == 0
    first = (out / "audit.json").read_text()
    assert cli_main([*args, "--seed", "3"]) == 0
    captured = capsys.readouterr()
    assert f"writing to {out}-2" in captured.err and str(tmp_path / "audit-2") in captured.out
    assert (out / "audit.json").read_text() == first
    assert json.loads((tmp_path / "audit-2" / "audit.json").read_text())["seed"] == 3
    assert cli_main([*args, "--force"]) == 0
    assert not (tmp_path / "audit-3").exists()


def _fake_run(folder, name, **fields):
    run = folder / name
    run.mkdir(parents=True)
    config = {
        "trainer": {"epochs": fields.pop("epochs", 1), "max_steps": fields.pop("steps", None)}
    }
    metrics = {
        "loader": "torch",
        "shuffle": "global",
        "test_accuracy": 0.5,
        "per_class_accuracy": {"a": 0.5, "b": 0.5},
        "images_per_s": 100.0,
        "world_size": 1,
        "batch_size": 16,
        "num_workers": 2,
        "seed": 0,
        "audit": {},
        "config": config,
        **fields,
    }
    (run / "metrics.json").write_text(json.dumps(metrics))


def test_compare_names_what_differs_and_keeps_an_earlier_comparison(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    _fake_run(sweep, "0-base")
    _fake_run(sweep, "1-epochs", epochs=2)
    _fake_run(sweep, "2-ranks", world_size=2)
    _fake_run(sweep, "3-steps", steps=5)
    assert compare_main([str(sweep)]) == 0
    out = capsys.readouterr().out
    names = {ln.split(" | ")[0][2:]: ln.split(" | ")[1] for ln in out.splitlines() if "| " in ln}
    assert names["0-base"] == "torch / global, 1 epoch, 1 rank, full epochs"
    assert names["1-epochs"] == "torch / global, 2 epochs, 1 rank, full epochs"
    assert names["2-ranks"] == "torch / global, 1 epoch, 2 ranks, full epochs"
    assert names["3-steps"] == "torch / global, 1 epoch, 1 rank, 5 steps"
    summary = json.loads((sweep / "comparison.json").read_text())
    assert summary["differ"] == ["epochs", "ranks", "max steps"]
    first = (sweep / "comparison.md").read_text()
    assert compare_main([str(sweep)]) == 0
    assert (sweep / "comparison.md").read_text() == first
    assert (sweep / "comparison-2.md").exists() and (sweep / "comparison-2.png").exists()
    assert "comparison-2.md" in capsys.readouterr().out


def test_bench_defaults_are_the_readme_tables():
    import bench
    import peers

    p = argparse.ArgumentParser()
    bench.add_bench_arguments(p, rows="raw", rows_help="")
    args = p.parse_args([])
    full = peers.build_parser().parse_args(["x"])  # the script that makes the README's table
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    with open(os.path.join(ROOT, "docs", "performance.md")) as f:
        method = f.read()  # the page that says how the README's table is measured
    assert (args.workers, args.batch_size, args.repeat) == (2, 256, 9)
    assert (full.workers, full.batch_size, full.repeat, full.jpeg_count) == (2, 256, 9, 10000)
    assert "median of 9 interleaved rounds" in method and "2 workers, batch 256" in method
    assert "224x224 RGB JPEG (10,000)" in method
    # A table made with other settings names them (here: fewer rounds), and says the same.
    block = readme.split("<!-- docs:bench -->")[1].split("<!-- /docs:bench -->")[0]
    rounds = int(block.split("median of ")[1].split()[0])
    assert rounds != 9 and f"--repeat {rounds}" in block
