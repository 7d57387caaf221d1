"""The tf.data backend: the same ids as the PyTorch loader, read and decoded by tf.data.

Per epoch: this rank's ids (from the shared order code) -> ``from_tensor_slices`` -> ``batch``
-> parallel, deterministic ``map`` that reads (``tf.io.read_file``) and decodes a whole batch ->
``prefetch`` (batching the ids before the map, not the images after it: see NOTE [tf pipeline
cost]). Batches reach PyTorch by DLPack without a copy; :meth:`TFLoader.as_tf_dataset` gives the
same pipeline as a plain ``tf.data.Dataset`` for TensorFlow users.

NOTE [pixel parity]: PNGs decode to the same pixels as the PyTorch backend: 16-bit samples keep
their high byte (``decode_png`` does that for uint8), palettes expand, alpha is dropped, and
RGB -> grey uses Pillow's integer formula instead of ``decode_png(channels=1)`` (which differs by
one in places). JPEGs use ``dct_method="INTEGER_ACCURATE"`` (Pillow's islow IDCT). CMYK JPEGs
(4 components in the header; libjpeg's CMYK -> RGB differs from Pillow's by up to 12) and any
other format go through the PyTorch backend's own Pillow decoder (``tf.numpy_function``).
Resizing is ``tf.image.resize(antialias=True)`` and is close to, not equal to, Pillow's bilinear.
"""

from __future__ import annotations

import itertools
import os
import sys
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import ImageLoadError
from ..index import PathIndex
from ..order.orders import ArrayOrder
from . import _tf_errors, _tf_feed
from ._tf_feed import EpochFeed
from ._tf_ops import checked, grey, map_grouped
from .decode import decode_image
from .loader import TRANSFORM_STREAM, LoaderBase, LoaderConfig, Transform

__all__ = ["TFLoader", "import_tensorflow"]


def import_tensorflow() -> Any:
    """``import tensorflow``, quietly, with errors that say what to do."""
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except TypeError as e:  # protobuf: duplicate symbol
        if "duplicate symbol" in str(e):
            raise ImportError(
                "TensorFlow cannot be imported: the 'tfrecord' package was imported before "
                "tfpathloader and registered the same protobuf messages. Import tfpathloader "
                "before tfrecord (see NOTE [protobuf clash] in tfpathloader/index/_proto.py)."
            ) from e
        raise
    except ImportError as e:
        raise ImportError(
            "the tf backend needs TensorFlow: pip install 'tfpathloader[tf-cpu]' (or [tf])"
        ) from e
    return tf


def _pillow_rgb(data: bytes) -> np.ndarray:
    """Pillow's 3-channel decode, for formats tf.io does not read (see NOTE [pixel parity])."""
    return decode_image(bytes(data), channels=3)


class TFLoader(LoaderBase):
    """The ``backend="tf"`` loader made by :func:`~tfpathloader.make_loader`."""

    backend = "tf"

    def __init__(self, index: PathIndex, cfg: LoaderConfig, transform: Transform | None):
        super().__init__(index, cfg, transform)
        tf = import_tensorflow()
        self.tf = tf
        # The index as three tensors: all paths in one string, offsets, labels.
        self._buffer = tf.constant(index.path_buffer.tobytes())
        self._offsets = tf.constant(np.asarray(index.offsets, dtype=np.int64))
        self._labels = tf.constant(np.asarray(index.labels, dtype=np.int64))
        self._prefix = tf.constant(os.path.join(index.root, ""))
        self._parallel = cfg.num_workers if cfg.num_workers > 0 else tf.data.AUTOTUNE
        # Batches ready beyond those being decoded: a fixed depth, as DataLoader's
        # prefetch_factor (AUTOTUNE grew it to hold ~10 batches of 224px images: 400 MiB).
        self._prefetch = cfg.prefetch_factor or 2
        self._fast = self._fast_formats_only()
        self._absolute_paths = _has_absolute_paths(index)
        # Traced once per loader, not once per epoch: a new trace per epoch would grow memory.
        self._prepare_fn = tf.function(self._prepare, reduce_retracing=True)
        self._load_fn = tf.function(self._load, reduce_retracing=True)
        self._finish_fn = tf.function(self._finish_batch, reduce_retracing=True)
        self._load_batch_fn = tf.function(self._load_batch, reduce_retracing=True)
        self._epoch_ids: np.ndarray | None = None
        self._epoch_ids_key: tuple[int, int] | None = None
        self._torch: Any = None
        # The pipeline lives in _tf_feed, under this key (see NOTE [pipeline lifetime]).
        self._key = next(_KEYS)
        weakref.finalize(self, _tf_feed.bury, self._key)
        self._stale = False  # an iteration was left early: its batches may still come out

    # -- ids ------------------------------------------------------------------------------

    def rank_ids(self) -> np.ndarray:
        """This rank's ids for the current epoch, from its first batch."""
        key = (self.epoch, len(self.index))
        if self._epoch_ids is None or self._epoch_ids_key != key:
            if self.config.shuffle == "buffer":
                self._epoch_ids = self._tf_buffer_ids()
            else:
                self.sampler.set_epoch(self.epoch)
                self._epoch_ids = self.sampler.epoch_ids()
            self._epoch_ids_key = key
        return self._epoch_ids

    def _tf_buffer_ids(self) -> np.ndarray:
        """TensorFlow's own ``Dataset.shuffle`` over the stored order, split like any order."""
        tf = self.tf
        n = len(self.index)
        seed = int(np.random.SeedSequence([self.config.seed, self.epoch, 2]).generate_state(1)[0])
        ds = tf.data.Dataset.range(n).shuffle(
            self.config.buffer_size, seed=seed, reshuffle_each_iteration=False
        )
        order = ArrayOrder(np.concatenate([b.numpy() for b in ds.batch(1 << 16)]))
        layout = self.sampler.layout
        return layout.ids(order, layout.positions(self.config.rank))

    def _batch_bounds(self, k: int) -> tuple[int, int]:
        b = self.config.batch_size
        return k * b, min((k + 1) * b, len(self.rank_ids()))

    # -- the pipeline ---------------------------------------------------------------------

    # NOTE [tf pipeline cost]: tf.data spends about 15 us per element on its own bookkeeping and
    # every op in a map function costs about a microsecond (a tf.cond several): as much as
    # decoding a 28x28 PNG. So the pipeline's elements are whole batches: one parallel map per
    # batch computes paths and labels (vectorized), reads and decodes its images with tf.map_fn
    # (a loop inside the runtime: 64k vs 37k images/s for per-record elements, measured on the
    # demo PNGs with 2 cores), then converts grey and checks sizes once per batch. Images are
    # decoded straight to 3 channels (libpng/libjpeg replicate grey, expand palettes and drop
    # alpha exactly as the Pillow rules do). tf.io.decode_jpeg also decodes PNG and GIF; other
    # formats need a branch to Pillow, built only when the index names files with other
    # extensions. With on_error="skip" records stay separate elements, so that one bad record
    # can be dropped (slower, and only then).

    def _fast_formats_only(self) -> bool:
        """Whether every path ends in .png, .jpg, .jpeg or .gif (one tf.io op decodes them)."""
        buf = np.asarray(self.index.path_buffer)
        ends = np.asarray(self.index.offsets[1:])
        lengths = np.diff(np.asarray(self.index.offsets))
        tail = np.zeros((len(ends), 5), dtype=np.uint8)
        for k in range(5):
            ok = lengths > k
            tail[ok, 4 - k] = buf[ends[ok] - 1 - k] | 0x20  # lower-case ASCII letters
        t = tail.view("S5").ravel()
        fast = (
            np.char.endswith(t, b".png")
            | np.char.endswith(t, b".jpg")
            | np.char.endswith(t, b".jpeg")
            | np.char.endswith(t, b".gif")
        )
        return bool(np.all(fast))

    def _prepare(self, ids: Any, epoch: Any) -> dict[str, Any]:
        """Paths and labels of a batch of ids, vectorized (and the epoch, for transforms)."""
        tf = self.tf
        start = tf.gather(self._offsets, ids)
        rel = tf.strings.substr(self._buffer, start, tf.gather(self._offsets, ids + 1) - start)
        path = self._prefix + rel
        if self._absolute_paths:
            path = tf.where(tf.strings.substr(rel, 0, 1) == "/", rel, path)
        return {
            "path": path,
            "label": tf.gather(self._labels, ids),
            "index": ids,
            "epoch": tf.fill(tf.shape(ids), epoch),
        }

    def _decode(self, data: Any, cmyk: Any = None) -> Any:
        """RGB pixels of one file; by Pillow where tf.io would differ (NOTE [pixel parity])."""
        tf = self.tf

        def fast() -> Any:
            return tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")

        def other() -> Any:  # Pillow checks the pixel count itself
            img = tf.numpy_function(_pillow_rgb, [data], tf.uint8, stateful=False)
            return tf.ensure_shape(img, [None, None, 3])

        pillow = cmyk
        if not self._fast:
            head = tf.strings.substr(data, 0, 3)
            known = tf.reduce_any(tf.equal(head, [b"\x89PN", b"\xff\xd8\xff", b"GIF"]))
            pillow = tf.logical_not(known) if cmyk is None else tf.logical_or(cmyk, ~known)
        if pillow is None:
            return tf.ensure_shape(fast(), [None, None, 3])
        return tf.ensure_shape(tf.cond(pillow, other, fast), [None, None, 3])

    def _load(self, item: dict[str, Any]) -> dict[str, Any]:
        """One record: read, check, decode (see :meth:`_image`)."""
        data, cmyk = checked(self.tf, self.tf.io.read_file(item["path"]))
        return {**item, "image": self._image(data, item["index"], item["epoch"], cmyk)}

    def _image(self, data: Any, index: Any = None, epoch: Any = None, cmyk: Any = None) -> Any:
        """One file's bytes: decode (3 channels), resize, transform (seeded by index, epoch)."""
        tf = self.tf
        img = self._decode(data, cmyk)
        if self.config.size is not None:
            h, w = self.config.size
            img = tf.image.resize(img, [h, w], method="bilinear", antialias=True)
            img = tf.cast(tf.round(tf.clip_by_value(img, 0, 255)), tf.uint8)
        if self.transform is not None:
            if self.config.channels == 1:
                img = grey(self.tf, img)
            img = tf.numpy_function(self._apply_transform, [img, index, epoch], tf.uint8)
        return img

    def _load_batch(self, ids: Any, epoch: Any) -> dict[str, Any]:
        """A whole batch in one element: see NOTE [tf pipeline cost]."""
        tf = self.tf
        items = self._prepare(ids, epoch)
        if self.transform is None:
            spec = tf.TensorSpec([None, None, 3], tf.uint8)
        else:
            spec = tf.TensorSpec([None, None, None], tf.uint8)
        data, cmyk = checked(self.tf, self._read_files(items["path"]))

        def decode_all(any_cmyk: bool) -> Any:
            # Only a batch holding a CMYK JPEG pays for a per-image choice of decoder.
            values = {"data": data}
            if any_cmyk:
                values["cmyk"] = cmyk
            if self.transform is not None:
                values.update(index=items["index"], epoch=items["epoch"])
            return map_grouped(
                self.tf,
                lambda x: self._image(x["data"], x.get("index"), x.get("epoch"), x.get("cmyk")),
                values,
                spec,
            )

        images = tf.cond(tf.reduce_any(cmyk), lambda: decode_all(True), lambda: decode_all(False))
        return self._finish_batch({**items, "image": images})

    def _read_files(self, paths: Any) -> Any:
        """The bytes of a batch's files (see NOTE [bomb check])."""
        tf = self.tf
        return map_grouped(self.tf, tf.io.read_file, paths, tf.TensorSpec([], tf.string))

    def _finish_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Per batch: grey conversion."""
        batch = dict(batch)
        img = batch.pop("image")
        del batch["path"], batch["epoch"]
        if self.transform is None and self.config.channels == 1:
            img = grey(self.tf, img)
        return {"image": img, **batch}

    def _apply_transform(self, hwc: np.ndarray, i: np.int64, epoch: np.int64) -> np.ndarray:
        assert self.transform is not None
        rng = np.random.default_rng([self.config.seed, int(epoch), int(i), TRANSFORM_STREAM])
        return np.asarray(
            self.transform(np.ascontiguousarray(hwc.transpose(2, 0, 1)), rng), dtype=np.uint8
        )

    def as_tf_dataset(self, start_batch: int | None = None) -> Any:
        """This rank's current epoch as a ``tf.data.Dataset`` of dicts.

        Each element: ``image`` uint8 ``[B, H, W, C]`` (``[B, C, H, W]`` with a transform),
        ``label`` and ``index`` int64 ``[B]``. Starts at the batch a loaded state points to.
        With ``on_error="skip"`` elements also carry ``batch``, their batch number.
        """
        tf = self.tf
        start = self._consumed if start_batch is None else start_batch
        lo, _ = self._batch_bounds(start)
        ids = self.rank_ids()[lo:]
        epoch = tf.constant(self.epoch, dtype=tf.int64)
        b = self.config.batch_size
        batches = tf.data.Dataset.from_tensor_slices(ids.astype(np.int64)).batch(b)
        if self.config.on_error == "raise":
            ds = batches.map(
                lambda batch_ids: self._load_batch_fn(batch_ids, epoch),
                num_parallel_calls=self._parallel,
                deterministic=True,
            )
        else:
            # Each batch decodes in its own small dataset whose bad records are dropped, so a
            # batch keeps its identity (and its number) however many records it loses.
            def one_batch(no: Any, batch_ids: Any) -> Any:
                inner = tf.data.Dataset.from_tensor_slices(self._prepare_fn(batch_ids, epoch))
                inner = inner.map(self._load_fn).ignore_errors().batch(b).map(self._finish_fn)
                return inner.map(lambda x: {**x, "batch": no})

            ds = batches.enumerate(start=start).interleave(
                one_batch,
                cycle_length=max(2, self.config.num_workers),
                num_parallel_calls=self._parallel,
                deterministic=True,
            )
        return ds.prefetch(self._prefetch).with_options(self._options())

    def _options(self) -> Any:
        """tf.data options of both pipelines (see NOTE [tf threads])."""
        options = self.tf.data.Options()
        options.deterministic = True
        return options

    def _pipeline(self) -> tuple[EpochFeed, Any]:
        """The loader's one feed and iterator (built on first use; NOTE [one pipeline per
        loader])."""
        entry = _tf_feed.live(self._key)
        if entry is None:
            _tf_feed.sweep()
            tf = self.tf
            feed = EpochFeed(tf, self.config.batch_size)

            def load(gen: Any, no: Any, ids: Any, epoch: Any) -> Any:
                return {**self._load_batch_fn(ids, epoch), "gen": gen, "batch": no}

            ds = feed.dataset().map(load, num_parallel_calls=self._parallel, deterministic=True)
            entry = (feed, iter(ds.prefetch(self._prefetch).with_options(self._options())))
            _tf_feed.hold(self._key, *entry)
        return entry

    def _reset_pipeline(self) -> None:
        _tf_feed.bury(self._key)
        _tf_feed.sweep()
        self._stale = False

    # -- iteration ------------------------------------------------------------------------

    def _to_torch(self, batch: dict[str, Any]) -> dict[str, Any]:
        torch = self._torch
        image = torch.from_dlpack(batch["image"])  # shares TensorFlow's buffer: no copy
        if self.transform is None:
            image = image.permute(0, 3, 1, 2)  # NxCxHxW, channels_last memory (as torch backend)
        out = {
            "image": image,
            "label": torch.from_dlpack(batch["label"]),
            "index": torch.from_dlpack(batch["index"]),
        }
        if self.config.device is not None:
            out = {k: v.to(self.config.device, non_blocking=True) for k, v in out.items()}
        return out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self._torch is None:
            import torch

            self._torch = torch
        if self.config.on_error == "skip":
            yield from self._iter_skipping()
            return
        start = self._start()
        lo, _ = self._batch_bounds(start)
        while True:  # once, or twice when a stale batch of an earlier iteration failed
            feed, it = self._pipeline()
            stale, self._stale = self._stale, True
            gen = feed.submit(self.epoch, self.rank_ids()[lo:], self._consumed)
            try:
                while self._consumed < len(self):
                    batch = next(it)
                    if int(batch.pop("gen")) != gen:
                        continue  # prefetched for an iteration left early
                    del batch["batch"]
                    out = self._to_torch(batch)
                    self._delivered()  # counted as consumed once handed over (see LoaderBase)
                    yield out
            except self.tf.errors.OpError as e:
                self._reset_pipeline()
                culprit = self._culprit(self._consumed, e)
                if stale and isinstance(culprit, ImageLoadError) and culprit.record_id == -1:
                    lo, _ = self._batch_bounds(self._consumed)
                    continue  # the failure was in a batch nobody waits for any more
                raise culprit from None
            break
        self._stale = False
        self._finish()

    def _iter_skipping(self) -> Iterator[dict[str, Any]]:
        return _tf_errors.iter_skipping(self)

    def _culprit(self, k: int, error: Exception) -> Exception:
        return _tf_errors.culprit(self, k, error)

    def close(self) -> None:
        """End the loader's pipeline (its tf.data threads end with it); iterating again
        builds a new one."""
        self._reset_pipeline()

    def __enter__(self) -> TFLoader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_KEYS = itertools.count()


def _has_absolute_paths(index: PathIndex) -> bool:
    """Whether any stored path is absolute (allowed only with allow_outside_root)."""
    starts = np.asarray(index.offsets[:-1])
    return bool(np.any(np.asarray(index.path_buffer)[starts] == ord("/")))
