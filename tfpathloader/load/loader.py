"""make_loader: one front door to both backends, and the state they share.

Both backends take their ids from the same :class:`~tfpathloader.GlobalShuffleSampler`, so the
same configuration delivers the same batches in PyTorch and in tf.data. This module holds what
does not depend on a framework: argument checking, epoch bookkeeping, and the JSON-able resume
state, which counts batches the *user consumed* (not what workers prefetched).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..index import PathIndex
from ..order.orders import check_order_args
from ..order.sampler import GlobalShuffleSampler, check_state
from .decode import load_image

__all__ = ["BACKENDS", "LoaderConfig", "make_loader"]

BACKENDS = ("torch", "tf")
ON_ERROR = ("raise", "skip")
_STATE_VERSION = 1

# Stream number of the per-record transform generator (orders use 0-2; see order.py).
TRANSFORM_STREAM = 3
# Stream of the seed given to torch's global generator around a user callable.
TORCH_SEED_STREAM = 4

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
    """Everything that decides which batches a loader delivers (and how fast)."""

    batch_size: int
    shuffle: str = "global"
    seed: int = 0
    permutation: str = "exact"
    buffer_size: int | None = None
    drop_last: bool = False
    rank: int = 0
    world_size: int = 1
    channels: int | None = None
    size: tuple[int, int] | None = None
    on_error: str = "raise"
    num_workers: int = 0
    prefetch_factor: int | None = None
    persistent_workers: bool | None = None
    pin_memory: bool | None = None
    device: str | None = None
    timeout: float = 0.0

    def order_config(self) -> dict[str, Any]:
        """The part that decides the id sequence (checked on resume)."""
        keys = (
            "batch_size",
            "shuffle",
            "seed",
            "permutation",
            "buffer_size",
            "drop_last",
            "rank",
            "world_size",
        )
        d = asdict(self)
        return {k: d[k] for k in keys}


def _check_config(cfg: LoaderConfig, n: int) -> None:
    check_order_args(cfg.shuffle, cfg.permutation, cfg.buffer_size)
    for name in ("batch_size", "world_size"):
        v = getattr(cfg, name)
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if not isinstance(cfg.num_workers, (int, np.integer)) or cfg.num_workers < 0:
        raise ValueError(f"num_workers must be an integer >= 0, got {cfg.num_workers!r}")
    if cfg.channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1, 3 or None (as stored), got {cfg.channels!r}")
    if cfg.size is not None and (
        len(cfg.size) != 2 or any(not isinstance(s, (int, np.integer)) or s < 1 for s in cfg.size)
    ):
        raise ValueError(f"size must be (height, width) with positive ints, got {cfg.size!r}")
    if cfg.on_error not in ON_ERROR:
        raise ValueError(f"unknown on_error {cfg.on_error!r}; valid: {', '.join(ON_ERROR)}")
    if cfg.prefetch_factor is not None and cfg.prefetch_factor < 1:
        raise ValueError(f"prefetch_factor must be >= 1, got {cfg.prefetch_factor!r}")
    if n == 0:
        raise ValueError("the index is empty: nothing to load")


def infer_channels(index: PathIndex) -> int:
    """Channels of record 0 as stored: 1 for grey images, 3 for everything else."""
    return int(load_image(index.path(0), record_id=0).shape[2])


class LoaderBase:
    """Epochs, consumed-batch counting, skip reports and resume state, for both backends."""

    backend = "base"

    def __init__(self, index: PathIndex, cfg: LoaderConfig, transform: Transform | None):
        self.index = index
        self.config = cfg
        self.transform = transform
        self.sampler = GlobalShuffleSampler(
            len(index),
            seed=cfg.seed,
            rank=cfg.rank,
            world_size=cfg.world_size,
            drop_last=cfg.drop_last,
            permutation=cfg.permutation,
            shuffle=cfg.shuffle,
            buffer_size=cfg.buffer_size,
            batch_size=cfg.batch_size,
        )
        self.epoch = 0
        self._consumed = 0  # batches of this epoch handed to the user
        self._finished_epoch: int | None = None
        self.skipped: list[dict[str, Any]] = []  # this epoch's skipped records

    # -- epochs ----------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch the next iteration delivers, from its first batch.

        Call it before every epoch; otherwise every epoch repeats the same order.
        """
        self.sampler.set_epoch(epoch)
        if epoch != self.epoch or self._consumed:
            self.skipped = []
        self.epoch = int(epoch)
        self._consumed = 0
        self._finished_epoch = None

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return self.sampler.num_steps

    @property
    def batches_consumed(self) -> int:
        """Batches of the current epoch already delivered to the caller."""
        return self._consumed

    def _start(self) -> int:
        """Called when an iteration begins; returns the first batch to deliver."""
        if (
            self._finished_epoch == self.epoch
            and self._consumed == 0
            and self.config.shuffle != "none"
        ):
            warnings.warn(
                f"iterating epoch {self.epoch} again, in the same order; call "
                "loader.set_epoch(e) before each epoch to get a new order",
                UserWarning,
                stacklevel=3,
            )
        if self._consumed == 0:
            self.skipped = []
        self.sampler.set_epoch(self.epoch)
        return self._consumed

    def _delivered(self) -> None:
        self._consumed += 1

    def _finish(self) -> None:
        self._finished_epoch = self.epoch
        self._consumed = 0
        if self.skipped:
            warnings.warn(self.skip_report(), RuntimeWarning, stacklevel=3)

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
        """JSON-able state: the epoch and how many of its batches the caller consumed.

        Loaded into a fresh loader, it delivers exactly the rest of the epoch, whatever the
        workers had prefetched.
        """
        return {
            "version": _STATE_VERSION,
            "backend": self.backend,
            "epoch": self.epoch,
            "batches": self._consumed,
            "config": self.config.order_config() | {"num_records": len(self.index)},
            "skipped": list(self.skipped),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict` (of either backend: the orders are the same)."""
        check_state(state, self.config.order_config() | {"num_records": len(self.index)}, "loader")
        batches = int(state["batches"])
        if not 0 <= batches <= len(self):
            raise ValueError(
                f"loader state has {batches} batches consumed, the epoch has {len(self)}"
            )
        self.set_epoch(int(state["epoch"]))
        self._consumed = batches
        self.skipped = list(state.get("skipped", []))

    def __iter__(self) -> Iterator[dict[str, Any]]:  # pragma: no cover - backends override
        raise NotImplementedError


_MAKE_LOADER_NAMES: tuple[str, ...] = ()


def make_loader(
    *,
    backend: str = "torch",
    index: PathIndex,
    batch_size: int,
    shuffle: str = "global",
    seed: int = 0,
    num_workers: int = 0,
    permutation: str = "exact",
    buffer_size: int | None = None,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
    on_error: str = "raise",
    transform: Transform | None = None,
    prefetch_factor: int | None = None,
    persistent_workers: bool | None = None,
    pin_memory: bool | None = None,
    device: str | None = None,
    timeout: float = 0.0,
    **unknown: Any,
) -> LoaderBase:
    """A loader over ``index``: batches of ``{"image", "label", "index"}`` torch tensors.

    Args:
        backend: ``"torch"`` (Dataset + Sampler + DataLoader workers) or ``"tf"`` (tf.data).
        index: The :class:`~tfpathloader.PathIndex`.
        batch_size: Per-rank batch size.
        shuffle: ``"global"`` (uniform, per epoch), ``"buffer"`` (biased baseline) or ``"none"``.
        seed: Seed of every random choice; the same config gives the same batches.
        num_workers: Worker processes (torch) / parallel decode calls (tf; 0 = autotune).
        permutation: ``"exact"`` or ``"stateless"`` (constant memory, for 100M+ records).
        buffer_size: Shuffle buffer size, for ``shuffle="buffer"``.
        drop_last: Drop the incomplete last global batch (see NOTE [tail rule]).
        rank, world_size: This process's share of a distributed epoch.
        channels: 1 or 3; ``None`` takes record 0's channel count (grey 1, else 3).
        size: ``(height, width)`` to resize every image to (needed for mixed sizes).
        on_error: ``"raise"`` (an ImageLoadError naming record, path and cause) or ``"skip"``
            (skip, count, and report per epoch in ``loader.skipped``).
        transform: A :mod:`tfpathloader.transforms` pipeline (e.g.
            ``Compose([RandomResizedCrop(224), RandomHorizontalFlip()])``): planned from the
            image header, only the box decoded, resized straight into the batch, natively in
            both backends. Or a callable ``f(image, rng) -> array`` that gets a writable
            CxHxW uint8 view (not a copy) of the decoded image and a numpy generator seeded
            from (seed, epoch, record id), with torch's global generator seeded the same way
            (NOTE [user transform]): reproducible and independent of the worker count.
        prefetch_factor, persistent_workers, timeout: As for ``DataLoader`` (torch backend);
            workers persist across epochs, and keep 4 batches queued each (2 when that would
            hold over 512 MiB), by default.
        pin_memory: Pin batches for fast CUDA copies; default: on when CUDA is available.
        device: Deliver batches on this device (e.g. ``"cuda"``), copied with
            ``non_blocking=True`` from pinned memory.

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
    cfg = LoaderConfig(
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        permutation=permutation,
        buffer_size=buffer_size,
        drop_last=drop_last,
        rank=rank,
        world_size=world_size,
        channels=channels,
        size=tuple(size) if size is not None else None,  # type: ignore[arg-type]
        on_error=on_error,
        num_workers=num_workers,
        prefetch_factor=prefetch_factor,
        persistent_workers=persistent_workers,
        pin_memory=pin_memory,
        device=device,
        timeout=timeout,
    )
    _check_config(cfg, len(index))
    if cfg.channels is None:
        cfg = dataclasses.replace(cfg, channels=infer_channels(index))
    if backend == "torch":
        from .torch_backend import TorchLoader

        return TorchLoader(index, cfg, transform)
    from .tf_backend import TFLoader

    return TFLoader(index, cfg, transform)


_MAKE_LOADER_NAMES = tuple(p for p in inspect.signature(make_loader).parameters if p != "unknown")
