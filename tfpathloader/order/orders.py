"""Orders: which record ids an epoch visits, in which order, on which rank. Pure numpy.

Everything here is a function of integers (number of records, seed, epoch, rank, world size,
batch size) returning int64 arrays; no torch, no TensorFlow, no files. Both loaders use it, so the
same config gives the same sample sequence in PyTorch and in tf.data.

Orders (``DESIGN.md`` §4), chosen by name from :data:`ORDERS`:

- ``"global"``: a uniformly random permutation of all records per epoch, from (seed, epoch).
  ``permutation="exact"`` materializes it with numpy (:func:`exact_permutation`);
  ``permutation="stateless"`` computes position -> id on the fly with a keyed bijection
  (:class:`StatelessPermutation`) in constant memory, for 100M+ records.
- ``"buffer"``: the bounded-buffer shuffle of the stored order (:func:`buffer_order`), with
  tf.data ``shuffle`` semantics: the biased baseline the article starts from.
- ``"none"``: stored order.

NOTE [seeding]: every random choice comes from ``np.random.default_rng([seed, epoch, stream])``.
Seeding from both numbers (not ``seed + epoch``) keeps (seed 0, epoch 1) and (seed 1, epoch 0)
apart; the stream number keeps different uses of one (seed, epoch) independent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = [
    "ORDERS",
    "PERMUTATIONS",
    "ArrayOrder",
    "Layout",
    "Order",
    "StatelessPermutation",
    "buffer_order",
    "epoch_rng",
    "exact_permutation",
    "make_order",
]

# Independent random streams under one (seed, epoch).
_STREAM_EXACT = 0
_STREAM_STATELESS = 1
_STREAM_BUFFER = 2


def epoch_rng(seed: int, epoch: int, stream: int = 0) -> np.random.Generator:
    """The generator for one use (``stream``) of one epoch; see NOTE [seeding]."""
    _check_nonneg("seed", seed)
    _check_nonneg("epoch", epoch)
    return np.random.default_rng([int(seed), int(epoch), int(stream)])


def _check_nonneg(name: str, value: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")


# --------------------------------------------------------------------------- orders


class Order(Protocol):
    """Position (in the epoch's global order) -> record id."""

    def __len__(self) -> int: ...

    def take(self, positions: np.ndarray) -> np.ndarray:
        """Ids at ``positions`` (int64 array of values in ``[0, len)``)."""
        ...


class ArrayOrder:
    """An order held as an array (``exact``, ``buffer``, ``none``)."""

    def __init__(self, ids: np.ndarray):
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, positions: np.ndarray) -> np.ndarray:
        return self.ids[positions].astype(np.int64, copy=False)


class _Arange:
    """The stored order, without holding it."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def take(self, positions: np.ndarray) -> np.ndarray:
        return np.asarray(positions, dtype=np.int64)


def exact_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """A uniformly random permutation of ``0..n-1`` (numpy Fisher-Yates).

    Held as int32 when ``n < 2**31`` (half the memory; the values are the same as int64).
    """
    dtype = np.int32 if n < 2**31 else np.int64
    ids = np.arange(n, dtype=dtype)
    epoch_rng(seed, epoch, _STREAM_EXACT).shuffle(ids)
    return ids


_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer: a strong 64-bit mixing function (wraps mod 2**64)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


class StatelessPermutation:
    """A keyed pseudo-random bijection on ``[0, n)``: position -> id in O(1) time and memory.

    A Feistel network on the smallest number of bits ``b`` covering ``n`` (so its domain
    ``2**b`` is below ``2 n``; with ``b`` odd the halves differ by one bit and trade places each
    round), with SplitMix64 round functions keyed from (seed, epoch). Positions that land
    outside ``[0, n)`` are walked through the network again (cycle walking) until they land
    inside, which keeps it a bijection on ``[0, n)``. Expected walks per position: under 2.

    Args:
        n: Number of records.
        seed, epoch: Key material (see NOTE [seeding] in this module).
        rounds: Feistel rounds.
    """

    def __init__(self, n: int, seed: int, epoch: int, *, rounds: int = 8):
        _check_nonneg("n", n)
        self.n = int(n)
        bits = max(2, int(max(self.n - 1, 1)).bit_length())
        self.bits = bits
        rng = epoch_rng(seed, epoch, _STREAM_STATELESS)
        self.keys = rng.integers(0, 2**63, size=rounds, dtype=np.uint64) * np.uint64(2) + np.uint64(
            1
        )

    def __len__(self) -> int:
        return self.n

    def _encrypt(self, x: np.ndarray) -> np.ndarray:
        hi_bits = (self.bits + 1) // 2
        lo_bits = self.bits - hi_bits
        for k in self.keys:
            lo_mask = np.uint64((1 << lo_bits) - 1)
            hi = (x >> np.uint64(lo_bits)) ^ (
                _mix64((x & lo_mask) ^ k) & np.uint64((1 << hi_bits) - 1)
            )
            x = ((x & lo_mask) << np.uint64(hi_bits)) | hi
            hi_bits, lo_bits = lo_bits, hi_bits
        return x

    def take(self, positions: np.ndarray) -> np.ndarray:
        pos = np.asarray(positions, dtype=np.int64)
        if pos.size and (pos.min() < 0 or pos.max() >= self.n):
            raise IndexError(f"positions must lie in [0, {self.n})")
        x = self._encrypt(pos.astype(np.uint64).ravel())
        n = np.uint64(self.n)
        out = x >= n
        while out.any():
            idx = np.flatnonzero(out)
            x[idx] = self._encrypt(x[idx])
            out[idx] = x[idx] >= n
        return x.astype(np.int64).reshape(pos.shape)

    def __getitem__(self, position: int) -> int:
        return int(self.take(np.array([position]))[0])


def buffer_order(n: int, buffer_size: int, seed: int, epoch: int) -> np.ndarray:
    """The stored order passed through a bounded shuffle buffer (tf.data ``shuffle`` semantics).

    The buffer is filled with the first ``buffer_size`` records before the first draw; every
    draw takes a uniformly random element of the buffer and replaces it with the next record;
    once the input is exhausted the buffer drains, still drawn uniformly. With a buffer smaller
    than a label-sorted dataset, late records cannot appear early: the bias this project exists
    to remove.
    """
    _check_nonneg("n", n)
    if not isinstance(buffer_size, (int, np.integer)) or buffer_size < 1:
        raise ValueError(f"buffer_size must be an integer >= 1, got {buffer_size!r}")
    rng = epoch_rng(seed, epoch, _STREAM_BUFFER)
    size = min(int(buffer_size), n)
    buf = list(range(size))
    out = np.empty(n, dtype=np.int64)
    u = rng.random(n)
    nxt = size
    for k in range(n):
        j = int(u[k] * len(buf))
        out[k] = buf[j]
        if nxt < n:
            buf[j] = nxt
            nxt += 1
        else:
            buf[j] = buf[-1]
            buf.pop()
    return out


ORDERS: tuple[str, ...] = ("global", "buffer", "none")
PERMUTATIONS: dict[str, Callable[[int, int, int], Order]] = {
    "exact": lambda n, seed, epoch: ArrayOrder(exact_permutation(n, seed, epoch)),
    "stateless": StatelessPermutation,
}


def check_order_args(shuffle: str, permutation: str, buffer_size: int | None) -> None:
    """Raise ``ValueError`` naming the valid choices for a bad order configuration."""
    if shuffle not in ORDERS:
        raise ValueError(f"unknown shuffle {shuffle!r}; valid: {', '.join(ORDERS)}")
    if permutation not in PERMUTATIONS:
        raise ValueError(f"unknown permutation {permutation!r}; valid: {', '.join(PERMUTATIONS)}")
    if shuffle == "buffer" and (
        buffer_size is None or not isinstance(buffer_size, (int, np.integer)) or buffer_size < 1
    ):
        raise ValueError(f"shuffle='buffer' needs buffer_size >= 1, got {buffer_size!r}")


def make_order(
    shuffle: str,
    n: int,
    *,
    seed: int,
    epoch: int,
    permutation: str = "exact",
    buffer_size: int | None = None,
) -> Order:
    """The order of one epoch, by name (``"global"``, ``"buffer"``, ``"none"``)."""
    check_order_args(shuffle, permutation, buffer_size)
    _check_nonneg("n", n)
    _check_nonneg("seed", seed)
    _check_nonneg("epoch", epoch)
    if shuffle == "global":
        return PERMUTATIONS[permutation](n, seed, epoch)
    if shuffle == "buffer":
        assert buffer_size is not None
        return ArrayOrder(buffer_order(n, buffer_size, seed, epoch))
    return _Arange(n)


# --------------------------------------------------------------------------- distribution


@dataclass(frozen=True)
class Layout:
    """How one epoch's global order is split into steps and ranks.

    NOTE [tail rule]: each step consumes one *global batch* of ``batch_size * world_size``
    consecutive positions of the global order; rank ``r`` takes the ``r``-th slice of it. So
    the sequence of global batches depends only on the global batch size, never on how many
    ranks share it, and every rank runs the same number of steps. When ``N`` is not a multiple
    of the global batch:

    - ``drop_last=True`` drops the last ``N % global_batch`` positions (fewer than one global
      batch; they are different records every epoch);
    - ``drop_last=False`` keeps a shorter last step, split evenly across ranks, and completes
      it by repeating the fewest records needed for that: ``(-N) % world_size`` positions at
      the start of the order, as ``DistributedSampler`` pads. With one rank nothing repeats.

    Repeated (padding) positions are ``>= N``; :meth:`ids` maps them to position ``p - N``.
    """

    num_records: int
    batch_size: int
    world_size: int
    drop_last: bool

    def __post_init__(self) -> None:
        _check_nonneg("num_records", self.num_records)
        if not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if not isinstance(self.world_size, (int, np.integer)) or self.world_size < 1:
            raise ValueError(f"world_size must be an integer >= 1, got {self.world_size!r}")

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    @property
    def total(self) -> int:
        """Positions delivered per epoch across all ranks (padding included)."""
        n, g, w = self.num_records, self.global_batch, self.world_size
        if self.drop_last:
            return n - n % g
        return n + (-n) % w if n else 0

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
        """Steps (batches per rank) per epoch."""
        return -(-self.total // self.global_batch)

    def _last_size(self) -> int:
        rem = self.total - (self.steps - 1) * self.global_batch
        return rem // self.world_size

    def batch_size_at(self, step: int) -> int:
        """Per-rank batch size at ``step`` (only the last step can be smaller)."""
        return self._last_size() if step == self.steps - 1 else self.batch_size

    def samples_per_rank(self) -> int:
        if self.steps == 0:
            return 0
        return (self.steps - 1) * self.batch_size + self._last_size()

    def check_rank(self, rank: int) -> None:
        if not isinstance(rank, (int, np.integer)) or not 0 <= rank < self.world_size:
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
        pos = step * g + rank * b + within
        last = self.steps - 1
        in_last = step == last
        if in_last.any():
            ls = self._last_size()
            pos[in_last] = last * g + rank * ls + within[in_last]
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
