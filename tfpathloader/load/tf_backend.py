"""The tf.data backend: the same ids as the PyTorch loader, read and decoded by tf.data.

One pipeline and one iterator per loader, for every epoch (NOTE [one pipeline], [one iterator]
in _tf_epochs.py): this rank's ids (from the shared order code) -> ``from_tensor_slices`` ->
``batch`` -> a ``map`` that reads a whole batch (NOTE [tf reads]; one call at a time, NOTE [one
reader] in _tf_pipeline.py) -> a parallel, deterministic ``map`` that decodes it -> ``prefetch``
(batching the ids before the maps, not the images after them: see NOTE [tf pipeline cost]).
Batches reach PyTorch by DLPack without a copy; :meth:`TFLoader.as_tf_dataset` gives the same
pipeline as a plain ``tf.data.Dataset`` for TensorFlow users.

NOTE [pixel parity]: PNGs decode to the same pixels as the PyTorch backend: 16-bit samples keep
their high byte (``decode_png`` does that for uint8), palettes expand, alpha is dropped, and
RGB -> grey uses Pillow's integer formula instead of ``decode_png(channels=1)`` (which differs by
one in places). JPEGs use ``dct_method="INTEGER_ACCURATE"`` (Pillow's islow IDCT), or
``"INTEGER_FAST"`` with ``jpeg_dct="fast"`` (simplejpeg's ``fastdct``, NOTE [jpeg dct]). CMYK JPEGs
(4 components in the header; libjpeg's CMYK -> RGB differs from Pillow's by up to 12) and any
other format go through the PyTorch backend's own Pillow decoder (``tf.numpy_function``).
Resizing is ``tf.image.resize(antialias=True)`` and is close to, not equal to, Pillow's bilinear.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..index import PathIndex
from ..storage import Fetcher, is_url
from ..transforms import Resize
from ..transforms import Transform as Pipeline
from . import _tf_errors
from ._tf_crop import crop_batch
from ._tf_epochs import Epochs
from ._tf_ops import checked, grey, import_tensorflow, map_grouped, read_files
from ._tf_pipeline import decode_batches, id_batches, load_batches, sweep
from .checks import check_transform_output, file_reader
from .decode import decode_image
from .loader import LoaderBase, LoaderConfig, Transform, call_user_transform

__all__ = ["TFLoader", "import_tensorflow"]


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
        self._reader = file_reader(index, cfg)
        # The index as three tensors: all paths in one string, offsets, labels.
        self._buffer = tf.constant(index.path_buffer.tobytes())
        self._offsets = tf.constant(np.asarray(index.offsets, dtype=np.int64))
        self._labels = tf.constant(np.asarray(index.labels, dtype=np.int64))
        self._prefix = tf.constant(os.path.join(index.root, ""))
        self._parallel = cfg.num_workers if cfg.num_workers > 0 else tf.data.AUTOTUNE
        self._absolute_paths = _has_absolute_paths(index)
        self._remote = is_url(index.root)
        # One fetcher for tf.data's parallel batch calls in this process: in_flight per call,
        # as the torch backend keeps in_flight per worker.
        calls = cfg.num_workers or os.cpu_count() or 1
        self._fetcher = Fetcher(
            dataclasses.replace(cfg.remote, in_flight=cfg.remote.in_flight * calls)
        )
        self._remote_failures: dict[int, str] = {}

        # Traced once per loader, not once per epoch: a new trace per epoch would grow memory.
        # NOTE [no autograph]: these functions branch with tf.cond / tf.switch_case and loop
        # with tf.map_fn themselves, so AutoGraph has nothing to convert; converting them (and
        # everything they call) was 2.6 s of the 4.3 s before the first batch.
        def traced(fn: Any) -> Any:
            return tf.function(fn, reduce_retracing=True, autograph=False)

        self._prepare_fn = traced(self._prepare)
        self._load_fn = traced(self._load)
        self._finish_fn = traced(self._finish_batch)
        self._load_batch_fn = traced(self._load_batch)
        self._read_batch_fn = traced(self._read_batch)
        self._decode_batch_fn = traced(self._decode_batch)
        # NOTE [one pipeline] (in _tf_epochs.py): built once (below, or at first use), reused.
        self._epochs = Epochs(
            tf,
            lambda batches: decode_batches(self, batches),
            batch_size=cfg.batch_size,
            numbered=cfg.on_error == "skip",
        )
        self._epoch_ids: np.ndarray | None = None
        self._epoch_ids_key: tuple[int, int] | None = None
        self._torch: Any = None
        self._crop_transform = transform if isinstance(transform, Pipeline) else None
        if transform is None and cfg.size is not None:
            # NOTE [tf resize]: size= runs as the pipeline Resize(size): DCT-scaled decode and
            # the torch backend's resize kernel, so both backends give identical pixels (the
            # torch backend's size= and Resize are the same path); tf.image.resize differed by
            # a mean of 0.69 grey levels (up to 86) on photos resized to 224x224.
            self._crop_transform = Resize(cfg.size)
        # NOTE [first batch]: what every epoch would otherwise pay before its first batch is
        # paid here, once: torch (2 s to import, for the DLPack hand-over; a TensorFlow-only
        # user of as_tf_dataset needs no torch) and the pipeline's trace.
        try:
            import torch
        except ImportError:
            pass
        else:
            self._torch = torch
            self._epochs.prepare()  # traces the pipeline; its iterator is made ahead

    # -- ids ------------------------------------------------------------------------------

    def rank_ids(self) -> np.ndarray:
        """This rank's ids for the current epoch, from its (resumed) first batch."""
        key = (self.epoch, self.sampler.layout.start)
        if self._epoch_ids is None or self._epoch_ids_key != key:
            self._epoch_ids = self.sampler.epoch_ids()
            self._epoch_ids_key = key
        return self._epoch_ids

    def _batch_bounds(self, k: int) -> tuple[int, int]:
        b = self.config.batch_size
        return k * b, min((k + 1) * b, len(self.rank_ids()))

    # -- the pipeline ---------------------------------------------------------------------

    # NOTE [tf pipeline cost]: tf.data spends about 15 us per element on its own bookkeeping and
    # every op in a map function costs about a microsecond (a tf.cond several): as much as
    # decoding a 28x28 PNG. So the pipeline's elements are whole batches: one map call per
    # batch computes paths and labels (vectorized) and reads its files, a parallel one decodes
    # its images with tf.map_fn
    # (a loop inside the runtime: 64k vs 37k images/s for per-record elements, measured on the
    # demo PNGs with 2 cores), then converts grey and checks sizes once per batch. Images are
    # decoded straight to 3 channels (libpng/libjpeg replicate grey, expand palettes and drop
    # alpha exactly as the Pillow rules do). tf.io.decode_jpeg also decodes PNG and GIF; other
    # formats (found by content, not by file name) need a branch to Pillow, taken per image
    # only in a batch that holds one. With on_error="skip" records stay separate elements, so
    # that one bad record can be dropped (slower, and only then).

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
            return tf.io.decode_jpeg(data, channels=3, dct_method=self._dct_method)

        def other() -> Any:  # Pillow checks the pixel count itself
            img = tf.numpy_function(_pillow_rgb, [data], tf.uint8, stateful=False)
            return tf.ensure_shape(img, [None, None, 3])

        pillow = cmyk  # a CMYK JPEG or another format, by content (see _tf_ops.headers)
        if pillow is None:
            return tf.ensure_shape(fast(), [None, None, 3])
        return tf.ensure_shape(tf.cond(pillow, other, fast), [None, None, 3])

    def _load(self, item: dict[str, Any]) -> dict[str, Any]:
        """One record: read, check, decode (see :meth:`_image`)."""
        data, cmyk = checked(self.tf, self._read_files(item["path"][None], item["index"][None])[0])
        if self._crop_transform is not None:
            one = {k: item[k][None] for k in ("index", "epoch")}
            return {**item, "image": self._crop(one, data[None], cmyk[None])[0]}
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
        return self._decode_batch(*self._read_batch(ids, epoch))

    def _read_batch(self, ids: Any, epoch: Any) -> tuple[dict[str, Any], Any, Any]:
        """A batch's paths, labels (:meth:`_prepare`) and checked bytes (NOTE [tf reads])."""
        items = self._prepare(ids, epoch)
        data, cmyk = checked(self.tf, self._read_files(items["path"], items["index"]))
        return items, data, cmyk

    def _decode_batch(self, items: dict[str, Any], data: Any, cmyk: Any) -> dict[str, Any]:
        """A batch's images from its bytes (:meth:`_read_batch`)."""
        tf = self.tf
        if self.transform is None:
            spec = tf.TensorSpec([None, None, 3], tf.uint8)
        else:
            spec = tf.TensorSpec([None, None, None], tf.uint8)
        if self._crop_transform is not None:
            return self._finish_batch({**items, "image": self._crop(items, data, cmyk)})

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

    def _crop(self, items: dict[str, Any], data: Any, cmyk: Any) -> Any:
        """A batch through the transforms pipeline (see NOTE [tf crop] in _tf_crop.py)."""
        pipe = self._crop_transform
        assert pipe is not None
        seed, other = self.config.seed, True  # formats are told by content (_tf_ops.headers)
        return crop_batch(
            self.tf, pipe, seed, items, data, self._decode, cmyk, other, self._dct_method
        )

    @property
    def _dct_method(self) -> str:
        """TensorFlow's name for the IDCT of ``jpeg_dct`` (NOTE [jpeg dct] in _crop.py)."""
        return "INTEGER_FAST" if self.config.jpeg_dct == "fast" else "INTEGER_ACCURATE"

    _read_mode = "python"  # or "tf" (tf.io.read_file, no checks): only for benchmarks
    _parallel_reads = False  # True: reads as parallel as decodes, only for benchmarks

    def _read_files(self, paths: Any, ids: Any) -> Any:
        """The bytes of a batch's files (see NOTE [tf reads] and NOTE [bomb check])."""
        tf = self.tf
        if self._remote:
            # tf.io.read_file reads neither s3:// nor http(s)://: one host call per batch
            # fetches all its files concurrently (see NOTE [remote batches] in torch_backend).
            data = tf.numpy_function(self._fetch_remote, [paths, ids], tf.string, stateful=True)
            return tf.ensure_shape(data, paths.shape)
        if self._read_mode == "tf":
            return map_grouped(self.tf, tf.io.read_file, paths, tf.TensorSpec([], tf.string))
        return read_files(tf, self._reader, paths)

    def _fetch_remote(self, paths: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """A batch's bytes, fetched concurrently; a failure is remembered, then raised."""
        return _tf_errors.fetch_remote(self, paths, ids)

    def _finish_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Per batch: grey conversion."""
        batch = dict(batch)
        img = batch.pop("image")
        del batch["path"], batch["epoch"]
        if self._channels_last and self.config.channels == 1:
            img = grey(self.tf, img)
        return {"image": img, **batch}

    @property
    def _channels_last(self) -> bool:
        """Whether images are HxWxC (decoded or a pipeline's), not a user callable's CxHxW."""
        return self.transform is None or self._crop_transform is not None

    def _apply_transform(self, hwc: np.ndarray, i: np.int64, epoch: np.int64) -> np.ndarray:
        assert self.transform is not None
        seed = self.config.seed
        out = call_user_transform(self.transform, hwc, hwc.shape, seed, int(epoch), int(i))
        return check_transform_output(out, int(i), self.index.path(int(i)))

    def as_tf_dataset(self, start_batch: int | None = None) -> Any:
        """This rank's current epoch as a ``tf.data.Dataset`` of dicts.

        Each element: ``image`` uint8 ``[B, H, W, C]`` (``[B, C, H, W]`` with a callable
        transform; ``[B, H, W, C]`` with a :mod:`tfpathloader.transforms` pipeline),
        ``label`` and ``index`` int64 ``[B]``. Starts at the batch a loaded state points to.
        With ``on_error="skip"`` elements also carry ``batch``, their batch number. The
        dataset holds the ids of the epoch current when it was made: a later ``set_epoch``
        does not change it.
        """
        tf = self.tf
        start = self.batches_consumed if start_batch is None else start_batch
        lo, _ = self._batch_bounds(start)
        ids = tf.constant(self.rank_ids()[lo:].astype(np.int64))
        epoch = tf.constant(self.epoch, tf.int64)
        b, numbered = self.config.batch_size, self.config.on_error == "skip"
        batches = id_batches(tf, ids, epoch, start, batch_size=b, numbered=numbered)
        return load_batches(self, batches)

    def _pipeline(self) -> Any:
        """The loader's one pipeline (NOTE [one pipeline] in _tf_epochs.py)."""
        return self._epochs.dataset()

    # -- iteration ------------------------------------------------------------------------

    def _to_torch(self, batch: dict[str, Any]) -> dict[str, Any]:
        torch = self._torch
        image = torch.from_dlpack(batch["image"])  # shares TensorFlow's buffer: no copy
        if self._channels_last:
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
        start = self._start()
        self._remote_failures.clear()
        sweep()  # a safe point: free iterators released earlier (NOTE [iterator lifetime])
        lo, _ = self._batch_bounds(start)
        g = self._epochs.start(self.rank_ids()[lo:], self.epoch, start)
        return self._deliver(start, g)

    def _deliver(self, expected: int, g: int) -> Iterator[dict[str, Any]]:
        while True:
            try:
                batch = self._epochs.next(g)
            except self.tf.errors.OpError as e:
                raise self._culprit(expected, e) from None
            if batch is None:  # the epoch's end
                break
            if self.config.on_error == "skip":
                no = int(batch.pop("batch"))
                for lost in range(expected, no):  # whole batches lost to bad records
                    self._note_skips(lost, np.zeros(0, dtype=np.int64))
                    self._delivered()
                self._note_skips(no, batch["index"].numpy())
                expected = no
            out = self._to_torch(batch)
            self._delivered()  # counted as consumed once handed over (see LoaderBase)
            expected += 1
            yield out
        if self.config.on_error == "skip":
            for lost in range(expected, self.sampler.num_steps):
                self._note_skips(lost, np.zeros(0, dtype=np.int64))
                self._delivered()
        self._finish()

    def _note_skips(self, k: int, delivered: np.ndarray) -> None:
        _tf_errors.note_skips(self, k, delivered)

    def _why(self, i: int) -> tuple[int, str, str]:
        return _tf_errors.why(self, i)

    def _culprit(self, k: int, error: Exception) -> Exception:
        return _tf_errors.culprit(self, k, error)

    def close(self) -> None:
        """Free the loader's tf.data iterator (its threads end with it); iterating after this
        makes a new one."""
        self._epochs.close()
        sweep()

    def __enter__(self) -> TFLoader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _has_absolute_paths(index: PathIndex) -> bool:
    """Whether any stored path is absolute (allowed only with allow_outside_root)."""
    starts = np.asarray(index.offsets[:-1])
    return bool(np.any(np.asarray(index.path_buffer)[starts] == ord("/")))
