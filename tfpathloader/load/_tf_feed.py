"""One tf.data pipeline and iterator per loader: each epoch's batch ids fed in through a queue.

NOTE [one pipeline per loader]: creating a tf.data iterator instantiates and optimizes every
function of the pipeline: 0.25-1.2 s on 2 cores for the tf backend's batch map, even for a
dataset built once (a new pipeline per epoch cost the same again). So the tf backend makes one
dataset and one iterator for its whole life. Its source is a ``tf.queue.FIFOQueue`` of
*plans* (an epoch's ids from a start batch, with a generation number): a sequential map
dequeues one plan (waiting inside TensorFlow between epochs, no Python thread involved) and a
``flat_map`` cuts it into batches of ids, which the loader's batch map decodes. The loader
enqueues a plan at the start of each iteration and reads exactly its number of batches back.
Every element carries its plan's generation: when an iteration was left early, the elements
already decoded for it come out first at the next one and are dropped, and ``take_while``
against a generation variable stops cutting a stale plan at its next batch, so at most the
prefetch depth plus the parallel calls are decoded for nothing. Closing the queue ends the
pipeline (a dequeue from a closed queue raises OutOfRange, which ends a sequential map).

An earlier version fed plans from a Python generator (``from_generator``): its per-iterator
finalizer runs Python when TensorFlow frees the iterator, which, when that happened inside a
garbage collection, broke a concurrent ``ast.parse`` on CPython 3.11.7 ("AST constructor
recursion depth mismatch", seen at the end of pytest sessions). No Python runs here.
"""

from __future__ import annotations

import atexit
import weakref
from typing import Any

import numpy as np

__all__ = ["EpochFeed"]


class EpochFeed:
    """A queue of plans of batch ids that one tf.data pipeline reads for its whole life."""

    def __init__(self, tf: Any, batch_size: int):
        self.tf = tf
        self.batch_size = batch_size
        self.generation = 0
        self.closed = False
        i64 = tf.int64
        self._queue = tf.queue.FIFOQueue(capacity=1 << 20, dtypes=[i64, i64, i64, i64])
        self._current = tf.Variable(np.int64(0), trainable=False, dtype=i64)
        atexit.register(_close_at_exit, weakref.ref(self))

    def submit(self, epoch: int, ids: np.ndarray, start_batch: int) -> int:
        """Hand over this rank's ``ids`` of ``epoch`` from batch ``start_batch``; its generation.

        Plans submitted before it become stale: their batches still in the pipeline are to be
        dropped by the reader.
        """
        self.generation += 1
        g = np.int64(self.generation)
        self._current.assign(g)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        self._queue.enqueue([g, np.int64(start_batch), ids, np.int64(epoch)])
        return self.generation

    def close(self) -> None:
        """End the pipeline (its source ends once the queue is closed)."""
        if not self.closed:
            self.closed = True
            self._queue.close(cancel_pending_enqueues=True)

    def dataset(self) -> Any:
        """(generation, batch number, ids, epoch) of every plan's batches, in order."""
        tf, b, current = self.tf, self.batch_size, self._current
        queue = self._queue

        def cut(g: Any, start: Any, ids: Any, epoch: Any) -> Any:
            g, start, epoch = (tf.ensure_shape(x, []) for x in (g, start, epoch))
            ids = tf.ensure_shape(ids, [None])
            n = tf.size(ids, out_type=tf.int64)
            batches = tf.data.Dataset.range((n + b - 1) // b).map(
                lambda k: (g, start + k, ids[k * b : tf.minimum((k + 1) * b, n)], epoch)
            )
            return batches.take_while(lambda g2, *_: tf.equal(g2, current.read_value()))

        plans = tf.data.Dataset.from_tensors(np.int64(0)).repeat().map(lambda _: queue.dequeue())
        return plans.flat_map(cut)


def _close_at_exit(ref: weakref.ReferenceType[EpochFeed]) -> None:
    feed = ref()
    if feed is not None:
        feed.close()


# NOTE [pipeline lifetime]: a loader is freed by the garbage collector (its traced functions
# refer back to it), which can run in the middle of anything, tracing a graph included, and
# freeing a live tf.data iterator or queue there crashed the process (a segfault while
# another loader traced its map). So a loader holds only a key; its pipeline lives in
# _LIVE, a finalizer run by the collector only moves it to _GRAVE (no TensorFlow object dies
# inside the collection), and the graveyard is emptied at a safe point: when a loader
# builds or closes its pipeline, in eager mode.
_LIVE: dict[int, tuple[EpochFeed, Any]] = {}
_GRAVE: list[tuple[EpochFeed, Any]] = []


def hold(key: int, feed: EpochFeed, iterator: Any) -> None:
    """Keep a loader's pipeline alive under ``key``."""
    _LIVE[key] = (feed, iterator)


def live(key: int) -> tuple[EpochFeed, Any] | None:
    """The pipeline held under ``key``, if any."""
    return _LIVE.get(key)


def bury(key: int) -> None:
    """Retire ``key``'s pipeline without freeing anything (safe inside a garbage collection)."""
    entry = _LIVE.pop(key, None)
    if entry is not None:
        _GRAVE.append(entry)


def sweep() -> None:
    """Close and free retired pipelines (call only from eager code, never while tracing)."""
    while _GRAVE:
        feed, _ = _GRAVE.pop()
        feed.close()
