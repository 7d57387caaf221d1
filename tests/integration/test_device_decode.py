"""``decode_on="device"`` (NOTE [device decode]): the same ids and boxes, pixels within a level.

Without a GPU the device is the CPU and nvImageCodec's CPU backend decodes: the same code path
as on a GPU, so these tests build and run everywhere; the CUDA test skips with one line.
"""

from __future__ import annotations

import pytest
import torch
from photos import make_photo_set

from tfpathloader import ImageLoadError, make_loader, write_index
from tfpathloader import transforms as T
from tfpathloader.load import jpeg

pytestmark = pytest.mark.skipif(
    not jpeg._import_nvimgcodec(), reason="nvImageCodec is not installed (the nvimgcodec extra)"
)

CROP = T.Compose([T.RandomResizedCrop(64), T.RandomHorizontalFlip()])


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_photo_set(tmp_path_factory.mktemp("photos"), 16, seed=5, progress=False)


def _epoch(**kw):
    batches = [(b["index"].clone(), b["image"].clone()) for b in make_loader(**kw)]
    return torch.cat([i for i, _ in batches]), torch.cat([x for _, x in batches])


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("workers", [0, 2])
def test_device_decode_gives_the_cpu_paths_ids_and_pixels_within_a_level(
    photos, monkeypatch, channels, workers
):
    # Without DCT scaling (which nvImageCodec lacks), what is left is the resize's rounding.
    monkeypatch.setattr(jpeg, "dct_scale", lambda plan, h, w: (1, plan))
    kw = {"index": photos, "batch_size": 6, "seed": 2, "transform": CROP, "channels": channels}
    ids, cpu = _epoch(**kw)
    ids_d, dev = _epoch(decode_on="device", num_workers=workers, **kw)
    assert torch.equal(ids, ids_d) and dev.shape == cpu.shape == (16, channels, 64, 64)
    diff = (cpu.int() - dev.int()).abs()
    assert int(diff.max()) <= 1 and float(diff.float().mean()) < 0.3


def test_dct_scaled_records_differ_more_but_boundedly(photos):
    kw = {"index": photos, "batch_size": 8, "seed": 2, "size": (48, 40)}  # most DCT-scaled
    _, cpu = _epoch(**kw)
    _, dev = _epoch(decode_on="device", **kw)
    diff = (cpu.int() - dev.int()).abs().float()
    assert diff.mean() < 4, diff.mean()  # measured 2.3 (a 1/4 or 1/8 decode against a full one)


def test_resume_and_other_formats_go_through_the_cpu_path(photos, tmp_path):
    from PIL import Image

    paths = [photos.path(i) for i in range(8)]
    for i in range(4):  # PNGs among the JPEGs: decoded by the CPU path, exactly
        Image.open(paths[i]).save(tmp_path / f"{i}.png")
        paths[i] = str(tmp_path / f"{i}.png")
    index = write_index(tmp_path / "index.tfrecord", paths, [0] * 8, allow_outside_root=True)
    kw = {"index": index, "batch_size": 2, "seed": 1, "size": (40, 40), "decode_on": "device"}
    loader = make_loader(**kw)
    it = iter(loader)
    first = [next(it)["index"].tolist() for _ in range(2)]
    state = loader.state_dict()
    fresh = make_loader(**kw)
    fresh.load_state_dict(state)
    rest = [b["index"].tolist() for b in fresh]
    want = [b["index"].tolist() for b in make_loader(**{**kw, "decode_on": "workers"})]
    assert first + rest == want
    cpu = torch.cat(
        [b["image"] for b in make_loader(**{**kw, "decode_on": "workers", "shuffle": "none"})]
    )
    dev = torch.cat([b["image"] for b in make_loader(**{**kw, "shuffle": "none"})])
    assert torch.equal(cpu[:4], dev[:4])  # the PNGs: the CPU path itself


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_a_bad_file_has_the_cpu_paths_outcome(photos, tmp_path, on_error):
    data = open(photos.path(3), "rb").read()
    (tmp_path / "bad.jpg").write_bytes(data[: len(data) // 2])
    paths = [photos.path(i) for i in range(6)] + [str(tmp_path / "bad.jpg")]
    index = write_index(tmp_path / "index.tfrecord", paths, [0] * 7, allow_outside_root=True)
    kw = {
        "index": index,
        "batch_size": 7,
        "shuffle": "none",
        "size": (32, 32),
        "on_error": on_error,
    }
    outcomes = {}
    for mode in ("workers", "device"):
        loader = make_loader(decode_on=mode, **kw)
        try:
            got = [b["index"].tolist() for b in loader]
            outcomes[mode] = (got, loader.skipped)
        except ImageLoadError as e:
            outcomes[mode] = (e.record_id, e.cause)
    assert outcomes["workers"] == outcomes["device"]
    if on_error == "raise":
        assert outcomes["device"][0] == 6 and "truncated" in outcomes["device"][1]


def test_device_decode_is_the_torch_backends_and_needs_no_pinned_copy(photos):
    with pytest.raises(ValueError, match="torch backend"):
        make_loader(index=photos, batch_size=4, size=(32, 32), decode_on="device", backend="tf")
    with pytest.raises(ValueError, match="pin_memory=True does nothing"):
        make_loader(index=photos, batch_size=4, size=(32, 32), decode_on="device", pin_memory=True)


@pytest.mark.gpu
def test_on_a_gpu_the_batch_is_decoded_there_within_a_few_levels(photos):
    kw = {"index": photos, "batch_size": 8, "seed": 2, "transform": CROP}
    _, cpu = _epoch(**kw)
    _, gpu = _epoch(decode_on="device", device="cuda", num_workers=2, **kw)
    assert gpu.device.type == "cuda"
    diff = (cpu.int() - gpu.cpu().int()).abs().float()
    assert diff.mean() < 3, diff.mean()  # nvJPEG's IDCT and upsampling against libjpeg-turbo's
