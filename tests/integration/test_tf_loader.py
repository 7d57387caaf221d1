"""The tf.data loader: the same batches as the PyTorch loader, by DLPack, resumable, same errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from conftest import make_images, run_python
from photos import make_jpeg_set
from PIL import Image

from tfpathloader import ImageLoadError, OrderSpec, PathIndex, write_index
from tfpathloader.load.loader import make_loader
from tfpathloader.tools.audit import audit_ids, delivered_ids

pytestmark = pytest.mark.tf


def batches(loader):
    return [{k: v.clone() for k, v in b.items()} for b in loader]


def assert_same_batches(a, b, *, pixels=True):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["index"], y["index"])
        assert torch.equal(x["label"], y["label"])
        if pixels:
            assert x["image"].shape == y["image"].shape
            assert torch.equal(x["image"], y["image"])


@pytest.fixture
def png_index(tmp_path):
    paths, labels = make_images(tmp_path, 53, classes=5, size=(9, 7))
    return write_index(tmp_path / "index.tfrecord", paths, labels)


@pytest.mark.parametrize("shuffle", ["global", "none"])
@pytest.mark.parametrize("permutation", ["exact", "stateless"])
def test_same_ids_and_pixels_as_torch_over_epochs(png_index, shuffle, permutation):
    kw = {
        "index": png_index,
        "batch_size": 8,
        "shuffle": shuffle,
        "seed": 4,
        "permutation": permutation,
    }
    tf_loader = make_loader(backend="tf", num_workers=2, **kw)
    torch_loader = make_loader(backend="torch", num_workers=2, **kw)
    for epoch in range(3):
        tf_loader.set_epoch(epoch)
        torch_loader.set_epoch(epoch)
        assert_same_batches(batches(tf_loader), batches(torch_loader))


@pytest.mark.parametrize(("world_size", "drop_last"), [(2, False), (3, False), (3, True)])
def test_same_distributed_shares(png_index, world_size, drop_last):
    for rank in range(world_size):
        kw = {
            "index": png_index,
            "batch_size": 4,
            "seed": 1,
            "rank": rank,
            "world_size": world_size,
            "drop_last": drop_last,
        }
        a = batches(make_loader(backend="tf", **kw))
        b = batches(make_loader(backend="torch", **kw))
        assert_same_batches(a, b)


def test_rgb_and_grey_conversions_match_torch(tmp_path):
    rng = np.random.default_rng(0)
    modes = []
    for i in range(12):
        arr = rng.integers(0, 256, (6, 5, 4), dtype=np.uint8)
        kind = i % 6
        if kind == 0:
            im = Image.fromarray(arr[:, :, :3])
        elif kind == 1:
            im = Image.fromarray(arr)  # RGBA: alpha dropped
        elif kind == 2:
            im = Image.fromarray(arr[:, :, 0])
        elif kind == 3:
            im = Image.fromarray(arr[:, :, :3]).convert(
                "P", palette=Image.Palette.ADAPTIVE, colors=9
            )
        elif kind == 4:
            im = Image.fromarray(arr[:, :, 0].astype(np.uint16) * 257)  # 16-bit grey
        else:
            im = Image.fromarray(arr[:, :, :2], mode="LA")
        modes.append(im.mode)
        im.save(tmp_path / f"{i}.png")
    index = write_index(tmp_path / "index.tfrecord", [f"{i}.png" for i in range(12)], [0] * 12)
    for channels in (1, 3):
        kw = {"index": index, "batch_size": 12, "shuffle": "none", "channels": channels}
        assert_same_batches(
            batches(make_loader(backend="tf", **kw)), batches(make_loader(backend="torch", **kw))
        )
    assert {"RGB", "RGBA", "L", "P", "I;16", "LA"} <= set(modes)


def test_jpeg_pixels_match_pillow(tmp_path):
    index = make_jpeg_set(tmp_path / "jpeg", count=24, size=48, progress=False)
    kw = {"index": index, "batch_size": 8, "shuffle": "none"}
    a, b = batches(make_loader(backend="tf", **kw)), batches(make_loader(backend="torch", **kw))
    assert_same_batches(a, b, pixels=False)
    diff = max(
        int((x["image"].int() - y["image"].int()).abs().max()) for x, y in zip(a, b, strict=True)
    )
    # tf.io.decode_jpeg with dct_method="INTEGER_ACCURATE" is Pillow's islow IDCT: no difference.
    assert diff == 0


def test_resized_images_are_close_to_pillow(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(6):
        img = np.kron(rng.integers(0, 256, (4, 4)), np.ones((8, 8))).astype(np.uint8)  # blocky
        Image.fromarray(img).save(tmp_path / f"{i}.png")
    index = write_index(tmp_path / "index.tfrecord", [f"{i}.png" for i in range(6)], [0] * 6)
    kw = {"index": index, "batch_size": 6, "shuffle": "none", "size": (16, 16)}
    a = batches(make_loader(backend="tf", **kw))[0]["image"].int()
    b = batches(make_loader(backend="torch", **kw))[0]["image"].int()
    assert a.shape == b.shape == (6, 1, 16, 16)
    assert (a - b).abs().float().mean() < 3  # bilinear in both; the kernels differ slightly


def test_batches_come_by_dlpack_without_a_copy(png_index):
    loader = make_loader(backend="tf", index=png_index, batch_size=8)
    ds = loader.as_tf_dataset()
    element = next(iter(ds))
    assert set(element) == {"image", "label", "index"}
    assert tuple(element["image"].shape) == (8, 9, 7, 1)  # TensorFlow's NHWC
    a = torch.from_dlpack(element["image"])
    b = torch.from_dlpack(element["image"])
    assert a.data_ptr() == b.data_ptr()  # both views of TensorFlow's own buffer
    batch = next(iter(loader))
    assert batch["image"].shape == (8, 1, 9, 7) and batch["image"].dtype == torch.uint8
    assert batch["index"].dtype == torch.int64


@pytest.mark.parametrize("source", ["tf", "torch"])
def test_resume_from_either_backend(png_index, source):
    kw = {"index": png_index, "batch_size": 5, "seed": 2}
    full = make_loader(backend="tf", **kw)
    full.set_epoch(1)
    reference = [b["index"].tolist() for b in full]
    for k in (0, 2, len(reference)):
        first = make_loader(backend=source, **kw)
        first.set_epoch(1)
        it = iter(first)
        head = [next(it)["index"].tolist() for _ in range(k)]
        state = json.loads(json.dumps(first.state_dict()))
        fresh = make_loader(backend="tf", **kw)
        fresh.load_state_dict(state)
        assert head + [b["index"].tolist() for b in fresh] == reference


def test_buffer_shuffle_is_tensorflows_own(png_index):
    kw = {"index": png_index, "batch_size": 4, "shuffle": "buffer", "buffer_size": 5, "seed": 0}
    loader = make_loader(backend="tf", **kw)
    ids = np.concatenate([b["index"].numpy() for b in loader])
    assert sorted(ids.tolist()) == list(range(53))
    pos = np.empty(53, dtype=int)
    pos[ids] = np.arange(53)
    assert np.all(pos >= np.arange(53) - 5 + 1)  # the buffer bound
    again = np.concatenate([b["index"].numpy() for b in make_loader(backend="tf", **kw)])
    np.testing.assert_array_equal(ids, again)  # seeded


def test_errors_name_record_path_and_cause_like_torch(tmp_path):
    paths, labels = make_images(tmp_path, 16)
    index = write_index(tmp_path / "index.tfrecord", paths, labels)
    os.unlink(index.path(6))
    kw = {"index": index, "batch_size": 4, "shuffle": "none"}
    errors = {}
    for backend in ("tf", "torch"):
        with pytest.raises(ImageLoadError) as err:
            list(make_loader(backend=backend, **kw))
        errors[backend] = (err.value.record_id, err.value.path, err.value.cause)
    assert errors["tf"] == errors["torch"] == (6, index.path(6), "file not found")


def test_skip_matches_torch(tmp_path):
    paths, labels = make_images(tmp_path, 20)
    index = write_index(tmp_path / "index.tfrecord", paths, labels)
    for bad in (2, 3, 9):  # 2 and 3 share a batch with 0 and 1; batch 2 loses record 9
        with open(index.path(bad), "w") as f:
            f.write("not an image")
    kw = {"index": index, "batch_size": 4, "shuffle": "none", "on_error": "skip"}
    got = {}
    for backend in ("tf", "torch"):
        loader = make_loader(backend=backend, **kw)
        with pytest.warns(RuntimeWarning, match="skipped 3"):
            got[backend] = (
                [b["index"].tolist() for b in loader],
                sorted((s["record_id"], s["cause"]) for s in loader.skipped),
            )
    assert got["tf"] == got["torch"]
    assert got["tf"][0][0] == [0, 1] and [s[0] for s in got["tf"][1]] == [2, 3, 9]


def test_skip_a_batch_lost_entirely_still_counts(tmp_path):
    paths, labels = make_images(tmp_path, 8)
    index = write_index(tmp_path / "index.tfrecord", paths, labels)
    for bad in (4, 5, 6, 7):
        os.unlink(index.path(bad))
    loader = make_loader(backend="tf", index=index, batch_size=4, shuffle="none", on_error="skip")
    it = iter(loader)
    assert next(it)["index"].tolist() == [0, 1, 2, 3]
    with pytest.warns(RuntimeWarning, match="skipped 4"):
        assert list(it) == []
    # The epoch is finished: the lost batch counts as consumed, and the state says so.
    assert loader.batches_consumed == 2 and len(loader.skipped) == 4
    assert loader.state_dict()["position"] == len(index)


def _invert(image, rng):
    return (255 - image) if rng.random() < 0.5 else image


def test_transform_matches_torch(png_index):
    kw = {"index": png_index, "batch_size": 8, "transform": _invert, "seed": 3}
    assert_same_batches(
        batches(make_loader(backend="tf", **kw)), batches(make_loader(backend="torch", **kw))
    )


@pytest.mark.slow
def test_demo_pixels_identical_and_audit_reproduces_the_article(demo_data):
    index = PathIndex.read(demo_data / "index.tfrecord")
    kw = {"index": index, "batch_size": 1000, "num_workers": 2, "seed": 5}
    tf_loader, torch_loader = make_loader(backend="tf", **kw), make_loader(backend="torch", **kw)
    for x, y in zip(tf_loader, torch_loader, strict=True):
        assert torch.equal(x["index"], y["index"]) and torch.equal(x["image"], y["image"])
    buffer_ids = delivered_ids(
        index,
        OrderSpec(shuffle="buffer", buffer_size=10_000, batch_size=500),
        backend="tf",
        draws=50_000,
        num_workers=2,
    )
    r = audit_ids(buffer_ids, index.labels)
    assert r["label_counts"]["9"] == 0 and r["label_first_draw"]["2"] > 4000
    global_ids = delivered_ids(
        index, OrderSpec(batch_size=500), backend="tf", draws=50_000, num_workers=2
    )
    g = audit_ids(global_ids, index.labels)
    assert abs(g["spearman_z"]) < 4 and g["ks_p"] > 0.01 and g["duplicates"] == 0
    assert max(g["label_first_draw"].values()) <= 100


BOTH = """
import numpy as np, sys
{imports}
sys.path.insert(0, "tests")
from conftest import make_images
from tfpathloader import write_index
from tfpathloader.load.loader import make_loader
paths, labels = make_images({tmp!r}, 20)
index = write_index({tmp!r} + "/index.tfrecord", paths, labels)
a = [b["index"].tolist() for b in make_loader(backend="tf", index=index, batch_size=4)]
b = [b["index"].tolist() for b in make_loader(backend="torch", index=index, batch_size=4, num_workers=2)]
print("SAME" if a == b else "DIFFERENT")
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "imports",
    [
        "import torch\nimport tensorflow",
        "import tensorflow\nimport torch",
        "import tfrecord\nimport tfpathloader",
    ],
)
def test_both_loaders_in_one_process_in_either_import_order(tmp_path, imports):
    # (the third order is the bare-tfrecord-first one: it must fail with an explanation)
    result = run_python(BOTH.format(imports=imports, tmp=str(tmp_path)))
    if imports.startswith("import tfrecord"):
        assert result.returncode != 0 and "enable_tfrecord_interop() before" in result.stderr
    else:
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip().endswith("SAME")
