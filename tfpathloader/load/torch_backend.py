"""The PyTorch backend: a map-style Dataset over a PathIndex, fed batch requests by the order.

Stage two of the design in PyTorch terms: :class:`GlobalShuffleSampler` decides the ids, a batch
sampler hands each batch's ids (and the epoch) to ``DataLoader`` workers, and
:meth:`PathIndexDataset.__getitems__` reads and decodes the whole batch straight into one
buffer, so there is no per-sample collation.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from typing import Any, cast

import numpy as np
import torch
import torch.utils.data
from PIL import Image

from ..errors import BatchShapeError, ImageLoadError
from ..index import PathIndex
from ..storage import FetchError, RemoteOptions, is_url, redact, shared_fetcher
from ..transforms import Transform as Pipeline
from ..transforms import check_pipeline, plan_rng
from ._crop import decode_into, load_cropped, require_simplejpeg
from ._torch.deaths import surface_worker_death
from ._torch.private import drop_persistent_iterator
from ._torch.requests import BatchRequest, EpochBatchSampler
from ._torch.slots import _SlotPool, pool_slots
from ._torch.wire import _fresh_buffer, _WireBatch
from ._torch.workers import (
    _LIVE_ITERATORS,
    _stop_workers,
    context_of,
    default_prefetch,
    start_method,
)
from .checks import check_transform_output, file_reader, probe_shape
from .decode import Pixels, as_array, check_bytes, read_file
from .files import FileReader
from .loader import LoaderBase, LoaderConfig, Transform, call_user_transform

__all__ = ["BatchRequest", "PathIndexDataset", "TorchLoader"]


# NOTE [channels last]: decoders produce HxWxC. Copying each image into an NxHxWxC batch and
# presenting it as an NxCxHxW tensor in channels_last memory format (a permuted view) skips a
# strided transpose per image, which costs 40% of the decode time of a 224x224 RGB JPEG. Shape
# and dtype are the contract; the layout is the one PyTorch recommends for convolutions anyway
# (call .contiguous() for NCHW-contiguous memory). Grey images are the same in both layouts.


class PathIndexDataset(torch.utils.data.Dataset):
    """Map-style dataset: record id -> ``{"image": uint8 CxHxW, "label", "index"}``.

    Args:
        index: The path index.
        channels: 1 or 3 output channels.
        size: ``(height, width)`` to resize to, or ``None`` (then a batch must be one size).
        transform: A :mod:`tfpathloader.transforms` pipeline (decoded and resized straight
            into the batch, HxWxC), or ``f(image CxHxW, rng) -> image`` (see
            :func:`~tfpathloader.make_loader`); seeded from (seed, epoch, record id).
        seed: Seed of the transform's generators.
        on_error: ``"raise"`` or ``"skip"`` (see :func:`~tfpathloader.make_loader`).
        reader: Opens the files (size limit, root rule); default: the index's root and
            ``allow_outside_root``, 256 MiB.
        remote: How a URL root is read (see :class:`~tfpathloader.storage.RemoteOptions`).
        jpeg_dct: ``"accurate"`` or ``"fast"`` (see :func:`~tfpathloader.make_loader`).
    """

    def __init__(
        self,
        index: PathIndex,
        *,
        channels: int = 3,
        size: tuple[int, int] | None = None,
        transform: Transform | None = None,
        seed: int = 0,
        on_error: str = "raise",
        reader: FileReader | None = None,
        remote: RemoteOptions | None = None,
        jpeg_dct: str = "accurate",
    ):
        self.index = index
        self.reader = reader or FileReader(
            root=index.root, allow_outside_root=index.allow_outside_root
        )
        self.remote = remote or RemoteOptions()
        self.remote_root = is_url(index.root)
        self.channels = channels
        self.size = size
        self.transform = transform
        self.seed = seed
        self.on_error = on_error
        self.fast_dct = jpeg_dct == "fast"
        if self.fast_dct:
            require_simplejpeg()
        self.epoch = 0  # only for __getitem__; batches carry their own epoch
        self.pool: _SlotPool | None = None
        self.pipeline = isinstance(transform, Pipeline)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def _channels_last(self) -> bool:
        """Whether images are HxWxC (decoded or a pipeline's), not a user callable's CxHxW."""
        return self.transform is None or self.pipeline

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self.pool is not None and not self.pool.pickles:
            state["pool"] = (
                None  # forked workers inherit it; never sent (NOTE [slots without fork])
            )
        # A forked worker inherits Pillow's decompression-bomb limit as the user set it; a
        # spawned or forkserver one (NOTE [start method]) gets it with the dataset.
        state["max_image_pixels"] = Image.MAX_IMAGE_PIXELS
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        Image.MAX_IMAGE_PIXELS = state.pop("max_image_pixels", Image.MAX_IMAGE_PIXELS)
        self.__dict__.update(state)

    def _pixels(
        self,
        i: int,
        path: str,
        epoch: int,
        data: bytes | None = None,
        out: np.ndarray | None = None,
    ) -> Pixels:
        """Image ``i``: HxWxC pixels (decoded, or a pipeline's), or a user callable's CxHxW.

        ``data``: the file's bytes, when they were fetched already (a remote root). ``out``:
        the batch row to decode into (NOTE [decode into the slot]); the returned pixels are
        ``out`` itself when they were written there.
        """
        c, size, reader = self.channels, self.size, self.reader
        if data is not None:
            check_bytes(data, path, i)  # what read_file checks of local bytes
        if self.pipeline:
            hwc = load_cropped(
                path,
                cast(Pipeline, self.transform),
                plan_rng(cast(Pipeline, self.transform), self.seed, epoch, i),
                channels=c,
                record_id=i,
                data=data,
                reader=reader,
                out=out,
                fast_dct=self.fast_dct,
            )
            return hwc, hwc.shape
        if data is None:
            data = read_file(path, i, reader)
        out = out if self.transform is None else None  # a callable gets its own array
        pixels, shape = decode_into(
            data, channels=c, size=size, out=out, path=path, record_id=i, fast_dct=self.fast_dct
        )
        if self.transform is None:
            return pixels, shape
        result = call_user_transform(self.transform, pixels, shape, self.seed, epoch, i)
        img = check_transform_output(result, i, path)
        return img, img.shape

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        image = torch.from_numpy(as_array(*self._pixels(i, self.index.path(i), self.epoch)).copy())
        return {
            "image": image.permute(2, 0, 1) if self._channels_last else image,
            "label": torch.tensor(int(self.index.labels[i])),
            "index": torch.tensor(i),
        }

    def __getitems__(self, request: BatchRequest | Sequence[int]) -> Any:
        """Decode a whole batch into one array (the ``DataLoader`` fast path).

        A plain list of ids gives a dict of tensors; a :class:`BatchRequest` (what the
        loader's workers receive) gives the compact form that crosses process boundaries.
        """
        if isinstance(request, BatchRequest):
            try:
                return self._fetch(request.ids, request.epoch, request.slot)
            except Exception as e:
                # Not as DataLoader's "Caught ValueError in DataLoader worker process 0": the
                # main process re-raises this very error, which names the record.
                pool_key = self.pool.key if self.pool is not None else None
                return _WireBatch(error=e, slot=request.slot, pool_key=pool_key)
        return self._fetch(np.asarray(request, dtype=np.int64), self.epoch, None).to_dict()

    def _fetch(self, ids: np.ndarray, epoch: int, slot: int | None) -> _WireBatch:
        kept: list[int] = []
        skipped: list[tuple[int, str, str]] = []
        out: np.ndarray | None = None
        buffer: np.ndarray | torch.Tensor | None = None
        pool = self.pool if slot is not None else None
        flat = memoryview(b"")  # the batch as bytes, for the images Pillow gives as bytes
        row = 0
        first_shape: tuple[int, ...] = ()
        paths = self.index.paths(ids)
        fetched, remote = self._fetch_remote(paths)
        for k, (i, path) in enumerate(zip(ids.tolist(), paths, strict=True)):
            try:
                data = fetched[k] if fetched is not None else None
                if isinstance(data, FetchError):
                    raise ImageLoadError(i, path, data.cause)
                if out is not None:
                    row_out: np.ndarray | None = out[len(kept)]
                elif pool is not None and slot is not None:
                    row_out = pool.buffer(slot)[0]  # used only if the shape is the pool's
                else:
                    row_out = None
                pixels, shape = self._pixels(i, path, epoch, data, row_out)
            except ImageLoadError as e:
                if self.on_error == "raise":
                    return _WireBatch(
                        error=e,
                        slot=slot,
                        pool_key=pool.key if pool else None,
                        remote=remote,
                    )
                skipped.append((e.record_id, e.path, e.cause))
                continue
            if out is None:
                # The first image fixes the batch's shape.
                dtype = pixels.dtype if isinstance(pixels, np.ndarray) else np.dtype(np.uint8)
                if (
                    pool is not None
                    and slot is not None
                    and dtype == np.uint8
                    and shape == pool.shape[1:]
                    and len(ids) <= pool.shape[0]
                ):
                    buffer = pool.buffer(slot)
                else:
                    pool = None
                    buffer = _fresh_buffer((len(ids), *shape), dtype)
                out = buffer.numpy() if isinstance(buffer, torch.Tensor) else buffer
                if dtype == np.uint8:
                    flat, row = out.data.cast("B"), int(np.prod(shape))
                first_shape = shape
            elif shape != first_shape:
                raise BatchShapeError(
                    i,
                    redact(path),
                    f"record {i} ({redact(path)}) has shape {shape} but record {kept[0]} has "
                    f"{out.shape[1:]}: images of one batch must have one size; pass "
                    "size=(height, width) to resize them",
                )
            k = len(kept)
            if pixels is row_out and (k > 0 or pool is not None):
                pass  # decoded straight into its row of the batch
            elif isinstance(pixels, bytes):
                flat[k * row : (k + 1) * row] = pixels  # one copy, no array per image
            else:
                out[k] = pixels
            kept.append(i)
        n = len(kept)
        index = np.asarray(kept, dtype=np.int64)
        labels = np.asarray(self.index.labels[index], dtype=np.int64)
        channels_last = self._channels_last
        if pool is not None:
            return _WireBatch(
                label=labels,
                index=index,
                skipped=skipped,
                slot=slot,
                pool_key=pool.key,
                n=n,
                channels_last=channels_last,
                remote=remote,
            )
        if buffer is None:
            h, w = self.size if self.size is not None else (0, 0)
            buffer = np.empty((0, h, w, self.channels), dtype=np.uint8)
        # A slot this request did not use goes back to the pool when the main process sees it.
        unused_slot_pool = self.pool.key if self.pool is not None and slot is not None else None
        return _WireBatch(
            image=buffer[:n],
            label=labels,
            index=index,
            skipped=skipped,
            slot=slot,
            pool_key=unused_slot_pool,
            channels_last=channels_last,
            remote=remote,
        )

    # NOTE [remote batches]: with a URL root, a batch's files are requested all at once (up to
    # remote.in_flight in flight) before any is decoded, and decoded in the batch's order, so
    # latency is paid about once per batch instead of once per image while the batch keeps the
    # order's exact sequence. A local root never comes here: its reads stay os.open/os.read.
    def _fetch_remote(
        self, paths: list[str]
    ) -> tuple[list[bytes | FetchError] | None, dict[str, int] | None]:
        """A remote batch's bytes (or errors) in order, and the read counts; else (None, None)."""
        if not self.remote_root:
            return None, None
        fetcher = shared_fetcher(self.remote)
        return fetcher.fetch_many(paths), fetcher.take_stats()


def _pass_through(batch: Any) -> Any:
    return batch


class TorchLoader(LoaderBase):
    """The ``backend="torch"`` loader made by :func:`~tfpathloader.make_loader`."""

    backend = "torch"

    def __init__(self, index: PathIndex, cfg: LoaderConfig, transform: Transform | None):
        super().__init__(index, cfg, transform)
        assert cfg.channels is not None
        self.dataset = PathIndexDataset(
            index,
            channels=cfg.channels,
            size=cfg.size,
            transform=transform,
            seed=cfg.seed,
            on_error=cfg.on_error,
            reader=file_reader(index, cfg),
            remote=cfg.remote,
            jpeg_dct=cfg.jpeg_dct,
        )
        self._batch_sampler = EpochBatchSampler(self.sampler, self.dataset)
        workers = cfg.num_workers
        pin = torch.cuda.is_available() if cfg.pin_memory is None else cfg.pin_memory
        self.device = torch.device(cfg.device) if cfg.device is not None else None
        kwargs: dict[str, Any] = {}
        self.persistent = False
        if workers > 0:
            shape = self._image_shape()
            prefetch = cfg.prefetch_factor or default_prefetch(
                workers, cfg.batch_size * int(np.prod(shape))
            )
            self.persistent = True if cfg.persistent_workers is None else cfg.persistent_workers
            kwargs.update(prefetch_factor=prefetch, persistent_workers=self.persistent)
            method = start_method(remote=bool(self.dataset.remote_root))
            if method is not None:
                kwargs["multiprocessing_context"] = method
            if transform is None or self.dataset.pipeline:
                slots = pool_slots(workers, prefetch)
                shared_by = None if method == "fork" else context_of(method)
                self.dataset.pool = _SlotPool(slots, (cfg.batch_size, *shape), shared_by)
        self.dataloader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=cast(Any, self._batch_sampler),  # yields BatchRequests, not lists
            collate_fn=_pass_through,
            num_workers=workers,
            pin_memory=pin,
            timeout=cfg.timeout,
            **kwargs,
        )
        self.pin_memory = pin
        self._workers_failed = False
        self._stop = weakref.finalize(self, _stop_workers, id(self))

    def _image_shape(self) -> tuple[int, ...]:
        """HxWxC of the first readable record after channel conversion and resizing."""
        c = self.config.channels or 3
        if isinstance(self.transform, Pipeline):
            return (*check_pipeline(self.transform), c)
        try:
            return probe_shape(self.index, self.config, self.dataset.reader)
        except (ImageLoadError, ValueError):
            return (*self.config.size, c) if self.config.size else (0, 0, c)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.dataset.epoch = self.epoch

    def close(self) -> None:
        """Stop the worker processes now (they also stop when the loader is freed)."""
        _stop_workers(id(self))
        drop_persistent_iterator(self.dataloader)

    def __enter__(self) -> TorchLoader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self._workers_failed:  # a worker died (see NOTE [worker death]): fresh workers
            self._workers_failed = False
            self.close()
        pool = self.dataset.pool
        if pool is not None:
            # Results of an abandoned iteration never arrive; their slots are free again (no
            # new request is sent before DataLoader has drained the old ones).
            pool.reclaim_in_flight()
        self._batch_sampler.start_batch = self._start()
        it = iter(self.dataloader)
        if self.config.num_workers > 0:
            _LIVE_ITERATORS[id(self)] = it  # see NOTE [worker shutdown]
        try:
            for wire in surface_worker_death(it, self):
                self._add_remote_stats(wire.remote)
                if wire.error is not None:
                    wire._settle()
                    raise wire.error
                if wire.skipped:
                    self._record_skips(wire.skipped)
                if len(wire.index) == 0:
                    # NOTE [all-skipped batch]: no empty batch is yielded (see LoaderBase).
                    wire._settle()
                    self._delivered()
                    continue
                batch = wire.to_dict()
                if self.device is not None:
                    batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
                self._delivered()
                yield batch
            self._finish()
        finally:
            if not self.persistent:
                _stop_workers(id(self))  # join them now, before any slot is reused
                del it
                if pool is not None:
                    pool.reclaim_in_flight()
