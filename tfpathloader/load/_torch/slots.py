"""Reusable batch buffers in one shared memory mapping, inherited by forked DataLoader workers."""

from __future__ import annotations

import mmap
import threading
import weakref
from typing import ClassVar

import numpy as np

# NOTE [batch transport]: a batch leaves a worker by pickle. A torch tensor travels as a fresh
# shared-memory segment whose file descriptor is passed over a socket: about a millisecond per
# tensor, plus first-touch page faults on every page in the worker and the freeing of every page
# in the main process (7.5 ms per 38 MB batch of 224px JPEGs). A numpy array is copied through
# the pipe (about 2 ms per MB). So the loader keeps a pool of batch buffers in shared memory,
# mapped before the workers fork and reused: a worker decodes into the slot the main process
# assigned to its request and sends back only labels and ids. A slot returns to the pool when the
# last tensor viewing it is freed (a weakref on the numpy view the tensor holds), so batches a
# user keeps stay valid; when every slot is held, requests go without one and workers fall back
# to a fresh buffer: slower, never wrong.
_SHARED_MEMORY_MIN_BYTES = 512 * 1024


class _SlotPool:
    """Reusable batch buffers in one anonymous shared mapping, inherited by forked workers."""

    _live: ClassVar[weakref.WeakValueDictionary[int, _SlotPool]] = weakref.WeakValueDictionary()

    def __init__(self, slots: int, shape: tuple[int, ...]):
        self.shape = shape
        nbytes = int(np.prod(shape))
        self._mm = mmap.mmap(-1, max(1, slots * nbytes))
        self._arrays = np.frombuffer(self._mm, dtype=np.uint8, count=slots * nbytes).reshape(
            slots, *shape
        )
        self._lock = threading.RLock()
        self._free = list(range(slots))
        self._in_flight: set[int] = set()
        self.misses = 0  # requests that found every slot taken (and used a fresh buffer)
        self.key = id(self)
        _SlotPool._live[self.key] = self

    @classmethod
    def get(cls, key: int) -> _SlotPool:
        return cls._live[key]

    def acquire(self) -> int | None:
        with self._lock:
            if not self._free:
                self.misses += 1
                return None
            slot = self._free.pop()
            self._in_flight.add(slot)
            return slot

    def buffer(self, slot: int) -> np.ndarray:
        """The worker's view of ``slot`` (writable)."""
        return self._arrays[slot]

    def deliver(self, slot: int, n: int) -> np.ndarray:
        """A fresh view of the first ``n`` images of ``slot``; the slot is free once it dies."""
        view = self._arrays[slot][:n]
        with self._lock:
            self._in_flight.discard(slot)
        weakref.finalize(view, self._release, slot)
        return view

    def release(self, slot: int) -> None:
        """Return a slot whose request produced no batch (an error, or a fallback buffer)."""
        with self._lock:
            self._in_flight.discard(slot)
        self._release(slot)

    def _release(self, slot: int) -> None:
        with self._lock:
            self._free.append(slot)

    def reclaim_in_flight(self) -> None:
        """Free the slots of requests whose results were discarded (an abandoned iteration)."""
        with self._lock:
            self._free.extend(self._in_flight)
            self._in_flight.clear()


# NOTE [slot count]: a slot is taken when DataLoader sends a request and given back when the last
# view of its batch dies. DataLoader keeps workers * prefetch requests out, and sends the next one
# inside ``next()``, after a result arrives, while the caller's ``for`` variable (and the
# loader's generator) still hold the previous batch: so the pool needs two slots over the
# requests, or every few batches a request finds none (measured on 2 workers x prefetch 2:
# 62 of 376 requests without a slot with one extra, none with two). With pinned memory each
# batch leaves its slot as soon as the pin thread has copied it, so two cover that case too.
# Fewer slots is never wrong (a request without one gets a fresh buffer), only slower.
def pool_slots(workers: int, prefetch: int) -> int:
    """How many batch slots a loader's pool holds (see NOTE [slot count])."""
    return workers * prefetch + 2
