"""The tf backend's tf.data graph, built once per loader: batches of ids -> batches of images."""

from __future__ import annotations

import atexit
import contextlib
import gc
import itertools
import threading
from typing import Any

import numpy as np

__all__ = [
    "EpochFeed",
    "SpareIterator",
    "hold",
    "id_batches",
    "load_batches",
    "next_element",
    "no_autograph",
    "retire",
    "sweep",
]


def no_autograph(tf: Any, fn: Any) -> Any:
    """``fn`` for tf.data, not converted by AutoGraph (see NOTE [no autograph] in tf_backend)."""
    return tf.autograph.experimental.do_not_convert(fn)


# NOTE [one pipeline]: a tf.data pipeline built per epoch costs a new trace of its map functions
# every epoch (0.4-0.5 s each, and 4 s before the first batch). So a loader builds one pipeline
# whose source reads the epoch's ids, epoch and first batch number from tf.Variables inside a
# flat_map: the read happens when an iterator pulls its first element. The loader assigns the
# variables, makes the iterator and pulls from it with no other Python in between (and no
# yield), so each iterator holds exactly its epoch's ids; elements carry their epoch, so a
# later assign does not reach an iterator that has started. No Python thread or queue feeds it
# (both were tried: from_generator's finalizer broke ast.parse under GC on 3.11.7, and a
# tf.queue needed a feeder whose GC-time free crashed), and each iterator ends with its epoch.
# A new iterator still costs 0.2-0.3 s: TensorFlow instantiates the map functions again for
# each iterator and Grappler optimizes them (0.04 s with Grappler's meta optimizer off, a
# process-wide switch a library must not flip).
class EpochFeed:
    """The variables one pipeline reads at each iterator's start, and that pipeline's source."""

    def __init__(self, tf: Any, *, batch_size: int, numbered: bool):
        self.tf = tf
        self.ids = tf.Variable(
            tf.zeros([0], tf.int64), shape=tf.TensorShape([None]), trainable=False
        )
        self.epoch = tf.Variable(tf.constant(0, tf.int64), trainable=False)
        self.start = tf.Variable(tf.constant(0, tf.int64), trainable=False)
        self.batch_size = batch_size
        self.numbered = numbered

    def set(self, ids: np.ndarray, epoch: int, start: int) -> None:
        """What the next iterator delivers: ``ids`` (from batch number ``start`` on)."""
        self.ids.assign(ids.astype(np.int64))
        self.epoch.assign(epoch)
        self.start.assign(start)

    def source(self) -> Any:
        """Batches of the ids held when an iterator starts (see :func:`id_batches`)."""
        tf = self.tf

        def read(_: Any) -> Any:
            return id_batches(
                tf,
                self.ids.read_value(),
                self.epoch.read_value(),
                self.start.read_value(),
                batch_size=self.batch_size,
                numbered=self.numbered,
            )

        return tf.data.Dataset.range(1).flat_map(no_autograph(tf, read))


def id_batches(
    tf: Any, ids: Any, epoch: Any, start: Any, *, batch_size: int, numbered: bool
) -> Any:
    """(ids of a batch, epoch[, batch number from ``start``]) elements."""
    parts = [
        tf.data.Dataset.from_tensor_slices(ids).batch(batch_size),
        tf.data.Dataset.from_tensors(epoch).repeat(),
    ]
    if numbered:
        parts.append(tf.data.Dataset.range(start, np.iinfo(np.int64).max))
    return tf.data.Dataset.zip(tuple(parts))


def load_batches(loader: Any, batches: Any) -> Any:
    """Batches of ids -> batches of images by ``loader``'s traced functions (NOTE [tf pipeline
    cost] in tf_backend)."""
    tf = loader.tf
    cfg = loader.config
    if cfg.on_error == "raise":
        ds = batches.map(
            no_autograph(tf, lambda ids, epoch: loader._load_batch_fn(ids, epoch)),
            num_parallel_calls=loader._parallel,
            deterministic=True,
        )
    else:
        # Each batch decodes in its own small dataset whose bad records are dropped, so a
        # batch keeps its identity (and its number) however many records it loses.
        def one_batch(batch_ids: Any, epoch: Any, no: Any) -> Any:
            inner = tf.data.Dataset.from_tensor_slices(loader._prepare_fn(batch_ids, epoch))
            inner = inner.map(loader._load_fn).ignore_errors().batch(cfg.batch_size)
            inner = inner.map(loader._finish_fn)
            return inner.map(no_autograph(tf, lambda x: {**x, "batch": no}))

        ds = batches.interleave(
            no_autograph(tf, one_batch),
            cycle_length=max(2, cfg.num_workers),
            num_parallel_calls=loader._parallel,
            deterministic=True,
        )
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_warm_start = False  # NOTE [spare iterator]: no thread before GetNext
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


# NOTE [iterator lifetime]: a loader's iterator is often left unfinished (a loop that breaks,
# max_steps). Left alive, it keeps decoding until its prefetch buffer is full, on the cores the
# next epoch needs; so it is freed as soon as its iteration ends, when the generator is closed.
# Except inside a garbage collection, which can run in the middle of anything, tracing a graph
# included: freeing a live tf.data iterator there once crashed the process (a segfault while
# another loader traced its map). An iterator left during a collection (seen by a gc callback)
# is kept in _GRAVE and freed at the next safe point: when a tf loader starts an iteration or
# is closed, and at exit. Not later than exit: an iterator freed during interpreter shutdown
# waits forever for its threads, which wait (in a numpy_function) for a GIL that a finalizing
# interpreter no longer hands out. For the same reason an iteration in progress holds its
# iterator only here, under a key (its suspended generator holds no reference), so that a
# script that ends in the middle of an epoch does not hang at exit: every iterator is freed
# by an atexit hook, while the interpreter still runs.
_LIVE: dict[int, Any] = {}
_GRAVE: list[Any] = []
_keys = itertools.count()
_collecting = 0


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    global _collecting
    _collecting += 1 if phase == "start" else -1


gc.callbacks.append(_on_gc)


def hold(iterator: Any) -> int:
    """Keep ``iterator`` for an iteration in progress; returns its key."""
    key = next(_keys)
    _LIVE[key] = iterator
    return key


def next_element(key: int) -> Any:
    """The next element of the iterator held under ``key``; None at its end (or after exit)."""
    iterator = _LIVE.get(key)
    if iterator is None:
        return None
    try:
        return next(iterator)
    except StopIteration:
        return None


def retire(key: int) -> None:
    """Free the iterator held under ``key`` now, or at the next safe point inside a collection."""
    iterator = _LIVE.pop(key, None)
    if iterator is not None and _collecting > 0:
        _GRAVE.append(iterator)


# NOTE [spare iterator]: making an iterator costs 0.2-0.3 s (see NOTE [one pipeline]), paid
# before each epoch's first batch. An iterator reads the feed only when it pulls its first
# element (no warm start: no thread starts before that), so the next epoch's iterator can be
# made early: a short-lived thread makes it while the current epoch runs (make_iterator
# releases the GIL), and the next iteration takes it. The spare is held in _LIVE like any
# iterator, so the atexit hook frees it; a failure to make it is left to the synchronous
# attempt, which raises.
class SpareIterator:
    """Makes a pipeline's next iterator ahead of time (NOTE [spare iterator])."""

    def __init__(self, pipeline: Any):
        self._pipeline = pipeline
        self._key: int | None = None
        self._thread: threading.Thread | None = None

    def prepare(self) -> None:
        """Start making the next iterator, if none is made or being made."""
        if self._thread is not None:
            return
        key = next(_keys)

        def make() -> None:
            with contextlib.suppress(Exception):  # take() makes it again, and raises
                _LIVE[key] = iter(self._pipeline)

        self._key = key
        self._thread = threading.Thread(target=make, name="tfpathloader-iterator", daemon=True)
        self._thread.start()

    def ready(self) -> None:
        """Wait until the spare being made is made (its short-lived thread has ended)."""
        if self._thread is not None:
            self._thread.join()

    def take(self) -> int:
        """The key of a fresh iterator (:func:`hold`): the spare, or one made now."""
        thread, key = self._thread, self._key
        self._thread = self._key = None
        if thread is not None and key is not None:
            thread.join()
            if key in _LIVE:
                return key
        return hold(iter(self._pipeline))

    def discard(self) -> None:
        """Free the spare (from eager code)."""
        thread, key = self._thread, self._key
        self._thread = self._key = None
        if thread is not None and key is not None:
            thread.join()
            _LIVE.pop(key, None)


def sweep() -> None:
    """Free the iterators of iterations left early (call only from eager code, never in a GC)."""
    while _GRAVE:
        _GRAVE.pop()


def _at_exit() -> None:
    _LIVE.clear()
    sweep()


atexit.register(_at_exit)
