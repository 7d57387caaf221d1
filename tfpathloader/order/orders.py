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

Random streams and the validation of every field: :mod:`tfpathloader.order.spec`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from . import spec
from .spec import OrderSpec, Stream, check_int, epoch_rng

__all__ = [
    "ArrayOrder",
    "Order",
    "StatelessPermutation",
    "buffer_order",
    "exact_permutation",
    "make_order",
]


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
    epoch_rng(seed, epoch, Stream.EXACT).shuffle(ids)
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
        self.n = check_int("n", n)
        bits = max(2, int(max(self.n - 1, 1)).bit_length())
        self.bits = bits
        rng = epoch_rng(seed, epoch, Stream.STATELESS)
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
    check_int("n", n)
    check_int("buffer_size", buffer_size, minimum=1)
    rng = epoch_rng(seed, epoch, Stream.BUFFER)
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


PERMUTATIONS: dict[str, Callable[[int, int, int], Order]] = {
    "exact": lambda n, seed, epoch: ArrayOrder(exact_permutation(n, seed, epoch)),
    "stateless": StatelessPermutation,
}
OrderFunction = Callable[[OrderSpec, int, int], Order]
"""(spec, number of records, epoch) -> that epoch's global order."""


def _buffer(spec: OrderSpec, n: int, epoch: int) -> Order:
    assert spec.buffer_size is not None  # OrderSpec checked it
    return ArrayOrder(buffer_order(n, spec.buffer_size, spec.seed, epoch))


_ORDERS: dict[str, OrderFunction] = {
    "global": lambda spec, n, epoch: PERMUTATIONS[spec.permutation](n, spec.seed, epoch),
    "buffer": _buffer,
    "none": lambda spec, n, epoch: _Arange(n),
}
# The names OrderSpec validates (spec.py imports nothing of this) are the ones implemented here.
assert tuple(PERMUTATIONS) == spec.PERMUTATIONS and tuple(_ORDERS) == spec.ORDERS


def make_order(spec: OrderSpec, n: int, epoch: int) -> Order:
    """The global order of one epoch of ``n`` records under ``spec``."""
    check_int("n", n)
    check_int("epoch", epoch)
    return _ORDERS[spec.shuffle](spec, n, epoch)
