"""One tf.data pipeline and iterator per loader: epochs' batch ids fed in by a Python generator.

NOTE [one pipeline per loader]: creating a tf.data iterator instantiates and optimizes every
function of the pipeline: 0.25-1.2 s on 2 cores for the tf backend's batch map, even for a
dataset built once (a new pipeline per epoch cost the same again). So the tf backend makes one
dataset and one iterator for its whole life. Its source is ``from_generator`` over a generator
that never ends: it waits for a *plan* (an epoch's ids from a start batch, a generation
number), yields the plan's batches of ids, then waits for the next. The loader hands a plan
over at the start of each iteration and reads exactly the plan's number of batches back.
Every element carries its plan's generation: when an iteration was left early, the elements
prefetched for it come out first at the next one and are dropped (at most the prefetch depth
plus the parallel calls, decoded for nothing), and the generator abandons a stale plan at its
next batch. Between plans the generator waits in ``queue.get`` (a lock: no Python runs while
it waits, so an idle loader costs nothing); :meth:`EpochFeed.close` (also run at exit, and
when the loader is collected) hands it a stop, so no tf.data thread is left waiting.
"""

from __future__ import annotations

import atexit
import queue
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["EpochFeed"]


class EpochFeed:
    """Plans of batch ids for a generator that a tf.data pipeline reads for its whole life."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self.generation = 0
        self.closed = False
        self._plans: queue.Queue[tuple[int, int, np.ndarray, int] | None] = queue.Queue()
        self._lock = threading.Lock()
        atexit.register(_close_at_exit, weakref.ref(self))

    def submit(self, epoch: int, ids: np.ndarray, start_batch: int) -> int:
        """Hand over this rank's ``ids`` of ``epoch`` from batch ``start_batch``; its generation.

        Plans submitted before it become stale: their elements still in the pipeline are to be
        dropped by the reader.
        """
        with self._lock:
            self.generation += 1
            g = self.generation
        self._plans.put((g, int(epoch), np.ascontiguousarray(ids, dtype=np.int64), start_batch))
        return g

    def close(self) -> None:
        """End the generator (the pipeline then ends)."""
        if not self.closed:
            self.closed = True
            self._plans.put(None)

    def batches(self) -> Iterator[tuple[np.int64, np.int64, np.ndarray, np.int64]]:
        """The generator: (generation, batch number, ids, epoch) of every plan, in order."""
        b = self.batch_size
        while (plan := self._plans.get()) is not None:
            g, epoch, ids, start = plan
            for k in range(0, len(ids), b):
                if g != self.generation or self.closed:
                    break  # a newer plan replaced this one
                yield np.int64(g), np.int64(start + k // b), ids[k : k + b], np.int64(epoch)


def _close_at_exit(ref: weakref.ReferenceType[EpochFeed]) -> None:
    feed = ref()
    if feed is not None:
        feed.close()


def feed_dataset(tf: Any, feed: EpochFeed) -> Any:
    """``from_generator`` over :meth:`EpochFeed.batches`: (generation, batch no, ids, epoch)."""
    scalar = tf.TensorSpec([], tf.int64)
    return tf.data.Dataset.from_generator(
        feed.batches,
        output_signature=(scalar, scalar, tf.TensorSpec([None], tf.int64), scalar),
    )
