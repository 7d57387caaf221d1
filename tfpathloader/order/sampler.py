"""GlobalShuffleSampler: an epoch's order as a PyTorch-style sampler, distributed and resumable.

It needs no torch: it quacks like ``torch.utils.data.Sampler`` (``__iter__``, ``__len__``,
``set_epoch``), and both loaders take their ids from it, so it holds the one resume counter.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from .layout import Layout
from .orders import Order, make_order
from .spec import OrderSpec, check_int
from .state import ResumeState, read_state

__all__ = ["GlobalShuffleSampler"]

_CHUNK = 1 << 16


class GlobalShuffleSampler:
    """Record ids of one epoch for one rank: global shuffle (or buffer, or none), exactly once.

    Every rank builds the same global order from (seed, epoch) and takes its share of each
    global batch (see NOTE [tail rule] in :class:`~tfpathloader.order.layout.Layout`): across
    all ranks every record is delivered exactly once per epoch (bar the documented tail), every
    rank has the same number of steps, and for a fixed global batch size the sequence does not
    depend on the number of ranks.

    .. warning::
        Call :meth:`set_epoch` at the start of every epoch; otherwise every epoch repeats the
        same order (as with ``DistributedSampler``).

    Args:
        num_records: Records in the index (``len(index)``).
        spec: The order (:class:`~tfpathloader.OrderSpec`); or give its fields as keywords
            (``seed``, ``world_size``, ``drop_last``, ``permutation``, ``shuffle``,
            ``buffer_size``, ``batch_size``; ``batch_size`` defaults to 1 here, so ranks
            interleave record by record like ``DistributedSampler``).
        rank: This process's rank, in ``[0, world_size)``.
        fingerprint: The index content's fingerprint (``index.fingerprint``), written into
            states and checked when one is loaded. Without it the sampler still runs, and
            its states only resume samplers made without one.
    """

    def __init__(
        self,
        num_records: int,
        *,
        spec: OrderSpec | None = None,
        rank: int = 0,
        fingerprint: str | None = None,
        **order: Any,
    ):
        if spec is not None and order:
            raise ValueError(f"give spec= or the order's fields, not both (got {sorted(order)})")
        self.spec = spec if spec is not None else OrderSpec(**order)
        self.num_records = check_int("num_records", num_records)
        self.fingerprint = fingerprint or "none"
        self.layout = self._layout(0)
        self.layout.check_rank(rank)
        self.rank = int(rank)
        self.epoch = 0
        self._offset = 0  # this rank's samples of the epoch consumed since layout.start
        self._order: Order | None = None
        self._order_epoch = -1
        self._completed_epoch: int | None = None

    # -- the order's fields, for reading --------------------------------------------------

    @property
    def seed(self) -> int:
        return self.spec.seed

    @property
    def world_size(self) -> int:
        return self.spec.world_size

    @property
    def batch_size(self) -> int:
        return self.spec.batch_size

    @property
    def shuffle(self) -> str:
        return self.spec.shuffle

    # -- epoch -----------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration yields (restarts at its beginning)."""
        self.epoch = check_int("epoch", epoch)
        self._completed_epoch = None  # an explicit choice: no repeat warning
        self._restart(0)

    def _restart(self, position: int, offset: int = 0) -> None:
        if position != self.layout.start:
            self.layout = self._layout(position)
        self._offset = offset

    def _layout(self, start: int) -> Layout:
        """The epoch's steps under this sampler's spec, from global position ``start``."""
        spec = self.spec
        return Layout(self.num_records, spec.batch_size, spec.world_size, spec.drop_last, start)

    def order(self) -> Order:
        """The global order of the current epoch (built once per epoch)."""
        if self._order is None or self._order_epoch != self.epoch:
            self._order = make_order(self.spec, self.num_records, self.epoch)
            self._order_epoch = self.epoch
        return self._order

    # -- sizes -----------------------------------------------------------------------------

    def __len__(self) -> int:
        """Samples this rank yields in the current epoch (from a resumed position, if any)."""
        return self.layout.samples_per_rank()

    @property
    def num_steps(self) -> int:
        """Batches of ``batch_size`` this rank runs in the current epoch (from its start)."""
        return self.layout.steps

    # -- ids -------------------------------------------------------------------------------

    def ids(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """This rank's ids for samples ``start:stop`` of the current epoch (int64)."""
        return self.layout.ids(self.order(), self.layout.positions(self.rank, start, stop))

    def padding_mask(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Which of this rank's samples ``start:stop`` are tail padding (repeats)."""
        return self.layout.is_padding(self.layout.positions(self.rank, start, stop))

    def epoch_ids(self) -> np.ndarray:
        """All of this rank's ids for the current epoch, from its (resumed) start."""
        return self.ids(0, None)

    def __iter__(self) -> Iterator[int]:
        self.start_iteration()
        total = len(self)
        for s in range(self._offset, total, _CHUNK):
            chunk = self.ids(s, min(s + _CHUNK, total))
            for k, i in enumerate(chunk.tolist()):
                self._offset = s + k + 1
                yield i
        self.mark_epoch_done()

    def batches(self, start_batch: int | None = None) -> Iterator[np.ndarray]:
        """This rank's batches (int64 id arrays), from ``start_batch`` (default: the next one)."""
        layout = self.layout
        if start_batch is None:
            start_batch = self.steps_consumed
        first = start_batch * layout.batch_size
        block = np.zeros(0, dtype=np.int64)
        block_start = first
        chunk = 0  # the first batch alone: its cost is one batch's, wherever the epoch resumes
        for step in range(start_batch, layout.steps):
            size = layout.batch_size_at(step)
            if first + size > block_start + len(block):
                # Then ids a block at a time: per-call numpy overhead would dominate.
                block_start = first
                block = self.ids(first, first + max(size, chunk))
                chunk = _CHUNK
            yield block[first - block_start : first - block_start + size]
            first += size

    def start_iteration(self) -> None:
        """Called when an iteration begins: a finished epoch starts over (with a warning)."""
        if self._completed_epoch == self.epoch and self.done:
            if self.shuffle != "none":
                warnings.warn(
                    f"iterating epoch {self.epoch} again, in the same order; call set_epoch(e) "
                    "before each epoch to get a new order",
                    UserWarning,
                    stacklevel=3,
                )
            self._completed_epoch = None
            self._restart(0)

    # -- consumption (the one resume counter) ------------------------------------------------

    @property
    def steps_consumed(self) -> int:
        """Whole steps of the current epoch this rank consumed since its (resumed) start."""
        if self.done:  # the last step may be short: offset // batch_size would miss it
            return self.layout.steps
        return self._offset // self.layout.batch_size

    def consume_step(self) -> None:
        """Count the next batch as consumed (what a loader calls when it hands one over)."""
        self._offset = min(len(self), self._offset + self.layout.batch_size_at(self.steps_consumed))

    def mark_epoch_done(self) -> None:
        """The epoch ended here; iterating again without set_epoch repeats it (with a warning)."""
        self._completed_epoch = self.epoch
        self._offset = len(self)

    @property
    def done(self) -> bool:
        """Whether every sample of the current epoch was consumed."""
        return self._offset >= len(self)

    @property
    def steps_per_epoch(self) -> int:
        """Batches of ``batch_size`` per rank in a whole epoch (from position 0)."""
        return self._layout(0).steps

    def position(self) -> int:
        """Global position consumed by every rank (``num_records`` once the epoch is done)."""
        if self.done:
            return self.num_records
        return self.layout.position_after(self.steps_consumed)

    # -- resume ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """A JSON-able state: a position in the epoch's global order (NOTE [resume state])."""
        within = 0 if self.done else self._offset - self.steps_consumed * self.layout.batch_size
        partial = None if within == 0 else {"rank": self.rank, "samples": within}
        return ResumeState(
            self.spec, self.num_records, self.fingerprint, self.epoch, self.position(), partial
        ).to_dict()

    def load_state_dict(self, state: dict[str, Any]) -> ResumeState:
        """Resume: the next iteration yields exactly this rank's share of the rest of the epoch.

        A state saved under another world size or batch size resumes too (NOTE [elastic resume]
        in :mod:`tfpathloader.order.state`).

        Raises:
            StateError: naming the field, if the state cannot be resumed exactly.
        """
        got = read_state(state, spec=self.spec, num_records=self.num_records,
                         fingerprint=self.fingerprint, rank=self.rank, what="sampler")  # fmt: skip
        self.epoch = got.epoch
        self._completed_epoch = None
        within = got.partial["samples"] if got.partial else 0
        self._restart(got.position, within)
        return got

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.spec.to_dict().items())
        return (
            f"GlobalShuffleSampler({self.num_records}, {fields}, rank={self.rank}, "
            f"epoch={self.epoch})"
        )
