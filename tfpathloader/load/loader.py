"""make_loader: one typed front door to both backends, and the epoch bookkeeping they share.

Both backends take their ids from one :class:`~tfpathloader.GlobalShuffleSampler` built from one
:class:`~tfpathloader.OrderSpec`, and decode them with one function (NOTE [one decode path] in
:mod:`.decode`), so the same configuration delivers the same batches in PyTorch and in tf.data.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
from collections.abc import Callable
from typing import Any, Literal, ParamSpec, TypeVar, overload

import numpy as np

from ..errors import ImageLoadError
from ..index import PathIndex
from ..order.spec import OrderSpec, check_int
from ..storage import RemoteOptions
from ..transforms import Resize, Transform, check_pipeline
from .base import DecodeOn, JpegDct, Loader, LoaderConfig, OnError
from .batches import DecodeJob
from .decode import Recipe
from .files import DEFAULT_MAX_FILE_BYTES, FileReader, check_max_file_bytes

__all__ = ["Backend", "Loader", "make_loader"]

Backend = Literal["torch", "tf"]
Shuffle = Literal["global", "buffer", "none"]
Permutation = Literal["exact", "stateless"]
UserTransform = Callable[[np.ndarray, np.random.Generator], Any]


# -- the factory --------------------------------------------------------------------------------

P = ParamSpec("P")
R = TypeVar("R")


def _did_you_mean(fn: Callable[P, R]) -> Callable[P, R]:
    """Keyword-only ``fn`` whose unknown argument names raise a TypeError with the closest."""
    names = [p for p in inspect.signature(fn).parameters]

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if args:
            raise TypeError(
                f"{fn.__name__}() takes keyword arguments only (e.g. index=..., batch_size=...)"
            )
        for name in kwargs:
            if name not in names:
                close = difflib.get_close_matches(name, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                valid = ", ".join(names)
                raise TypeError(
                    f"{fn.__name__}() got an unknown argument {name!r}{hint}; valid: {valid}"
                )
        return fn(*args, **kwargs)

    return wrapper


def _check_choice(name: str, value: object, valid: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")


def _check_flag(name: str, value: object) -> None:
    if value is not None and not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True, False or None (automatic), got {value!r}")


# NOTE [argument types]: a bool is an int and a str is truthy in Python, so `num_workers=True`
# once ran one worker and `pin_memory="no"` pinned. Every argument is checked by type (a bool is
# not an int, a string is not a bool) and by range, naming the value.
def _check_args(cfg: LoaderConfig, backend: str) -> None:
    _check_choice("backend", backend, ("torch", "tf"))
    check_int("num_workers", cfg.num_workers)
    if (
        isinstance(cfg.channels, bool)
        or not isinstance(cfg.channels, (int, np.integer))
        or cfg.channels not in (1, 3)
    ):
        raise ValueError(f"channels must be 1, 3 or None (as stored), got {cfg.channels!r}")
    if cfg.size is not None and (
        len(cfg.size) != 2
        or any(
            isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in cfg.size
        )
    ):
        raise ValueError(f"size must be (height, width) with positive ints, got {cfg.size!r}")
    _check_choice("on_error", cfg.on_error, ("raise", "skip"))
    _check_choice("jpeg_dct", cfg.jpeg_dct, ("accurate", "fast"))
    _check_choice("decode_on", cfg.decode_on, ("workers", "device"))
    if cfg.decode_on == "device":
        if backend != "torch":
            raise ValueError("decode_on='device' is the torch backend's (backend='torch')")
        if cfg.pin_memory:
            raise ValueError(
                "pin_memory=True does nothing with decode_on='device': images are decoded on "
                "the device, no host batch is copied"
            )
    if cfg.prefetch_factor is not None:
        check_int("prefetch_factor", cfg.prefetch_factor, minimum=1)
    for name in ("pin_memory", "persistent_workers", "allow_outside_root"):
        _check_flag(name, getattr(cfg, name))
    t = cfg.timeout
    if (
        isinstance(t, bool)
        or not isinstance(t, (int, float, np.integer, np.floating))
        or not 0 <= t < float("inf")
    ):
        raise ValueError(f"timeout must be a finite number of seconds >= 0, got {t!r}")
    if cfg.device is not None and not isinstance(cfg.device, str):
        raise ValueError(f"device must be a device name such as 'cuda' or None, got {cfg.device!r}")
    check_max_file_bytes(cfg.max_file_bytes)
    if not isinstance(cfg.remote, RemoteOptions):
        raise ValueError(f"remote must be a RemoteOptions, got {type(cfg.remote).__name__}")
    # NOTE [one meaning]: an argument a backend cannot honour is an error, never ignored.
    if cfg.num_workers == 0:
        for name in ("prefetch_factor", "persistent_workers"):
            if getattr(cfg, name) is not None:
                raise ValueError(f"{name}= needs num_workers > 0 (batches decoded ahead)")


@overload
def make_loader(
    *,
    index: PathIndex,
    batch_size: int,
    backend: Backend = ...,
    shuffle: Shuffle = ...,
    seed: int = ...,
    permutation: Permutation = ...,
    buffer_size: int | None = ...,
    drop_last: bool = ...,
    rank: int = ...,
    world_size: int = ...,
    num_workers: int = ...,
    channels: Literal[1, 3] | None = ...,
    size: tuple[int, int] | None = ...,
    transform: Transform | UserTransform | None = ...,
    on_error: OnError = ...,
    jpeg_dct: JpegDct = ...,
    decode_on: DecodeOn = ...,
    prefetch_factor: int | None = ...,
    persistent_workers: bool | None = ...,
    pin_memory: bool | None = ...,
    device: str | None = ...,
    timeout: float = ...,
    max_file_bytes: int = ...,
    allow_outside_root: bool | None = ...,
    remote: RemoteOptions | None = ...,
) -> Loader: ...


@overload
def make_loader(
    *,
    index: PathIndex,
    order: OrderSpec,
    backend: Backend = ...,
    rank: int = ...,
    num_workers: int = ...,
    channels: Literal[1, 3] | None = ...,
    size: tuple[int, int] | None = ...,
    transform: Transform | UserTransform | None = ...,
    on_error: OnError = ...,
    jpeg_dct: JpegDct = ...,
    decode_on: DecodeOn = ...,
    prefetch_factor: int | None = ...,
    persistent_workers: bool | None = ...,
    pin_memory: bool | None = ...,
    device: str | None = ...,
    timeout: float = ...,
    max_file_bytes: int = ...,
    allow_outside_root: bool | None = ...,
    remote: RemoteOptions | None = ...,
) -> Loader: ...


@_did_you_mean
def make_loader(
    *,
    index: PathIndex,
    batch_size: int | None = None,
    order: OrderSpec | None = None,
    backend: Backend = "torch",
    shuffle: Shuffle | None = None,
    seed: int | None = None,
    permutation: Permutation | None = None,
    buffer_size: int | None = None,
    drop_last: bool | None = None,
    rank: int = 0,
    world_size: int | None = None,
    num_workers: int = 0,
    channels: Literal[1, 3] | None = None,
    size: tuple[int, int] | None = None,
    transform: Transform | UserTransform | None = None,
    on_error: OnError = "raise",
    jpeg_dct: JpegDct = "accurate",
    decode_on: DecodeOn = "workers",
    prefetch_factor: int | None = None,
    persistent_workers: bool | None = None,
    pin_memory: bool | None = None,
    device: str | None = None,
    timeout: float = 0.0,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    allow_outside_root: bool | None = None,
    remote: RemoteOptions | None = None,
) -> Loader:
    """A loader over ``index``: batches of ``{"image", "label", "index"}`` torch tensors.

    The order is one :class:`~tfpathloader.OrderSpec`: give ``batch_size`` and the order's
    other fields (``shuffle``, ``seed``, ``permutation``, ``buffer_size``, ``drop_last``,
    ``world_size``; their defaults and checks are the spec's), or ``order=`` alone.

    Args:
        index: The :class:`~tfpathloader.PathIndex`.
        batch_size: Per-rank batch size (required, unless ``order`` is given).
        order: The whole order as an :class:`~tfpathloader.OrderSpec` (e.g. from Hydra), instead
            of ``batch_size`` and the order's other fields.
        backend: ``"torch"`` (worker processes, shared-memory batches) or ``"tf"`` (tf.data);
            both give the same batches.
        shuffle: ``"global"`` (uniform, per epoch; the default), ``"buffer"`` (the biased
            baseline, tf.data ``shuffle`` semantics computed by numpy) or ``"none"``.
        seed: Seed of every random choice (default 0); the same config, the same batches.
        permutation: ``"exact"`` (default) or ``"stateless"`` (constant memory, 100M+ records).
        buffer_size: Shuffle buffer size: required by ``shuffle="buffer"``, refused by the
            other orders.
        drop_last: Drop the incomplete last global batch (NOTE [tail rule]; default False).
        rank, world_size: This process's share of a distributed epoch: its rank in
            ``[0, world_size)`` and the number of ranks (default 0 of 1).
        num_workers: Worker processes decoding batches (in both backends; NOTE [tf workers]).
            0 decodes in the iterating thread (tf: tf.data's).
        channels: 1 or 3; ``None`` takes the first readable record's (grey 1, else 3).
        size: ``(height, width)`` to resize every image to (needed for mixed sizes).
        transform: A :mod:`tfpathloader.transforms` pipeline (e.g.
            ``Compose([RandomResizedCrop(224), RandomHorizontalFlip()])``), planned from each
            image's header: only the box is decoded, resized straight into the batch. Or a
            callable ``f(image, rng) -> image`` given a writable CxHxW uint8 view of the whole
            decoded image and a generator seeded from (seed, epoch, record id) (NOTE [user
            transform]); it must return a CxHxW uint8 array, else a TransformOutputError.
        on_error: ``"raise"`` (an ImageLoadError naming record, path and cause) or ``"skip"``
            (skip, count, and report per epoch in ``loader.skipped``; a batch left with no
            image is not yielded but counted, see NOTE [all-skipped batch]).
        jpeg_dct: ``"accurate"`` (default; libjpeg's accurate integer IDCT, Pillow's pixels)
            or ``"fast"`` (its fast integer IDCT, TensorFlow's ``decode_jpeg`` default).
        decode_on: Torch backend only: ``"workers"`` (default: workers decode on the CPU) or
            ``"device"`` (workers only read and plan, and each batch's JPEGs are decoded on
            ``device`` by nvImageCodec, a GPU's hardware decoder where present; NOTE [device
            decode]).
        prefetch_factor: Batches decoded ahead per worker (default 4, or 2 when four per worker
            would hold over 64 MiB).
        persistent_workers: Keep the worker processes between epochs (default True).
        pin_memory: Deliver batches in pinned memory (default: when CUDA is available).
        device: Deliver batches on this device (e.g. ``"cuda"``), copied with
            ``non_blocking=True`` from pinned memory.
        timeout: Seconds a worker may take for one batch before the loader gives up
            (LoaderWorkerError; default 0: no limit). A dead worker is found within a second
            whatever this is.
        max_file_bytes: Refuse image files larger than this (checked before reading; default
            256 MiB). Only regular files are read: a FIFO, device or socket is refused.
        allow_outside_root: Follow paths and symlinks that lead outside the index root;
            ``None`` (default) takes the index's own setting.
        remote: For an index whose root is a URL: reads in flight per worker (default 256),
            timeouts and retries (see :class:`~tfpathloader.storage.RemoteOptions`).

    Raises:
        TypeError: for an unknown argument name (naming the closest) or a missing one.
        ValueError: for a bad value, naming the valid ones, or an argument the backend
            cannot honour.
    """
    if not isinstance(index, PathIndex):
        raise ValueError(f"index must be a PathIndex, got {type(index).__name__}")
    fields: dict[str, Any] = {
        "batch_size": batch_size,
        "shuffle": shuffle,
        "seed": seed,
        "permutation": permutation,
        "buffer_size": buffer_size,
        "drop_last": drop_last,
        "world_size": world_size,
    }
    given = {k: v for k, v in fields.items() if v is not None}
    if order is not None:
        if given:
            raise ValueError(f"give order= or the order's fields, not both (got {sorted(given)})")
        if not isinstance(order, OrderSpec):
            raise ValueError(f"order must be an OrderSpec, got {type(order).__name__}")
        spec = order
    elif batch_size is None:
        raise TypeError(
            "make_loader() needs batch_size= (or order=), e.g. "
            "make_loader(index=PathIndex.read('data/index.tfrecord'), batch_size=256)"
        )
    else:
        spec = OrderSpec(**given)
    if isinstance(transform, Transform):
        check_pipeline(transform)
        if size is not None:
            raise ValueError(
                "size= and a tfpathloader.transforms pipeline both set the output size; "
                "give it in the pipeline (e.g. Resize((height, width)))"
            )
    elif transform is not None and not callable(transform):
        raise ValueError(
            "transform must be a tfpathloader.transforms pipeline or a callable "
            "f(image, rng) -> image"
        )
    cfg = LoaderConfig(
        order=spec,
        rank=rank,
        channels=3 if channels is None else channels,
        size=tuple(size) if size is not None else None,  # type: ignore[arg-type]
        on_error=on_error,
        jpeg_dct=jpeg_dct,
        decode_on=decode_on,
        num_workers=num_workers,
        prefetch_factor=prefetch_factor,
        persistent_workers=persistent_workers,
        pin_memory=pin_memory,
        device=device,
        timeout=timeout,
        max_file_bytes=max_file_bytes,
        allow_outside_root=index.allow_outside_root
        if allow_outside_root is None
        else allow_outside_root,
        remote=remote if remote is not None else RemoteOptions(),
    )
    _check_args(cfg, backend)
    if len(index) == 0:
        raise ValueError("the index is empty: nothing to load")
    job = _job(index, cfg, transform, channels)
    cfg = dataclasses.replace(cfg, channels=job.channels)
    if backend == "torch":
        from .torch_backend import TorchLoader

        return TorchLoader(index, cfg, transform, job)
    from .tf_backend import TFLoader

    return TFLoader(index, cfg, transform, job)


# NOTE [first readable record]: a loader learns the channel count (as stored, unless given) and
# the shape of its batches from one image. Record 0 may be the bad one; in skip mode that must
# not stop the loader, so the first readable record among the first few hundred is used. In
# raise mode the error of record 0 is raised at once (the loader would raise it at the first
# batch).
_PROBE_RECORDS = 256


def _job(index: PathIndex, cfg: LoaderConfig, transform: Any, channels: int | None) -> DecodeJob:
    """The loader's :class:`DecodeJob`, its row shape taken from the first readable record."""
    reader = FileReader(
        root=index.root,
        allow_outside_root=bool(cfg.allow_outside_root),
        max_file_bytes=int(cfg.max_file_bytes),
    )
    pipeline = transform if isinstance(transform, Transform) else None
    if pipeline is None and cfg.size is not None:
        pipeline = Resize(cfg.size)  # size= is this pipeline, in both backends
    callback = transform if transform is not None and pipeline is not transform else None
    recipe = Recipe(channels, pipeline, callback, cfg.jpeg_dct, cfg.seed)
    skip = cfg.on_error == "skip"
    fixed = pipeline.output_size if pipeline is not None else None
    if fixed is not None and channels is not None and callback is None:  # nothing to read
        return DecodeJob(index, recipe, (*fixed, channels), reader, skip=skip, remote=cfg.remote)
    first: ImageLoadError | None = None
    for i in range(min(len(index), _PROBE_RECORDS)):
        try:
            if recipe.channels is None:  # as stored: the first readable record's
                plain = dataclasses.replace(recipe, pipeline=None, callback=None)
                stored = DecodeJob(index, plain, (), reader, skip=False, remote=cfg.remote)
                recipe = dataclasses.replace(recipe, channels=stored.shape_of(i)[2])
            probe = DecodeJob(index, recipe, (), reader, skip=False, remote=cfg.remote)
            shape = probe.shape_of(i)
        except ImageLoadError as e:
            if not skip:
                raise
            first = first or e
            continue
        job = DecodeJob(index, recipe, shape, reader, skip=skip, remote=cfg.remote)
        job.probe_stats = probe.probe_stats
        return job
    assert first is not None
    raise ValueError(
        f"none of the first {min(len(index), _PROBE_RECORDS)} records could be read (record "
        f"{first.record_id}: {first.cause}); check the index's paths with "
        "`tfpathloader index verify INDEX`"
    )
