"""The training crop on photos: tfpathloader's decode-aware pipeline vs its peers, side by side.

Every row delivers RandomResizedCrop(224) + RandomHorizontalFlip over the same files, batch 256,
2 workers (processes or tf.data parallelism), one whole epoch per run, start-up included, each
run in its own fresh process; rows are interleaved over ``--rounds`` rounds and each row's ratio
is its rate over the ``raw`` row's rate of the same round (median and range over rounds):

- ``raw``: 2 processes, Pillow decode + crop + resize + flip in a loop (torchvision's RRC path,
  no loader, no batching).
- ``dataloader``: a plain ``DataLoader`` over a list of paths doing the same, default collation.
- ``torch``: tfpathloader, torch backend, ``tfpathloader.transforms`` pipeline.
- ``torch-callable``: tfpathloader, torch backend, the same crop as a user callable (full decode).
- ``tf``: tfpathloader, tf backend, ``tfpathloader.transforms`` pipeline.
- ``torch-noaa``, ``tf-noaa``: the same with ``antialias=False`` (what hand-written tf.data's
  ``tf.image.resize`` does by default).
- ``tf-hand``: hand-written tf.data as TensorFlow's docs teach it (``shuffle(N)``,
  ``sample_distorted_bounding_box`` + ``decode_and_crop_jpeg``, ``resize``, flip, AUTOTUNE).

Usage::

    python benchmarks/crop.py --photos /tmp/photos --images 3000 --rounds 5
    python benchmarks/crop.py --photos /tmp/photos --micro      # per-image costs, one process

The row functions (``ROWS``) take ``(index, n)`` and return ``(seconds, images, first_batch_s)``,
for ``tfpathloader bench`` to reuse.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

BATCH, WORKERS, SIZE, SEED = 256, 2, 224, 0


def _rrc(h: int, w: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    from tfpathloader.transforms import RandomResizedCrop

    return RandomResizedCrop(SIZE).box(h, w, rng)


def _pillow_crop(path: str, rng: np.random.Generator) -> np.ndarray:
    """torchvision's RandomResizedCrop + RandomHorizontalFlip on a PIL image, in plain Pillow."""
    from PIL import Image

    im = Image.open(path).convert("RGB")
    y, x, h, w = _rrc(im.size[1], im.size[0], rng)
    im = im.crop((x, y, x + w, y + h)).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(im)


def _raw_part(args: tuple[list[str], int]) -> int:
    paths, part = args
    rng = np.random.default_rng([SEED, part])
    for p in paths:
        _pillow_crop(p, rng)
    return len(paths)


def row_raw(index: Any, n: int) -> tuple[float, int, float]:
    import multiprocessing as mp

    paths = [index.path(i) for i in range(n)]
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(WORKERS) as pool:
        parts = [(paths[k::WORKERS], k) for k in range(WORKERS)]
        done = sum(pool.map(_raw_part, parts))
    return time.perf_counter() - t0, done, math.nan


class _PathDataset:
    def __init__(self, paths: list[str]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        import torch

        img = _pillow_crop(self.paths[i], np.random.default_rng([SEED, i]))
        return torch.from_numpy(img).permute(2, 0, 1).contiguous(), 0  # PILToTensor


def _time_loader(loader: Any) -> tuple[float, int, float]:
    t0 = time.perf_counter()
    first, images = math.nan, 0
    for batch in loader:
        images += len(batch[1] if isinstance(batch, (list, tuple)) else batch["index"])
        if math.isnan(first):
            first = time.perf_counter() - t0
    return time.perf_counter() - t0, images, first


def row_dataloader(index: Any, n: int) -> tuple[float, int, float]:
    import torch

    ds = _PathDataset([index.path(i) for i in range(n)])
    g = torch.Generator().manual_seed(SEED)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=BATCH, shuffle=True, num_workers=WORKERS, generator=g
    )
    return _time_loader(loader)


def _pipeline(antialias: bool = True) -> Any:
    from tfpathloader import transforms as T

    return T.Compose([T.RandomResizedCrop(SIZE, antialias=antialias), T.RandomHorizontalFlip()])


def _callable(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same crop written for the CxHxW view a user callable gets."""
    from PIL import Image

    _, h, w = image.shape
    y, x, ch, cw = _rrc(h, w, rng)
    im = Image.fromarray(np.ascontiguousarray(image[:, y : y + ch, x : x + cw].transpose(1, 2, 0)))
    im = im.resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(im).transpose(2, 0, 1)


def _ours(backend: str, transform: Any) -> Callable[[Any, int], tuple[float, int, float]]:
    def row(index: Any, n: int) -> tuple[float, int, float]:
        from tfpathloader import make_loader

        # The framework is imported before the clock starts, as in the peers' rows (torch's
        # import alone is 1.3 s here, more than the rest of a 1,000-photo epoch).
        if backend == "torch":
            import torch  # noqa: F401
        else:
            from tfpathloader.load.tf_backend import import_tensorflow

            import_tensorflow()
        t0 = time.perf_counter()
        loader = make_loader(
            backend=backend,
            index=index,
            batch_size=BATCH,
            num_workers=WORKERS,
            transform=transform(),
            seed=SEED,
        )
        s, images, first = _time_loader(loader)
        extra = time.perf_counter() - t0 - s
        return s + extra, images, first + extra

    return row


def _tf_hand_image(tf: Any, path: Any, seed: Any, exact: bool = False) -> Any:
    """One image the way TensorFlow's docs teach the Inception-style crop.

    ``exact``: with the decode and resize quality of tfpathloader's rows (libjpeg's accurate
    integer IDCT, as Pillow and simplejpeg decode, and an antialiased resize) instead of
    TensorFlow's defaults (the fast IDCT, no antialiasing).
    """
    data = tf.io.read_file(path)
    shape = tf.io.extract_jpeg_shape(data)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        tf.zeros([0, 0, 4]),
        seed=seed,
        area_range=(0.08, 1.0),
        aspect_ratio_range=(3 / 4, 4 / 3),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    box = tf.stack([begin[0], begin[1], size[0], size[1]])
    dct = "INTEGER_ACCURATE" if exact else ""
    img = tf.io.decode_and_crop_jpeg(data, box, channels=3, dct_method=dct)
    img = tf.image.resize(img, [SIZE, SIZE], antialias=exact)
    img = tf.image.stateless_random_flip_left_right(img, seed=seed)
    return tf.cast(img, tf.uint8), 0


def row_tf_hand(index: Any, n: int) -> tuple[float, int, float]:
    import tensorflow as tf

    paths = [index.path(i) for i in range(n)]
    t0 = time.perf_counter()

    def load(path: Any, seed: Any) -> Any:
        return _tf_hand_image(tf, path, seed)

    seeds = tf.random.experimental.stateless_split([SEED, 1], num=n)
    ds = tf.data.Dataset.from_tensor_slices((paths, seeds)).shuffle(n, seed=SEED)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(BATCH).prefetch(tf.data.AUTOTUNE)
    s, images, first = _time_loader(ds)
    extra = time.perf_counter() - t0 - s
    return s + extra, images, first + extra


ROWS: dict[str, Callable[[Any, int], tuple[float, int, float]]] = {
    "raw": row_raw,
    "dataloader": row_dataloader,
    "torch": _ours("torch", _pipeline),
    "torch-callable": _ours("torch", lambda: _callable),
    "torch-noaa": _ours("torch", lambda: _pipeline(antialias=False)),
    "tf": _ours("tf", _pipeline),
    "tf-noaa": _ours("tf", lambda: _pipeline(antialias=False)),
    "tf-hand": row_tf_hand,
}


def _child(args: argparse.Namespace) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from tfpathloader import PathIndex

    index = PathIndex.read(os.path.join(args.photos, "index.tfrecord"))
    s, images, first = ROWS[args.row](index, len(index))
    print(json.dumps({"seconds": s, "images": images, "first_batch_s": first}))


def _micro(args: argparse.Namespace) -> None:
    """Per-image cost of one worker's work in one process, one core, steady state (median of 5)."""
    import torch

    from tfpathloader import PathIndex
    from tfpathloader.load._torch.slots import _SlotPool
    from tfpathloader.load.torch_backend import PathIndexDataset

    torch.set_num_threads(1)
    index = PathIndex.read(os.path.join(args.photos, "index.tfrecord"))
    b = 128
    ids = [np.arange(k * b, (k + 1) * b, dtype=np.int64) % len(index) for k in range(6)]
    plain = _PathDataset([index.path(i) for i in range(len(index))])
    noaa = _pipeline(antialias=False)

    def dataloader(k: int) -> Any:
        return torch.utils.data.default_collate([plain[int(i)] for i in ids[k]])

    options: dict[str, Callable[[int], Any]] = {"DataLoader __getitem__ + collate": dataloader}
    for name, transform in [
        ("torch backend, pipeline", _pipeline()),
        ("torch backend, pipeline antialias=False", noaa),
        ("torch backend, callable", _callable),
    ]:
        ds = PathIndexDataset(index, channels=3, transform=transform)
        options[name] = lambda k, ds=ds: ds._fetch(ids[k], 0, None)
    # What a worker does: the batch goes into a slot of the shared pool (pages already mapped).
    ds = PathIndexDataset(index, channels=3, transform=_pipeline())
    ds.pool = _SlotPool(2, (b, SIZE, SIZE, 3))
    options["torch backend, pipeline, into a batch slot"] = lambda k: ds._fetch(ids[k], 0, k % 2)
    if not args.no_tf:
        from tfpathloader import make_loader
        from tfpathloader.load.tf_backend import import_tensorflow

        tf = import_tensorflow()
        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.config.threading.set_intra_op_parallelism_threads(1)
        epoch = tf.constant(0, tf.int64)
        for name, transform in [
            ("tf backend, pipeline", _pipeline()),
            ("tf backend, pipeline antialias=False", noaa),
        ]:
            loader = make_loader(backend="tf", index=index, batch_size=b, transform=transform)
            fn = loader._load_batch_fn  # type: ignore[attr-defined]
            options[name] = lambda k, fn=fn: fn(tf.constant(ids[k]), epoch)
        hand = tf.function(
            lambda paths, seeds: tf.map_fn(
                lambda x: _tf_hand_image(tf, x[0], x[1])[0],
                (paths, seeds),
                fn_output_signature=tf.TensorSpec([SIZE, SIZE, 3], tf.uint8),
            )
        )
        paths = [tf.constant([index.path(int(i)) for i in ids[k]]) for k in range(len(ids))]
        seeds = tf.random.experimental.stateless_split([SEED, 1], num=b)
        options["hand-written tf.data map function"] = lambda k: hand(paths[k], seeds)
        exact = tf.function(
            lambda paths, seeds: tf.map_fn(
                lambda x: _tf_hand_image(tf, x[0], x[1], exact=True)[0],
                (paths, seeds),
                fn_output_signature=tf.TensorSpec([SIZE, SIZE, 3], tf.uint8),
            )
        )
        options["hand-written, accurate IDCT + antialias"] = lambda k: exact(paths[k], seeds)
    times: dict[str, list[float]] = {name: [] for name in options}
    for fn in options.values():
        fn(0)
    for rnd in range(5):
        for name, fn in options.items():
            t0 = time.perf_counter()
            fn(1 + rnd)
            times[name].append((time.perf_counter() - t0) / b * 1e3)
    for name, ts in times.items():
        print(f"{name:42s} {statistics.median(ts):6.2f} ms per image ({min(ts):.2f}-{max(ts):.2f})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", required=True, help="folder of make_photo_set (made if missing)")
    p.add_argument("--images", type=int, default=3000, help="size of a new photo set")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--row", help=argparse.SUPPRESS)
    p.add_argument("--micro", action="store_true")
    p.add_argument("--no-tf", action="store_true", help="--micro without the TensorFlow rows")
    args = p.parse_args()
    if args.row:
        return _child(args)
    if not os.path.exists(os.path.join(args.photos, "index.tfrecord")):
        from photos import make_photo_set

        make_photo_set(args.photos, args.images, SEED)
    if args.micro:
        return _micro(args)
    rows = args.rows.split(",")
    if "raw" not in rows:
        rows.insert(0, "raw")
    rates: dict[str, list[float]] = {r: [] for r in rows}
    firsts: dict[str, list[float]] = {r: [] for r in rows}
    ratios: dict[str, list[float]] = {r: [] for r in rows}
    for rnd in range(args.rounds + 1):  # round 0: warm-up (file cache, imports)
        got = {}
        for r in rows:
            cmd = [
                sys.executable,
                __file__,
                "--photos",
                args.photos,
                "--images",
                str(args.images),
                "--row",
                r,
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            got[r] = json.loads(out.stdout.strip().splitlines()[-1])
        if rnd == 0:
            continue
        for r in rows:
            rate = got[r]["images"] / got[r]["seconds"]
            rates[r].append(rate)
            firsts[r].append(got[r]["first_batch_s"])
            ratios[r].append(rate / (got["raw"]["images"] / got["raw"]["seconds"]))
        print(f"round {rnd}: " + "  ".join(f"{r} {ratios[r][-1]:.2f}" for r in rows), flush=True)
    print("\n| row | ratio to raw, median (range) | images/s median | first batch s |")
    print("|---|---|---|---|")
    for r in rows:
        q = ratios[r]
        print(
            f"| {r} | {statistics.median(q):.2f} ({min(q):.2f}-{max(q):.2f}) | "
            f"{statistics.median(rates[r]):.0f} | {statistics.median(firsts[r]):.2f} |"
        )


if __name__ == "__main__":
    main()
