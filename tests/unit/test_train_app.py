"""The training app's pieces, in-process and tiny: data checks, held-out split, schema, figures."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from conftest import ROOT, make_images
from PIL import Image

pytest.importorskip("hydra")
pytest.importorskip("torch")
sys.path.insert(0, ROOT)

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException

from tfpathloader import write_index
from train_app.config import register_configs, validate
from train_app.data import (
    check_images,
    holdout_split,
    locate_index,
    prepare_data,
    subset,
)
from train_app.errors import RunConfigError

CONF = os.path.join(ROOT, "conf")


def compose_cfg(overrides):
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF, version_base="1.3"):
            return compose(config_name="config", overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_holdout_split_is_stratified_disjoint_and_seeded(seed, fraction):
    labels = np.repeat([0, 1, 2, 3], [40, 7, 2, 101])
    train, held = holdout_split(labels, fraction, seed)
    assert sorted(np.concatenate([train, held]).tolist()) == list(range(len(labels)))
    assert not set(train.tolist()) & set(held.tolist())
    for label, count in zip(*np.unique(labels, return_counts=True), strict=True):
        k = int((labels[held] == label).sum())
        assert k == min(count - 1, max(1, round(count * fraction)))
    again = holdout_split(labels, fraction, seed)
    assert all(np.array_equal(a, b) for a, b in zip((train, held), again, strict=True))
    other = holdout_split(labels, fraction, seed + 100)
    assert not np.array_equal(held, other[1])


def test_holdout_split_refuses_a_single_record_label():
    with pytest.raises(ValueError, match="label 1 has 1 record"):
        holdout_split(np.array([0, 0, 1]), 0.5, 0)


def test_subset_keeps_paths_labels_and_root(image_dir):
    _, index = image_dir
    ids = np.array([29, 3, 17, 0])
    part = subset(index, ids)
    assert len(part) == 4 and part.root == index.root and part.classes == index.classes
    assert [part.path(i) for i in range(4)] == [index.path(int(i)) for i in ids]
    assert part.labels.tolist() == index.labels[ids].tolist()


def test_prepare_data_holds_out_a_part_never_trained_on(image_dir):
    root, index = image_dir
    data = prepare_data(
        path=str(root / "index.tfrecord"),
        root=str(root),
        test_index="auto",
        holdout=0.1,
        seed=0,
        size=None,
        batch_size=4,
        drop_last=False,
        world_size=1,
    )
    train_paths = {data.train.path(i) for i in range(len(data.train))}
    test_paths = {data.test.path(i) for i in range(len(data.test))}
    assert len(data.test) == 3 and len(data.train) == 27
    assert not train_paths & test_paths
    assert train_paths | test_paths == {index.path(i) for i in range(len(index))}
    assert data.summary["evaluation"]["kind"] == "held out"
    assert data.summary["evaluation"]["per_label"] == {"a": 1, "b": 1, "c": 1}


def test_prepare_data_uses_a_test_index_when_there_is_one(image_dir):
    root, index = image_dir
    write_index(root / "test.tfrecord", [index.relpath(i) for i in (0, 15)], [0, 1])
    data = prepare_data(
        path=str(root / "index.tfrecord"),
        root=str(root),
        test_index="auto",
        holdout=0.1,
        seed=0,
        size=None,
        batch_size=4,
        drop_last=False,
        world_size=1,
    )
    assert len(data.train) == 30 and len(data.test) == 2
    assert data.summary["evaluation"]["kind"] == "test index"


def test_prepare_data_lists_every_problem(tmp_path):
    paths, labels = make_images(tmp_path, 4, classes=2)
    Image.new("L", (9, 9)).save(tmp_path / paths[-1])  # one image of another size
    labels[0] = -1
    write_index(tmp_path / "index.tfrecord", paths, labels)
    with pytest.raises(RunConfigError) as e:
        prepare_data(
            path=str(tmp_path / "index.tfrecord"),
            root=str(tmp_path),
            test_index=None,
            holdout=0.1,
            seed=0,
            size=None,
            batch_size=4,
            drop_last=False,
            world_size=1,
        )
    text = "\n".join(e.value.problems)
    assert "no label (-1)" in text and "data.size=" in text and "single record" in text


def test_check_images_names_record_and_path(tmp_path):
    paths, labels = make_images(tmp_path, 4, classes=2)
    (tmp_path / paths[2]).write_bytes(b"not an image")
    index = write_index(tmp_path / "index.tfrecord", paths, labels)
    problems = check_images(index, None)
    assert len(problems) == 1 and "record 2" in problems[0] and paths[2] in problems[0]


def test_locate_index_makes_no_demo_in_a_folder_it_was_not_asked_to(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RunConfigError, match="tfpathloader demo"):
        locate_index(str(empty), "index.tfrecord", default_root=False, make_demo=None)
    make_images(tmp_path / "imgs", 6)
    with pytest.raises(RunConfigError, match="tfpathloader index build"):
        locate_index(str(tmp_path / "imgs"), "index.tfrecord", default_root=True, make_demo=None)
    # The default root, missing: the demo is made there; an explicit flag anywhere; never
    # when switched off.
    missing = str(tmp_path / "data")
    assert locate_index(missing, "index.tfrecord", default_root=True, make_demo=None)[1]
    assert locate_index(str(empty), "index.tfrecord", default_root=False, make_demo=True)[1]
    with pytest.raises(RunConfigError):
        locate_index(missing, "index.tfrecord", default_root=True, make_demo=False)
    assert os.listdir(empty) == [] and not os.path.exists(missing)


def test_schema_rejects_bad_values_with_a_clear_message():
    cfg = compose_cfg(["trainer.epochs=0", "trainer.max_steps=0", "data.holdout=1.5"])
    problems = validate(cfg)
    assert problems == [
        "trainer.epochs=0: must be >= 1 (one pass over the data at least)",
        "trainer.max_steps=0: must be >= 1, or null for full epochs",
        "data.holdout=1.5: must lie in (0, 1): the share of each label held out",
    ]
    assert validate(compose_cfg([])) == []


def test_config_choices_are_the_real_ones():
    with pytest.raises(ConfigCompositionException) as e:
        compose_cfg(["loader=pytorch"])
    options = str(e.value).split("Available options in 'loader':")[1].split()
    assert options[:2] == ["tf", "torch"] and "base_loader" not in str(e.value)
    for schema_name in ("loader=base_loader", "shuffle=base_shuffle"):
        with pytest.raises(ConfigCompositionException):
            compose_cfg([schema_name])


def test_optimizer_and_schedule_come_from_config():
    import torch
    from hydra.utils import instantiate

    cfg = compose_cfg(["optimizer=sgd", "schedule=cosine", "trainer.lr=0.5"])
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = instantiate(cfg.optimizer)(params)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["lr"] == 0.5
    sched = instantiate(cfg.schedule)(opt, total_steps=10)
    for _ in range(10):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-9)


def test_training_figure_has_a_legend_and_epoch_boundaries(tmp_path):
    pytest.importorskip("matplotlib")
    from train_app.figures import training_figure

    path = training_figure(
        str(tmp_path / "t.png"), [1.0, 0.5, 0.4, 0.3], [0.2, 0.5, 0.6, 0.7], "t", epoch_starts=[3]
    )
    assert open(path, "rb").read(4) == b"\x89PNG"


def test_a_loader_fault_names_the_library_error_and_how_to_resume():
    from tfpathloader import LoaderWorkerError
    from train_app.errors import LoaderFault

    e = LoaderFault(LoaderWorkerError("a loader worker process died"), "/runs/x", 100)
    assert str(e).startswith("LoaderWorkerError: a loader worker process died; resume")
    assert "python train.py hydra.run.dir=/runs/x trainer.resume=auto" in str(e)
    assert "no checkpoints" in str(LoaderFault(LoaderWorkerError("x"), "/runs/x", 0))


def test_loader_jpeg_dct_is_a_loader_setting_that_reaches_make_loader():
    cfg = compose_cfg(["loader=tf", "loader.jpeg_dct=fast"])
    assert cfg.loader.jpeg_dct == "fast" and validate(cfg) == []
    assert compose_cfg([]).loader.jpeg_dct == "accurate"  # Pillow's pixels by default
    import inspect

    from tfpathloader import make_loader

    assert "jpeg_dct" in inspect.signature(make_loader).parameters  # what train.py calls
