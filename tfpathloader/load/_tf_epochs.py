"""The tf backend's epochs: one pipeline, one iterator, a gate between epochs."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from ._tf_pipeline import (
    _FEEDS,
    SpareIterator,
    id_batches,
    next_element,
    no_autograph,
    prefetched,
    retire,
)

__all__ = ["EpochFeed", "Epochs"]


# NOTE [one pipeline]: a tf.data pipeline built per epoch costs a new trace of its map functions
# every epoch (0.4-0.5 s each, and 4 s before the first batch), and a new iterator per epoch
# costs 0.2-0.3 s of a core: TensorFlow clones the function library for each iterator and
# Grappler optimizes the map functions again (0.04 s with Grappler's meta optimizer off, a
# process-wide switch a library must not flip). Made ahead in a thread while the previous
# epoch ran, that work also stalled the running epoch: on 10,000 demo PNGs (2 cores) some
# epochs ran on one core at half the rate of the others, at random (the "rounds on one core":
# 16-30k images/s, median 16-21k; with one iterator 30-42k, median 35-37k; python
# benchmarks/tf_epochs.py INDEX). So a loader has one pipeline and one iterator for all its
# epochs (NOTE [one iterator]).
class EpochFeed:
    """What the loader's one iterator delivers next, and the gate it waits at between epochs.

    The iterator's source holds at :meth:`wait` (in a ``tf.numpy_function``, the GIL released)
    until the loader arms epoch number ``g``; it then reads the variables, which were assigned
    before arming. ``gen`` is the number of the epoch the loader wants now: batches of any
    other are cut at the source (see NOTE [one iterator]).
    """

    def __init__(self, tf: Any, *, batch_size: int, numbered: bool):
        self.tf = tf
        self.ids = tf.Variable(
            tf.zeros([0], tf.int64), shape=tf.TensorShape([None]), trainable=False
        )
        self.epoch = tf.Variable(tf.constant(0, tf.int64), trainable=False)
        self.start = tf.Variable(tf.constant(0, tf.int64), trainable=False)
        self.gen = tf.Variable(tf.constant(0, tf.int64), trainable=False)
        self.batch_size = batch_size
        self.numbered = numbered
        # Reentrant: close() may run in a garbage collection on a thread that holds it.
        self._cond = threading.Condition(threading.RLock())
        self._armed = 0
        self._closed = False
        _FEEDS.add(self)

    def arm(self, ids: np.ndarray, epoch: int, start: int) -> int:
        """Let the iterator deliver ``ids`` (from batch number ``start`` on); their number."""
        with self._cond:
            g = self._armed + 1
        self.ids.assign(ids.astype(np.int64))
        self.epoch.assign(epoch)
        self.start.assign(start)
        self.gen.assign(g)
        with self._cond:
            self._armed = g
            self._cond.notify_all()
        return g

    def cut(self) -> None:
        """Stop the epoch in progress at the source (its sentinel follows what is in flight)."""
        self.gen.assign(0)

    def close(self) -> None:
        """Release the source for good: the iterator ends (pure Python: safe in a collection)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wait(self, g: np.int64) -> np.int64:
        """(On a tf.data thread) block until epoch ``g`` is armed; -1 once closed."""
        with self._cond:
            while self._armed < g and not self._closed:
                self._cond.wait()
            return np.int64(-1 if self._closed else g)

    def source(self, decode: Any) -> Any:
        """Every epoch's decoded batches, each epoch ended by a sentinel (gen ``-g``)."""
        tf = self.tf
        top = np.iinfo(np.int64).max
        gens = tf.data.Dataset.range(1, top).map(
            lambda g: tf.numpy_function(self.wait, [g], tf.int64, stateful=True)
        )

        def epoch_of(g: Any) -> Any:
            batches = id_batches(
                tf,
                self.ids.read_value(),
                self.epoch.read_value(),
                self.start.read_value(),
                batch_size=self.batch_size,
                numbered=self.numbered,
            ).take_while(lambda *_: tf.equal(self.gen.read_value(), g))
            inner = decode(batches).map(no_autograph(tf, lambda x: {**x, "gen": g}))
            end = {k: tf.zeros(_empty(s.shape), s.dtype) for k, s in inner.element_spec.items()}
            end["gen"] = -g
            return inner.concatenate(tf.data.Dataset.from_tensors(end))

        return gens.take_while(lambda g: g > 0).flat_map(no_autograph(tf, epoch_of))


def _empty(shape: Any) -> list[int]:
    """A shape with no elements that fits ``shape`` (unknown sizes 0; unknown rank: ``[0]``)."""
    if shape.rank is None:
        return [0]
    return [0 if d is None else d for d in shape.as_list()] if shape.rank else []


# NOTE [one iterator]: the loader's iterator is made once (ahead, in a thread, at make_loader)
# and serves every epoch. Its source is ``range(1, inf)`` -> a gate -> ``flat_map`` into that
# epoch's batches, decoded inside the flat_map, then a sentinel: the map functions are
# instantiated once, for the first epoch, and later epochs reuse them (the iterator's function
# cache), so a new epoch costs its first batch's decode and nothing else. Between epochs the
# prefetch thread waits at the gate, so nothing is read before the loader knows the next
# epoch (set_epoch, a loaded state). An iteration left early is not freed: the next one cuts
# its epoch at the source (``gen`` no longer matches), discards what was in flight up to its
# sentinel, errors included, then arms its own epoch. Reading stops at the sentinel, so each
# iteration delivers exactly its epoch. A loader's close() (or its garbage collection, then
# the next safe point) closes the gate and frees the iterator; at exit every gate is closed
# before any iterator is freed, so no tf.data thread waits at a gate that never opens.


class Epochs:
    """A loader's one pipeline and its one iterator, epoch after epoch (NOTE [one iterator]).

    Args:
        tf: The tensorflow module.
        decode: Batches of ids (``id_batches``' elements) -> decoded batches (a dataset).
        batch_size, numbered: As for :func:`id_batches`.
    """

    def __init__(self, tf: Any, decode: Callable[[Any], Any], *, batch_size: int, numbered: bool):
        self.tf = tf
        self._decode = decode
        self._batch_size, self._numbered = batch_size, numbered
        self._fresh()

    def _fresh(self) -> None:
        self.feed = EpochFeed(self.tf, batch_size=self._batch_size, numbered=self._numbered)
        self._dataset: Any = None
        self._spare: SpareIterator | None = None
        self.key: int | None = None
        self._open = 0  # the number of an armed epoch not yet read to its sentinel

    def dataset(self) -> Any:
        """The one pipeline (built at first use)."""
        if self._dataset is None:
            self._dataset = prefetched(self.tf, self.feed.source(self._decode))
        return self._dataset

    def prepare(self) -> None:
        """Make the iterator ahead, in a thread (NOTE [spare iterator])."""
        if self.key is None and self._spare is None:
            self._spare = SpareIterator(self.dataset(), warm=self._warm)
            self._spare.prepare()

    def ready(self) -> None:
        """Wait until an iterator being made ahead is made."""
        if self._spare is not None:
            self._spare.ready()

    def _warm(self, key: int) -> None:
        # An empty epoch, read to its sentinel: the map functions are instantiated ahead.
        self._open = self.feed.arm(np.zeros(0, dtype=np.int64), 0, 0)
        self._drain(key)

    def start(self, ids: np.ndarray, epoch: int, start: int) -> int:
        """Arm the next epoch (after discarding the rest of one left early); its number."""
        if self.key is None:
            self.prepare()
            assert self._spare is not None
            self.key, self._spare = self._spare.take(), None
            # Collected without close(): open the gate, free the iterator at a safe point.
            weakref.finalize(self, _release, self.feed, self.key)
        self._drain(self.key)
        self._open = self.feed.arm(ids, epoch, start)
        return self._open

    def next(self, g: int) -> dict[str, Any] | None:
        """Epoch ``g``'s next batch; None at its end. Raises TensorFlow's error for a batch
        that failed, and RuntimeError if a newer :meth:`start` or :meth:`close` ended ``g``."""
        if self._open != g or self.key is None:
            raise RuntimeError(
                "this iteration of the tf loader was ended by a newer iter(loader) or by "
                "close(): a loader delivers one iteration at a time"
            )
        batch = next_element(self.key)
        if batch is None:
            raise RuntimeError("the tf loader's iterator ended during an iteration")
        if int(batch.pop("gen")) == -g:  # the epoch's sentinel
            self._open = 0
            return None
        return batch

    def _drain(self, key: int) -> None:
        """Cut the armed epoch at its source and discard what is in flight, to its sentinel."""
        g, self._open = self._open, 0
        if not g:
            return
        self.feed.cut()
        while True:
            try:
                batch = next_element(key)
            except self.tf.errors.OpError:
                continue  # a bad record of the abandoned epoch: not this iteration's
            if batch is None or int(batch["gen"]) == -g:
                return

    def close(self) -> None:
        """Free the iterator (its threads end with it); :meth:`start` makes a new one."""
        if self.key is None and self._spare is None:
            return
        self.feed.cut()
        self.feed.close()  # first: a thread waiting at the gate would block the free
        if self._spare is not None:
            self._spare.discard()
        if self.key is not None:
            retire(self.key)
        self._fresh()


def _release(feed: EpochFeed, key: int) -> None:
    """Open ``feed``'s gate for good and free the iterator (at a safe point inside a GC)."""
    feed.close()
    retire(key)
