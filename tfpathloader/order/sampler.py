"""GlobalShuffleSampler: an epoch's order as a PyTorch-style sampler, distributed and resumable.

It needs no torch: it quacks like ``torch.utils.data.Sampler`` (``__iter__``, ``__len__``,
``set_epoch``) and the tf backend uses it too.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from .orders import Layout, Order, check_order_args, make_order

__all__ = ["GlobalShuffleSampler"]

_STATE_VERSION = 1
_CHUNK = 1 << 16


class GlobalShuffleSampler:
    """Record ids of one epoch for one rank: global shuffle (or buffer, or none), exactly once.

    Every rank builds the same global order from (seed, epoch) and takes its share of each
    global batch (see NOTE [tail rule] in :class:`tfpathloader.order.Layout`): across all
    ranks every record is delivered exactly once per epoch (bar the documented tail), every
    rank has the same number of steps, and for a fixed global batch size the sequence does not
    depend on the number of ranks.

    .. warning::
        Call :meth:`set_epoch` at the start of every epoch; otherwise every epoch repeats the
        same order (as with ``DistributedSampler``).

    Args:
        num_records: Records in the index (``len(index)``).
        seed: Seed of every random choice (with the epoch).
        rank: This process's rank, in ``[0, world_size)``.
        world_size: Number of ranks sharing the epoch.
        drop_last: Drop the incomplete last global batch instead of completing it.
        permutation: ``"exact"`` (numpy, materialized) or ``"stateless"`` (constant memory).
        shuffle: ``"global"``, ``"buffer"`` or ``"none"``.
        buffer_size: Buffer size for ``shuffle="buffer"``.
        batch_size: Per-rank batch size; sets the global batch (``batch_size * world_size``)
            whose slices the ranks take. With the default 1, ranks interleave record by record,
            like ``DistributedSampler``.
    """

    def __init__(
        self,
        num_records: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        permutation: str = "exact",
        shuffle: str = "global",
        buffer_size: int | None = None,
        batch_size: int = 1,
    ):
        check_order_args(shuffle, permutation, buffer_size)
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        self.layout = Layout(int(num_records), int(batch_size), int(world_size), bool(drop_last))
        self.layout.check_rank(rank)
        self.num_records = int(num_records)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.drop_last = bool(drop_last)
        self.permutation = permutation
        self.shuffle = shuffle
        self.buffer_size = None if buffer_size is None else int(buffer_size)
        self.batch_size = int(batch_size)
        self.epoch = 0
        self._offset = 0  # samples of this epoch already yielded (or restored)
        self._order: Order | None = None
        self._order_epoch = -1
        self._completed_epoch: int | None = None

    # -- epoch -----------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration yields (restarts at its beginning)."""
        if not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"epoch must be an integer >= 0, got {epoch!r}")
        self._completed_epoch = None  # an explicit choice: no repeat warning
        self.epoch = int(epoch)
        self._offset = 0

    def order(self) -> Order:
        """The global order of the current epoch (built once per epoch)."""
        if self._order is None or self._order_epoch != self.epoch:
            self._order = make_order(
                self.shuffle,
                self.num_records,
                seed=self.seed,
                epoch=self.epoch,
                permutation=self.permutation,
                buffer_size=self.buffer_size,
            )
            self._order_epoch = self.epoch
        return self._order

    # -- sizes -----------------------------------------------------------------------------

    def __len__(self) -> int:
        """Samples this rank yields per epoch."""
        return self.layout.samples_per_rank()

    @property
    def num_steps(self) -> int:
        """Batches per epoch for every rank (with ``batch_size`` as given)."""
        return self.layout.steps

    # -- ids -------------------------------------------------------------------------------

    def ids(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """This rank's ids for samples ``start:stop`` of the current epoch (int64)."""
        return self.layout.ids(self.order(), self.layout.positions(self.rank, start, stop))

    def padding_mask(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Which of this rank's samples ``start:stop`` are tail padding (repeats)."""
        return self.layout.is_padding(self.layout.positions(self.rank, start, stop))

    def epoch_ids(self) -> np.ndarray:
        """All of this rank's ids for the current epoch, from the start."""
        return self.ids(0, None)

    def __iter__(self) -> Iterator[int]:
        self._warn_if_repeating()
        start = self._offset
        total = len(self)
        for s in range(start, total, _CHUNK):
            chunk = self.ids(s, min(s + _CHUNK, total))
            for k, i in enumerate(chunk.tolist()):
                self._offset = s + k + 1
                yield i
        self._offset = 0
        self._completed_epoch = self.epoch

    def batches(self, start_batch: int = 0) -> Iterator[np.ndarray]:
        """This rank's batches (int64 id arrays) of the current epoch, from ``start_batch``."""
        layout = self.layout
        first = start_batch * layout.batch_size
        block = np.zeros(0, dtype=np.int64)
        block_start = first
        for step in range(start_batch, layout.steps):
            size = layout.batch_size_at(step)
            if first + size > block_start + len(block):
                # Compute ids a block at a time: per-call numpy overhead would dominate.
                block_start = first
                block = self.ids(first, first + max(size, _CHUNK))
            yield block[first - block_start : first - block_start + size]
            first += size

    def _warn_if_repeating(self) -> None:
        if self._offset == 0 and self._completed_epoch == self.epoch and self.shuffle != "none":
            warnings.warn(
                f"iterating epoch {self.epoch} again, in the same order; call set_epoch(e) "
                "before each epoch to get a new order",
                UserWarning,
                stacklevel=3,
            )

    # -- resume ----------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """Everything that determines the order (checked when a state is loaded)."""
        return {
            "num_records": self.num_records,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
            "drop_last": self.drop_last,
            "shuffle": self.shuffle,
            "permutation": self.permutation,
            "buffer_size": self.buffer_size,
        }

    def state_dict(self) -> dict[str, Any]:
        """A JSON-able state: the epoch and how many of its samples were yielded."""
        return {
            "version": _STATE_VERSION,
            "epoch": self.epoch,
            "offset": self._offset,
            "config": self.config(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next iteration yields exactly the rest of the saved epoch.

        Raises:
            ValueError: if the state was saved with a different order configuration.
        """
        check_state(state, self.config(), "sampler")
        offset = int(state["offset"])
        if not 0 <= offset <= len(self):
            raise ValueError(f"sampler state offset {offset} is outside [0, {len(self)}]")
        self.epoch = int(state["epoch"])
        self._offset = offset
        self._completed_epoch = None

    def __repr__(self) -> str:
        cfg = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"GlobalShuffleSampler({cfg}, epoch={self.epoch})"


def check_state(state: dict[str, Any], config: dict[str, Any], what: str) -> None:
    """Refuse a state saved under another configuration, naming what differs."""
    if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
        raise ValueError(f"not a tfpathloader {what} state (version {_STATE_VERSION}): {state!r}")
    saved = state.get("config", {})
    diff = {k: (saved.get(k), v) for k, v in config.items() if saved.get(k) != v}
    if diff:
        detail = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"the {what} state was saved with a different configuration ({detail})")
