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
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..index import PathIndex
from ..order.orders import check_order_args
from ..order.sampler import GlobalShuffleSampler, check_state
from .checks import check_load_args, infer_channels
from .files import DEFAULT_MAX_FILE_BYTES

__all__ = ["BACKENDS", "LoaderConfig", "make_loader"]

BACKENDS = ("torch", "tf")
_STATE_VERSION = 1

# Stream number of the per-record transform generator (orders use 0-2; see order.py).
TRANSFORM_STREAM = 3

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


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
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    allow_outside_root: bool = False

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
    check_load_args(cfg)
    if n == 0:
        raise ValueError("the index is empty: nothing to load")


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
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    allow_outside_root: bool | None = None,
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
        channels: 1 or 3; ``None`` takes the first readable record's (grey 1, else 3).
        size: ``(height, width)`` to resize every image to (needed for mixed sizes).
        on_error: ``"raise"`` (an ImageLoadError naming record, path and cause) or ``"skip"``
            (skip, count, and report per epoch in ``loader.skipped``; a batch left with no
            image is not yielded but counted, see NOTE [all-skipped batch]).
        transform: ``f(image CxHxW uint8, rng) -> CxHxW uint8 array``, ``rng`` seeded from
            (seed, epoch, record id): augmentation that is reproducible and independent of
            worker count. Any other output is a TransformOutputError (NOTE [transform dtype]).
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
    if transform is not None and not callable(transform):
        raise ValueError("transform must be a callable f(image, rng) -> image")
    if allow_outside_root is None:
        allow_outside_root = index.allow_outside_root
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
        max_file_bytes=max_file_bytes,
        allow_outside_root=allow_outside_root,
    )
    _check_config(cfg, len(index))
    if cfg.channels is None:
        cfg = dataclasses.replace(cfg, channels=infer_channels(index, cfg))
    if backend == "torch":
        from .torch_backend import TorchLoader

        return TorchLoader(index, cfg, transform)
    from .tf_backend import TFLoader

    return TFLoader(index, cfg, transform)


_MAKE_LOADER_NAMES = tuple(p for p in inspect.signature(make_loader).parameters if p != "unknown")
