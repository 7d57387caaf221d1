"""The README's Speed table: our bench rows beside the loaders people write instead.

    python benchmarks/peers.py data/index.tfrecord            # the demo PNGs
    python benchmarks/peers.py --make-jpeg bench-jpeg         # 224x224 RGB JPEGs (made if missing)
    python benchmarks/peers.py --make-photos bench-photo      # photos, resized to 224x224
    python benchmarks/peers.py --make-photos bench-photo --crop   # ... through the training crop

The rows of ``benchmarks/bench.py`` (raw, raw-lean, torch, tf, torch-fast, tf-fast), and peers,
each written the way its own docs teach it (linked in each factory's docstring): a user's first,
idiomatic pipeline with the same worker count and batch size as ours, no tuning beyond it. All
run through the bench driver (NOTE [bench method] in benchmarks/bench.py):
the same files, each row in its own process, interleaved rounds. A peer whose package is
missing is reported as skipped (``pip install 'tfpathloader[bench]'``: torchdata, grain and DALI).
``docs/make_docs.py --only bench`` runs this script for the README.
"""

from __future__ import annotations

import argparse
import os
import sys
import zlib
from functools import partial
from typing import Any, cast

import numpy as np
from bench import (
    ROWS,
    Result,
    Row,
    RowSpec,
    Run,
    add_bench_arguments,
    bench_index,
    count_epoch,
    pillow_crop,
)
from photos import make_jpeg_set, make_photo_set

from tfpathloader import PathIndex
from tfpathloader._utils import optional_import


class PathListDataset:
    """The common hand-written dataset: a list of paths and labels, Pillow per item.

    As the PyTorch tutorial "Writing Custom Datasets, DataLoaders and Transforms" and
    torchvision's ``ImageFolder`` (minus torchvision) do it.
    """

    def __init__(self, spec: RowSpec):
        self.paths = list(spec.paths)
        self.labels = list(spec.labels)
        self.mode = "L" if spec.channels == 1 else "RGB"
        self.size = spec.size
        self.spec = spec

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        import torch
        from PIL import Image

        if self.spec.crop:  # torchvision draws from torch's generator (seeded per worker)
            rng = np.random.default_rng([self.spec.seed, i, int(torch.randint(2**31, ()))])
            arr = pillow_crop(self.paths[i], self.spec, rng)
            arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
            return torch.from_numpy(np.ascontiguousarray(arr)), self.labels[i]
        with Image.open(self.paths[i]) as img:
            img = img.convert(self.mode)
            if self.size is not None:
                img = img.resize(self.size[::-1], Image.Resampling.BILINEAR)
            arr = np.array(img)  # a writable copy, as torchvision's PILToTensor makes
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(arr)), self.labels[i]


def _dataloader(spec: RowSpec, *, stateful: bool = False) -> Run:
    """``DataLoader(dataset, batch_size, shuffle=True, num_workers)`` (torch.utils.data docs).

    ``stateful``: torchdata's drop-in ``StatefulDataLoader`` with the same arguments
    (https://pytorch.org/data/beta/torchdata.stateful_dataloader.html).
    """
    import torch

    if stateful:
        mod = optional_import("torchdata.stateful_dataloader", "bench", "the stateful row")
        Loader = mod.StatefulDataLoader
    else:
        Loader = torch.utils.data.DataLoader
    g = torch.Generator().manual_seed(spec.seed)
    dl = Loader(
        cast(Any, PathListDataset(spec)),
        batch_size=spec.batch_size,
        shuffle=True,
        num_workers=spec.workers,
        generator=g,
    )

    def run(epoch: int) -> Result:
        return count_epoch(dl, len(spec.paths))

    return run


# --------------------------------------------------------------------------- grain


def _grain_load(item: tuple[str, int], mode: str, spec: RowSpec) -> Any:
    from PIL import Image

    path, label = item
    size = spec.size
    if spec.crop:
        arr = pillow_crop(path, spec, np.random.default_rng([spec.seed, zlib.crc32(path.encode())]))
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        return np.ascontiguousarray(arr), label
    with Image.open(path) as img:
        img = img.convert(mode)
        if size is not None:
            img = img.resize(size[::-1], Image.Resampling.BILINEAR)
        arr = np.asarray(img)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr), label


def _grain(spec: RowSpec) -> Run:
    """Grain's dataset API as its tutorial teaches it: ``MapDataset.source(...).shuffle(seed)
    .map(load).batch(B)``, then ``.to_iter_dataset().mp_prefetch(MultiprocessingOptions(
    num_workers))`` (https://google-grain.readthedocs.io/en/latest/tutorials/dataset_basic_tutorial.html).
    """
    grain = optional_import("grain", "bench", "the grain row")

    mode = "L" if spec.channels == 1 else "RGB"
    records = list(zip(spec.paths, spec.labels, strict=True))
    ds = (
        grain.MapDataset.source(records)
        .shuffle(seed=spec.seed)
        .map(partial(_grain_load, mode=mode, spec=spec))
        .batch(spec.batch_size)
        .to_iter_dataset()
        .mp_prefetch(grain.MultiprocessingOptions(num_workers=spec.workers))
    )

    def run(epoch: int) -> Result:
        return count_epoch(ds, len(spec.paths))

    return run


# --------------------------------------------------------------------------- hand-written tf.data


def _tf_hand(spec: RowSpec, exact: bool = False) -> Run:
    """The tf.data guide's image pipeline ("Load and preprocess images"):
    ``from_tensor_slices(paths).shuffle(N).map(read + decode, AUTOTUNE).batch().prefetch()``.

    ``exact``: with our pixel quality (NOTE [equal pixels]).
    """
    from tfpathloader._tf import import_tensorflow

    tf = import_tensorflow()
    channels = spec.channels
    dct = "INTEGER_ACCURATE" if exact else ""  # "": TensorFlow's default, the fast IDCT

    def load(path: Any, label: Any) -> Any:
        data = tf.io.read_file(path)
        if exact:  # decode_image has no dct_method; decode_jpeg reads PNG and GIF too
            img = tf.io.decode_jpeg(data, channels=channels, dct_method=dct)
        else:
            img = tf.io.decode_image(data, channels=channels, expand_animations=False)
        if spec.size is not None:
            img = tf.cast(tf.image.resize(img, spec.size, antialias=exact), tf.uint8)
        return tf.transpose(img, [2, 0, 1]), label

    def load_crop(path: Any, label: Any) -> Any:
        """TensorFlow's Inception-style crop (NOTE [bench crop])."""
        data = tf.io.read_file(path)
        begin, size, _ = tf.image.sample_distorted_bounding_box(
            tf.io.extract_jpeg_shape(data),
            tf.zeros([0, 0, 4]),
            area_range=(0.08, 1.0),
            aspect_ratio_range=(3 / 4, 4 / 3),
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        box = tf.stack([begin[0], begin[1], size[0], size[1]])
        img = tf.io.decode_and_crop_jpeg(data, box, channels=channels, dct_method=dct)
        img = tf.image.resize(img, spec.size, antialias=exact)
        img = tf.image.random_flip_left_right(img)
        return tf.transpose(tf.cast(img, tf.uint8), [2, 0, 1]), label

    tf.random.set_seed(spec.seed)
    ds = (
        tf.data.Dataset.from_tensor_slices((list(spec.paths), np.asarray(spec.labels)))
        .shuffle(len(spec.paths), seed=spec.seed)
        .map(load_crop if spec.crop else load, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(spec.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )

    def run(epoch: int) -> Result:
        return count_epoch(ds, len(spec.paths))

    return run


# --------------------------------------------------------------------------- NVIDIA DALI


def _dali(spec: RowSpec) -> Run:
    """DALI as its docs teach it ("Getting started", the ResNet-50 example): ``fn.readers.file``,
    ``fn.decoders.image_random_crop`` (or ``fn.decoders.image``), ``fn.resize``, ``fn.flip`` with
    ``fn.random.coin_flip``, iterated by ``DALIGenericIterator``. On the CPU here
    (``device_id=None``: DALI's CPU-only mode, ``"cpu"`` operators, ``num_threads`` = workers);
    ``benchmarks/gpu_step.py`` runs it ``mixed`` on a GPU.
    """
    dali = optional_import("nvidia.dali", "bench", "the DALI row")
    from nvidia.dali import fn, types
    from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

    rgb = types.RGB if spec.channels == 3 else types.GRAY

    @dali.pipeline_def(batch_size=spec.batch_size, num_threads=spec.workers, device_id=None,
                       seed=spec.seed)  # fmt: skip
    def pipe() -> Any:
        jpegs, labels = fn.readers.file(files=list(spec.paths), labels=list(spec.labels),
                                        random_shuffle=True, name="reader")  # fmt: skip
        if spec.crop:
            images = fn.decoders.image_random_crop(
                jpegs, device="cpu", output_type=rgb, random_area=[0.08, 1.0],
                random_aspect_ratio=[3 / 4, 4 / 3], num_attempts=10,
            )  # fmt: skip
        else:
            images = fn.decoders.image(jpegs, device="cpu", output_type=rgb)
        if spec.size is not None:
            images = fn.resize(images, resize_x=spec.size[1], resize_y=spec.size[0])
        if spec.crop:
            images = fn.flip(images, horizontal=fn.random.coin_flip(probability=0.5))
        return fn.transpose(images, perm=[2, 0, 1]), labels

    loader = DALIGenericIterator(pipe(), ["image", "label"], reader_name="reader",
                                 last_batch_policy=LastBatchPolicy.PARTIAL, auto_reset=True)  # fmt: skip

    def run(epoch: int) -> Result:
        return count_epoch(({"index": b[0]["label"]} for b in loader), len(spec.paths))

    return run


# Every row, in the order of the tables: ours, then the peers.
CATALOG: dict[str, Row] = {
    **ROWS,
    "baseline": Row("plain DataLoader over a list of paths", _dataloader),
    "stateful": Row("torchdata StatefulDataLoader", partial(_dataloader, stateful=True)),
    "grain": Row("Grain MapDataset + mp_prefetch", _grain),
    "tf-hand": Row("hand-written tf.data", _tf_hand),
    "tf-hand-exact": Row(
        "hand-written tf.data at our pixel defaults", partial(_tf_hand, exact=True)
    ),
    "dali": Row("NVIDIA DALI, CPU pipeline", _dali),
}


def build_parser() -> argparse.ArgumentParser:
    """The options: an index or an image set to make, then those of ``benchmarks/bench.py``."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("index", nargs="?", help="index to benchmark (or --make-jpeg / --make-photos)")
    p.add_argument(
        "--make-jpeg",
        metavar="DIR",
        help="make the 224x224 RGB JPEG set in DIR (if missing) and benchmark it",
    )
    # The set sizes of the README's Speed table (NOTE [bench defaults] in benchmarks/bench.py).
    p.add_argument("--jpeg-count", type=int, default=10000, help="JPEGs to make (default 10000)")
    p.add_argument(
        "--make-photos",
        metavar="DIR",
        help="make the ImageNet-like photo set in DIR (if missing; short side 300-500 px) and "
        "benchmark it, resized to --size (default 224 224)",
    )
    p.add_argument("--photo-count", type=int, default=3000, help="photos to make (default 3000)")
    add_bench_arguments(
        p,
        rows="raw,raw-lean,torch,tf,baseline,stateful,grain,tf-hand,dali",
        rows_help=f"comma-separated rows of: {', '.join(CATALOG)} (default: raw, raw-lean, "
        "torch, tf, baseline, stateful, grain, tf-hand, dali)",
    )
    return p


def open_set(args: argparse.Namespace) -> PathIndex:
    """The index to measure: INDEX, or the JPEG or photo set (made on the first run)."""
    progress = False if args.quiet else None
    if args.make_photos:
        path = os.path.join(args.make_photos, "index.tfrecord")
        if os.path.isfile(path):
            return PathIndex.read(path)
        return make_photo_set(args.make_photos, args.photo_count, progress=progress)
    if args.make_jpeg:
        path = os.path.join(args.make_jpeg, "index.tfrecord")
        if os.path.isfile(path):
            index = PathIndex.read(path)
            print(f"reusing the {len(index):,} JPEGs indexed in {path}", file=sys.stderr)
            return index
        if os.path.isdir(args.make_jpeg) and os.listdir(args.make_jpeg):
            raise SystemExit(
                f"--make-jpeg {args.make_jpeg}: the folder holds other files and no "
                "index.tfrecord; give a new folder (nothing there is overwritten)"
            )
        index = make_jpeg_set(args.make_jpeg, count=args.jpeg_count, progress=progress)
        print(f"made {len(index):,} JPEGs and their index in {path}", file=sys.stderr)
        return index
    if args.index:
        return PathIndex.read(args.index)
    raise SystemExit("give an INDEX to benchmark, or --make-jpeg DIR, or --make-photos DIR")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.make_photos and not args.size:
        args.size = [224, 224]
    return bench_index(args, open_set(args), CATALOG)


if __name__ == "__main__":
    raise SystemExit(main())
