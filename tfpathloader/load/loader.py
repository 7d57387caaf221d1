"""make_loader: one front door to both backends, and the epoch bookkeeping they share.

Both backends take their ids from one :class:`~tfpathloader.GlobalShuffleSampler` built from one
:class:`~tfpathloader.OrderSpec`, so the same configuration delivers the same batches in PyTorch
and in tf.data, and the sampler's position is the one resume counter: a loader counts a batch as
consumed when it hands it to the caller (not when workers prefetch it), and its state is the
sampler's (NOTE [resume state] in :mod:`tfpathloader.order.state`) plus the epoch's skips.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._utils import optional_import
from ..index import PathIndex
from ..order.sampler import GlobalShuffleSampler
from ..order.spec import OrderSpec, Stream
from ..storage import RemoteOptions
from .checks import check_load_args, infer_channels
from .files import DEFAULT_MAX_FILE_BYTES

__all__ = ["BACKENDS", "LoaderConfig", "make_loader"]

BACKENDS = ("torch", "tf")

# The per-record transform generators' streams (every stream is named in order/spec.py).
TRANSFORM_STREAM = int(Stream.TRANSFORM)
# Stream of the seed given to torch's global generator around a user callable.
TORCH_SEED_STREAM = int(Stream.TORCH_SEED)

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray] | Any

# NOTE [user transform]: a user callable gets the decoded image as a CxHxW *view* of an HxWxC
# buffer (``image.transpose(2, 0, 1)``: strides, not a copy), writable, and a numpy generator
# seeded from (seed, epoch, record id, TRANSFORM_STREAM). Until this change it got a contiguous
# CxHxW copy, a strided transpose that cost 2 ms per 400x500 photo, as much as decoding it;
# the view keeps every callable that worked working (shape and values are the same), and one
# that crops first now copies only its crop. A callable that draws from torch's global
# generator (torchvision's v1/v2 random transforms do) is reproducible too: it runs with that
# generator seeded from (seed, epoch, record id, TORCH_SEED_STREAM) inside
# ``torch.random.fork_rng``, so the draws depend on the record, not the worker or the order of
# work, and the caller's own generator state is left as it was. The tf backend runs callables
# in tf.data threads, so there the seeding and the call hold one lock.
_TORCH_RNG_LOCK = threading.Lock()


def torch_seed(seed: int, epoch: int, record_id: int) -> int:
    """The seed of torch's global generator for one record's user transform."""
    ss = np.random.SeedSequence([int(seed), int(epoch), int(record_id), TORCH_SEED_STREAM])
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


def call_user_transform(
    transform: Transform,
    pixels: bytes | np.ndarray,
    shape: tuple[int, ...],
    seed: int,
    epoch: int,
    record_id: int,
) -> np.ndarray:
    """Run a user callable on one decoded image (see NOTE [user transform])."""
    if isinstance(pixels, bytes):
        hwc = np.frombuffer(bytearray(pixels), dtype=np.uint8).reshape(shape)  # writable
    else:
        hwc = pixels if pixels.flags.writeable else pixels.copy()
    rng = np.random.default_rng([int(seed), int(epoch), int(record_id), TRANSFORM_STREAM])
    torch = sys.modules.get("torch")
    if torch is None:
        return np.asarray(transform(hwc.transpose(2, 0, 1), rng))
    with _TORCH_RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed(seed, epoch, record_id))
        out = transform(hwc.transpose(2, 0, 1), rng)
        return out.numpy() if isinstance(out, torch.Tensor) else np.asarray(out)


class UnknownArgumentError(TypeError, ValueError):
    """An argument name make_loader does not know (a TypeError and a ValueError)."""


@dataclass(frozen=True)
class LoaderConfig:
    """A loader's settings: the order (one :class:`OrderSpec`), the rank, and how to load."""

    order: OrderSpec
    rank: int = 0
    channels: int | None = None
    size: tuple[int, int] | None = None
    on_error: str = "raise"
    jpeg_dct: str = "accurate"
    num_workers: int = 0
    prefetch_factor: int | None = None
    persistent_workers: bool | None = None
    pin_memory: bool | None = None
    device: str | None = None
    timeout: float = 0.0
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    allow_outside_root: bool = False
    remote: RemoteOptions = RemoteOptions()  # noqa: RUF009 (frozen, so one shared default is safe)

    # Read-only views of the order's fields that the backends use.
    @property
    def batch_size(self) -> int:
        return self.order.batch_size

    @property
    def seed(self) -> int:
        return self.order.seed

    @property
    def world_size(self) -> int:
        return self.order.world_size


def _check_config(cfg: LoaderConfig, n: int) -> None:
    check_load_args(cfg)  # the order's fields were checked when its OrderSpec was made
    if not isinstance(cfg.remote, RemoteOptions):
        raise ValueError(f"remote must be a RemoteOptions, got {type(cfg.remote).__name__}")
    if n == 0:
        raise ValueError("the index is empty: nothing to load")


class LoaderBase:
    """Epochs, consumed batches, skip reports and resume state, for both backends."""

    backend = "base"

    def __init__(self, index: PathIndex, cfg: LoaderConfig, transform: Transform | None):
        self.index = index
        self.config = cfg
        self.transform = transform
        self.sampler = GlobalShuffleSampler(
            len(index), spec=cfg.order, rank=cfg.rank, fingerprint=index.fingerprint
        )
        self.skipped: list[dict[str, Any]] = []  # this epoch's skipped records
        # Remote reads (root is a URL): requests, retries and failures by kind, summed over
        # every worker since the loader was made (NOTE [retry counts] in storage/fetch.py).
        self.remote_stats: dict[str, int] = {}

    def _add_remote_stats(self, delta: dict[str, int] | None) -> None:
        for k, v in (delta or {}).items():
            self.remote_stats[k] = self.remote_stats.get(k, 0) + v

    # -- epochs ----------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        """The epoch the next (or current) iteration delivers."""
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch the next iteration delivers, from its first batch.

        Call it before every epoch; otherwise every epoch repeats the same order.
        """
        self.sampler.set_epoch(epoch)
        self.skipped = []

    def __len__(self) -> int:
        """Batches per epoch on this rank (a whole epoch, under the current layout)."""
        return self.sampler.steps_per_epoch

    @property
    def batches_left(self) -> int:
        """Batches this rank still delivers in the current epoch (after a resume: fewer)."""
        return self.sampler.num_steps - self.sampler.steps_consumed

    @property
    def batches_consumed(self) -> int:
        """Batches of the current epoch delivered to the caller since it (or a resume) began."""
        return self.sampler.steps_consumed

    def _start(self) -> int:
        """Called when an iteration begins; returns the first batch to deliver."""
        self.sampler.start_iteration()
        if self.sampler.steps_consumed == 0 and self.sampler.layout.start == 0:
            self.skipped = []
        return self.sampler.steps_consumed

    def _delivered(self) -> None:
        self.sampler.consume_step()

    def _finish(self) -> None:
        self.sampler.mark_epoch_done()
        if self.skipped:
            warnings.warn(self.skip_report(), RuntimeWarning, stacklevel=3)

    # NOTE [all-skipped batch]: with on_error="skip", a batch whose every record is unreadable is
    # not yielded (an empty batch breaks a training step: batch norm, a mean over nothing), in
    # either backend. It still counts as consumed (batches_consumed, the resume state), its
    # records are listed in `skipped`, and the epoch yields fewer than len(loader) batches.
    def _record_skips(self, skipped: list[tuple[int, str, str]]) -> None:
        for rid, path, cause in skipped:
            self.skipped.append({"record_id": int(rid), "path": path, "cause": cause})

    def skip_report(self) -> str:
        """One line per skipped record of this epoch (``on_error="skip"``)."""
        if not self.skipped:
            return f"epoch {self.epoch}: nothing skipped"
        lines = [f"epoch {self.epoch}: skipped {len(self.skipped)} unreadable image(s):"]
        lines += [f"  record {s['record_id']} ({s['path']}): {s['cause']}" for s in self.skipped]
        return "\n".join(lines)

    # -- resume ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: the position in the epoch's global order that the caller consumed.

        Loaded into a fresh loader (either backend, any world size, batch size or number of
        workers), it delivers exactly the rest of the epoch, whatever workers had prefetched.
        See NOTE [resume state] and NOTE [elastic resume] in :mod:`tfpathloader.order.state`.
        """
        return {**self.sampler.state_dict(), "skipped": [dict(s) for s in self.skipped]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict` (of either backend, of any layout).

        Raises:
            StateError: naming the field, for a state that cannot be resumed exactly.
        """
        got = self.sampler.load_state_dict(state)
        self.skipped = got.skipped

    def __iter__(self) -> Iterator[dict[str, Any]]:  # pragma: no cover - backends override
        raise NotImplementedError


_MAKE_LOADER_NAMES: tuple[str, ...] = ()


def make_loader(
    *,
    backend: str = "torch",
    index: PathIndex | None = None,
    batch_size: int | None = None,
    shuffle: str | None = None,
    seed: int | None = None,
    num_workers: int = 0,
    permutation: str | None = None,
    buffer_size: int | None = None,
    drop_last: bool | None = None,
    rank: int = 0,
    world_size: int | None = None,
    order: OrderSpec | None = None,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
    on_error: str = "raise",
    jpeg_dct: str = "accurate",
    transform: Transform | None = None,
    prefetch_factor: int | None = None,
    persistent_workers: bool | None = None,
    pin_memory: bool | None = None,
    device: str | None = None,
    timeout: float = 0.0,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    allow_outside_root: bool | None = None,
    remote: RemoteOptions | None = None,
    **unknown: Any,
) -> LoaderBase:
    """A loader over ``index``: batches of ``{"image", "label", "index"}`` torch tensors.

    The order is one :class:`~tfpathloader.OrderSpec`: pass ``order=`` or its fields
    (``batch_size``, ``shuffle``, ``seed``, ``permutation``, ``buffer_size``, ``drop_last``,
    ``world_size``; their defaults and checks are the spec's), not both.

    Args:
        backend: ``"torch"`` (Dataset + Sampler + DataLoader workers) or ``"tf"`` (tf.data).
        index: The :class:`~tfpathloader.PathIndex`.
        batch_size: Per-rank batch size (required unless ``order`` is given).
        shuffle: ``"global"`` (uniform, per epoch; the default), ``"buffer"`` (biased
            baseline), ``"tf-buffer"`` (TensorFlow's own shuffle, for comparison) or ``"none"``.
        seed: Seed of every random choice (default 0); the same config, the same batches.
        num_workers: Worker processes (torch) / parallel decode calls (tf; 0 = autotune).
        permutation: ``"exact"`` (default) or ``"stateless"`` (constant memory, 100M+ records).
        buffer_size: Shuffle buffer size, for the buffer orders.
        drop_last: Drop the incomplete last global batch (NOTE [tail rule]; default False).
        rank, world_size: This process's share of a distributed epoch.
        order: The whole order as an :class:`~tfpathloader.OrderSpec` (e.g. from Hydra).
        channels: 1 or 3; ``None`` takes the first readable record's (grey 1, else 3).
        size: ``(height, width)`` to resize every image to (needed for mixed sizes).
        on_error: ``"raise"`` (an ImageLoadError naming record, path and cause) or ``"skip"``
            (skip, count, and report per epoch in ``loader.skipped``; a batch left with no
            image is not yielded but counted, see NOTE [all-skipped batch]).
        jpeg_dct: How JPEGs are decoded, the same in both backends: ``"accurate"`` (default;
            libjpeg's accurate integer IDCT, Pillow's pixels) or ``"fast"`` (its fast integer
            IDCT, what TensorFlow's ``decode_jpeg`` does by default: tf.data's pixels, about a
            grey level off Pillow's, 2-3% less decode time; needs ``simplejpeg`` in the torch
            backend).
            See NOTE [jpeg dct] in ``tfpathloader/load/_crop.py``.
        transform: A :mod:`tfpathloader.transforms` pipeline (e.g.
            ``Compose([RandomResizedCrop(224), RandomHorizontalFlip()])``): planned from the
            image header, only the box decoded, resized straight into the batch, natively in
            both backends. Or a callable ``f(image, rng) -> array`` that gets a writable
            CxHxW uint8 view (not a copy) of the decoded image and a numpy generator seeded
            from (seed, epoch, record id), with torch's global generator seeded the same way
            (NOTE [user transform]): reproducible and independent of the worker count. Its
            output must be a CxHxW uint8 array, else a TransformOutputError (NOTE
            [transform dtype]).
        prefetch_factor, persistent_workers, timeout: As for ``DataLoader`` (torch backend);
            workers persist across epochs, and keep 4 batches queued each (2 when that would
            hold over 512 MiB), by default.
        pin_memory: Pin batches for fast CUDA copies; default: on when CUDA is available.
        device: Deliver batches on this device (e.g. ``"cuda"``), copied with
            ``non_blocking=True`` from pinned memory.
        max_file_bytes: Refuse image files larger than this (checked before reading; default
            256 MiB). Only regular files are read: a FIFO, device or socket is refused.
        allow_outside_root: Follow paths and symlinks that lead outside the index root;
            ``None`` (default) takes the index's own setting (``PathIndex.read(...,
            allow_outside_root=)``), which is off unless it was allowed there.
        remote: For an index whose root is a URL: reads in flight per worker (default 256),
            timeouts and retries (see :class:`~tfpathloader.storage.RemoteOptions`).

    Raises:
        ValueError: for an unknown argument name or a bad value, naming the valid ones.
    """
    if unknown:
        name = next(iter(unknown))
        close = difflib.get_close_matches(name, _MAKE_LOADER_NAMES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownArgumentError(
            f"make_loader() got an unknown argument {name!r}{hint}; valid: "
            f"{', '.join(_MAKE_LOADER_NAMES)}"
        )
    # NOTE [required arguments]: index and batch_size are required but default to None, so
    # that a misspelt name (batchsize=256) is reported as such above, instead of Python's
    # "missing 1 required keyword-only argument" hiding the typo.
    required = (("index", index), ("batch_size", batch_size if order is None else order))
    missing = [n for n, v in required if v is None]
    if missing:
        raise UnknownArgumentError(
            f"make_loader() needs {' and '.join(f'{n}=' for n in missing)} (e.g. "
            "make_loader(index=PathIndex.read('data/index.tfrecord'), batch_size=256))"
        )
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if not isinstance(index, PathIndex):
        raise ValueError(f"index must be a PathIndex, got {type(index).__name__}")
    from ..transforms import Transform as Pipeline
    from ..transforms import check_pipeline

    if isinstance(transform, Pipeline):
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
    else:
        spec = OrderSpec(**given)
    if allow_outside_root is None:
        allow_outside_root = index.allow_outside_root
    cfg = LoaderConfig(
        order=spec,
        rank=rank,
        channels=channels,
        size=tuple(size) if size is not None else None,  # type: ignore[arg-type]
        on_error=on_error,
        jpeg_dct=jpeg_dct,
        num_workers=num_workers,
        prefetch_factor=prefetch_factor,
        persistent_workers=persistent_workers,
        pin_memory=pin_memory,
        device=device,
        timeout=timeout,
        max_file_bytes=max_file_bytes,
        allow_outside_root=allow_outside_root,
        remote=remote if remote is not None else RemoteOptions(),
    )
    _check_config(cfg, len(index))
    if cfg.channels is None:
        cfg = dataclasses.replace(cfg, channels=infer_channels(index, cfg))
    if backend == "torch":
        optional_import("torch", "torch", 'backend="torch"')
        from .torch_backend import TorchLoader

        return TorchLoader(index, cfg, transform)
    from .tf_backend import TFLoader

    return TFLoader(index, cfg, transform)


_MAKE_LOADER_NAMES = tuple(p for p in inspect.signature(make_loader).parameters if p != "unknown")
