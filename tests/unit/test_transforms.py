"""tfpathloader.transforms: plans are inside the image, seeded, torchvision-shaped, composable."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import plan_batch

from tfpathloader import transforms as T
from tfpathloader.transforms import record_rng


@pytest.mark.parametrize("hw", [(1, 1), (3, 500), (300, 451), (500, 333), (224, 224)])
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_random_resized_crop_box_inside_and_in_range(hw, seed):
    h, w = hw
    t = T.RandomResizedCrop(224)
    for rid in range(40):
        p = t.plan(h, w, record_rng(seed, 0, rid))
        top, left, bh, bw = p.box
        assert top >= 0 and left >= 0 and bh >= 1 and bw >= 1
        assert top + bh <= h and left + bw <= w
        assert p.size == (224, 224) and not p.flip


def test_random_resized_crop_areas_follow_scale():
    t = T.RandomResizedCrop(32, scale=(0.25, 0.5), ratio=(1.0, 1.0))
    areas = [np.prod(t.plan(400, 400, record_rng(0, 0, i)).box[2:]) / 400**2 for i in range(200)]
    assert min(areas) >= 0.24 and max(areas) <= 0.51
    assert max(areas) - min(areas) > 0.15  # drawn, not fixed


def test_plans_depend_on_seed_epoch_and_record_only():
    t = T.Compose([T.RandomResizedCrop(16), T.RandomHorizontalFlip()])
    ids = np.arange(50)
    a = plan_batch(t, 3, 1, ids, np.full(50, 90), np.full(50, 120))
    b = plan_batch(t, 3, 1, ids[::-1], np.full(50, 90), np.full(50, 120))
    assert np.array_equal(a[0], b[0][::-1]) and np.array_equal(a[1], b[1][::-1])
    for other in (
        plan_batch(t, 4, 1, ids, np.full(50, 90), np.full(50, 120)),
        plan_batch(t, 3, 2, ids, np.full(50, 90), np.full(50, 120)),
    ):
        assert not np.array_equal(a[0], other[0])
    assert 10 < a[1].sum() < 40  # about half flipped


def test_flip_then_crop_mirrors_the_box():
    flip_first = T.Compose([T.RandomHorizontalFlip(p=1.0), T.CenterCrop((10, 10))])
    p = flip_first.plan(10, 30, record_rng(0, 0, 0))
    assert p.box == (0, 10, 10, 10) and p.flip
    left = T.Compose([T.RandomHorizontalFlip(p=1.0), T.Resize((10, 30))])
    assert left.plan(10, 30, record_rng(0, 0, 0)).box == (0, 0, 10, 30)


def test_resize_then_center_crop_is_one_box():
    t = T.Compose([T.Resize(256), T.CenterCrop(224)])
    p = t.plan(512, 768, record_rng(0, 0, 0))  # scale 1/2: 448x448 box in the middle
    assert p.size == (224, 224) and p.box == (32, 160, 448, 448)
    assert t.output_size == (224, 224)


def test_center_crop_larger_than_image_keeps_it():
    assert T.CenterCrop(50).plan(20, 30, record_rng(0, 0, 0)).box == (0, 0, 20, 30)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: T.RandomResizedCrop(0), "positive"),
        (lambda: T.RandomResizedCrop(8, scale=(0.5, 0.1)), "scale"),
        (lambda: T.RandomHorizontalFlip(p=2), r"\[0, 1\]"),
        (lambda: T.Resize((1, 2, 3)), "height, width"),
        (lambda: T.Compose([lambda x: x]), "callable"),
    ],
)
def test_bad_arguments_name_what_is_valid(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_a_pipeline_without_fixed_size_is_refused():
    with pytest.raises(ValueError, match="varied sizes"):
        T.check_pipeline(T.Compose([T.Resize(256), T.RandomHorizontalFlip()]))
    assert T.check_pipeline(T.Compose([T.Resize(256), T.CenterCrop(8)])) == (8, 8)


def test_pipelines_that_draw_nothing_skip_the_generator_and_plan_the_same():
    """NOTE [no draws]: Resize and CenterCrop plan without a record's generator, same plans."""
    from tfpathloader.transforms import (
        CenterCrop,
        Compose,
        RandomHorizontalFlip,
        RandomResizedCrop,
        Resize,
        Transform,
        plan_rng,
    )

    evaluation = Compose([Resize(40), CenterCrop(32)])
    assert not Resize(8).random and not CenterCrop(8).random and not evaluation.random
    assert RandomResizedCrop(8).random and RandomHorizontalFlip().random
    assert Compose([Resize(40), RandomHorizontalFlip()]).random

    class Mine(Transform):  # a user's subclass draws unless it says it does not
        def apply(self, view, rng):
            view.flip = bool(rng.random() < 0.5)

    assert Mine().random
    ids = np.arange(6)
    hs, ws = np.array([50, 60, 70, 80, 90, 99]), np.array([99, 90, 80, 70, 60, 50])
    boxes, flips = plan_batch(evaluation, 0, 1, ids, hs, ws)
    for k in range(6):
        want = evaluation.plan(int(hs[k]), int(ws[k]), record_rng(0, 1, k))
        assert tuple(boxes[k]) == want.box and flips[k] == want.flip
    assert plan_rng(evaluation, 0, 1, 2) is plan_rng(evaluation, 0, 9, 3)  # one, never drawn
    crop = Compose([RandomResizedCrop(16), RandomHorizontalFlip()])
    a, b = plan_rng(crop, 0, 1, 2), record_rng(0, 1, 2)
    assert a.random() == b.random()  # the record's own stream
