"""Layout: how one epoch's global order is cut into steps and shared among ranks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .orders import Order
from .spec import check_bool, check_int

__all__ = ["Layout"]


@dataclass(frozen=True)
class Layout:
    """The steps and per-rank slices of one epoch, from global position ``start`` on.

    NOTE [tail rule]: each step consumes one *global batch* of ``batch_size * world_size``
    consecutive positions of the global order; rank ``r`` takes the ``r``-th slice of it. So
    the sequence of global batches depends only on the global batch size, never on how many
    ranks share it, and every rank runs the same number of steps. When the positions left
    (``num_records - start``) are not a multiple of the global batch:

    - ``drop_last=True`` drops the last ``left % global_batch`` positions (fewer than one global
      batch; they are different records every epoch);
    - ``drop_last=False`` keeps a shorter last step, split evenly across ranks, and completes
      it by repeating the fewest records needed for that: ``(-left) % world_size`` positions,
      as ``DistributedSampler`` pads. With one rank nothing repeats.

    Repeated (padding) positions are ``>= num_records``; :meth:`ids` maps position ``p`` to
    ``p - num_records``, the first records of the epoch's order.

    ``start`` is where a resumed epoch picks up (NOTE [elastic resume] in
    :mod:`tfpathloader.order.state`): the layout cuts only the positions from there on, so a
    state saved under one layout resumes under another.
    """

    num_records: int
    batch_size: int
    world_size: int
    drop_last: bool
    start: int = 0

    def __post_init__(self) -> None:
        check_int("num_records", self.num_records)
        check_int("batch_size", self.batch_size, minimum=1)
        check_int("world_size", self.world_size, minimum=1)
        check_bool("drop_last", self.drop_last)
        check_int("start", self.start, maximum=self.num_records)

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    @property
    def left(self) -> int:
        """Positions of the epoch's order from ``start`` on (before the tail rule)."""
        return self.num_records - self.start

    @property
    def total(self) -> int:
        """Global position where the epoch ends (padding included)."""
        left, g, w = self.left, self.global_batch, self.world_size
        if self.drop_last:
            return self.start + left - left % g
        return self.start + left + (-left) % w

    @property
    def padding(self) -> int:
        """Positions that repeat a record to complete the last step (0 with ``drop_last``)."""
        return max(0, self.total - self.num_records)

    @property
    def dropped(self) -> int:
        """Records left out of the epoch by ``drop_last``."""
        return max(0, self.num_records - self.total)

    @property
    def steps(self) -> int:
        """Steps (batches per rank) from ``start`` to the end of the epoch."""
        return -(-(self.total - self.start) // self.global_batch)

    def _last_size(self) -> int:
        rem = self.total - self.start - (self.steps - 1) * self.global_batch
        return rem // self.world_size

    def batch_size_at(self, step: int) -> int:
        """Per-rank batch size at ``step`` (only the last step can be smaller)."""
        return self._last_size() if step == self.steps - 1 else self.batch_size

    def samples_per_rank(self) -> int:
        """Samples each rank yields from ``start`` to the end of the epoch."""
        if self.steps == 0:
            return 0
        return (self.steps - 1) * self.batch_size + self._last_size()

    def position_after(self, steps_done: int) -> int:
        """Global position once every rank consumed ``steps_done`` steps.

        The end of the epoch is ``num_records`` whatever the tail rule did (records that
        ``drop_last`` dropped count as consumed), so a finished epoch resumes as finished.
        """
        check_int("steps_done", steps_done, maximum=self.steps)
        if steps_done == self.steps:
            return self.num_records
        return self.start + steps_done * self.global_batch

    def check_rank(self, rank: int) -> None:
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)):
            raise ValueError(f"rank must be an integer, got {rank!r}")
        if not 0 <= rank < self.world_size:
            raise ValueError(
                f"Invalid rank {rank!r}, rank should be in the interval [0, {self.world_size - 1}]"
            )

    def positions(self, rank: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Global positions of rank ``rank``'s samples ``start:stop`` (its own numbering)."""
        self.check_rank(rank)
        per_rank = self.samples_per_rank()
        stop = per_rank if stop is None else min(stop, per_rank)
        start = max(0, start)
        if start >= stop:
            return np.zeros(0, dtype=np.int64)
        k = np.arange(start, stop, dtype=np.int64)
        b, g = self.batch_size, self.global_batch
        step = k // b
        within = k - step * b
        pos = self.start + step * g + rank * b + within
        last = self.steps - 1
        in_last = step == last
        if in_last.any():
            ls = self._last_size()
            pos[in_last] = self.start + last * g + rank * ls + within[in_last]
        return pos

    def ids(self, order: Order, positions: np.ndarray) -> np.ndarray:
        """Record ids at global ``positions`` (padding positions wrap to the start)."""
        n = self.num_records
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        return order.take(positions % n)

    def is_padding(self, positions: np.ndarray) -> np.ndarray:
        """Which of ``positions`` repeat a record to complete the last step."""
        return positions >= self.num_records
