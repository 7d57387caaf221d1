"""The tf backend's tf.data graph, built once per loader: batches of ids -> batches of images."""

from __future__ import annotations

import atexit
import contextlib
import gc
import itertools
import threading
import weakref
from typing import Any

import numpy as np

__all__ = [
    "SpareIterator",
    "decode_batches",
    "hold",
    "id_batches",
    "load_batches",
    "next_element",
    "no_autograph",
    "prefetched",
    "retire",
    "sweep",
]


def no_autograph(tf: Any, fn: Any) -> Any:
    """``fn`` for tf.data, not converted by AutoGraph (see NOTE [no autograph] in tf_backend)."""
    return tf.autograph.experimental.do_not_convert(fn)


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


def decode_batches(loader: Any, batches: Any) -> Any:
    """Batches of ids -> batches of images by ``loader``'s traced functions (NOTE [tf pipeline
    cost] in tf_backend)."""
    tf = loader.tf
    cfg = loader.config
    if cfg.on_error == "raise":
        # NOTE [one reader]: reading (Python, NOTE [tf reads]) and decoding are two stages, the
        # read one call at a time for a local root: two batch calls that both read in Python
        # fought over the GIL (every os.open/os.read hands it over and waits to get it back),
        # and on the demo PNGs the tf backend used 1.6 of 2 cores. With one reader ahead of
        # the parallel decode, ``benchmarks/tf_epochs.py`` on 10,000 demo PNGs (2 cores, 3
        # alternating runs of 8 epochs, median epoch rate per run): 53k, 43k, 35k images/s
        # against 34k, 40k, 35k with parallel reads (``--parallel-reads``) and 36k, 31k, 36k
        # with read and decode in one call, as before; 224px JPEGs: 6.4-6.6k in all. A remote
        # root keeps parallel reads: there a batch's read waits on the network, not the GIL.
        reads = loader._parallel if loader._remote or loader._parallel_reads else 1
        read = batches.map(
            no_autograph(tf, lambda ids, epoch: loader._read_batch_fn(ids, epoch)),
            num_parallel_calls=reads,
            deterministic=True,
        )
        return read.map(
            no_autograph(tf, lambda items, data, cmyk: loader._decode_batch_fn(items, data, cmyk)),
            num_parallel_calls=loader._parallel,
            deterministic=True,
        )

    # Each batch decodes in its own small dataset whose bad records are dropped, so a batch
    # keeps its identity (and its number) however many records it loses.
    def one_batch(batch_ids: Any, epoch: Any, no: Any) -> Any:
        inner = tf.data.Dataset.from_tensor_slices(loader._prepare_fn(batch_ids, epoch))
        inner = inner.map(loader._load_fn).ignore_errors().batch(cfg.batch_size)
        inner = inner.map(loader._finish_fn)
        return inner.map(no_autograph(tf, lambda x: {**x, "batch": no}))

    return batches.interleave(
        no_autograph(tf, one_batch),
        cycle_length=max(2, cfg.num_workers),
        num_parallel_calls=loader._parallel,
        deterministic=True,
    )


def prefetched(tf: Any, ds: Any) -> Any:
    """``ds`` prefetched, with the options every pipeline of the loader uses."""
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_warm_start = False  # no thread before the first GetNext
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def load_batches(loader: Any, batches: Any) -> Any:
    """:func:`decode_batches`, prefetched: one epoch's dataset (``as_tf_dataset``)."""
    return prefetched(loader.tf, decode_batches(loader, batches))


# NOTE [iterator lifetime]: a loader's one iterator (NOTE [one iterator]) lives as long as the
# loader: it is freed by close(), or, when the loader is collected, at the next safe point.
# Never inside a garbage collection, which can run in the middle of anything, tracing a graph
# included: freeing a live tf.data iterator there once crashed the process (a segfault while
# another loader traced its map). An iterator released during a collection (seen by a gc
# callback) is kept in _GRAVE and freed at the next safe point: when a tf loader starts an
# iteration or is closed, and at exit. Not later than exit: an iterator freed during
# interpreter shutdown waits forever for its threads, which wait (in a numpy_function) for a
# GIL that a finalizing interpreter no longer hands out. For the same reason iterators are held
# only here, under a key (a suspended generator holds no reference), so that a script that
# ends in the middle of an epoch does not hang at exit: the atexit hook closes every feed's
# gate, then frees every iterator, while the interpreter still runs.
_LIVE: dict[int, Any] = {}
_FEEDS: weakref.WeakSet[Any] = weakref.WeakSet()  # every EpochFeed, closed at exit
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
    """Free the iterator held under ``key`` now, or at the next safe point inside a collection.

    Pure Python (no TensorFlow op runs here), so a finalizer may call it."""
    iterator = _LIVE.pop(key, None)
    if iterator is not None and _collecting > 0:
        _GRAVE.append(iterator)


# NOTE [spare iterator]: making the loader's iterator costs 0.2-0.3 s (NOTE [one pipeline] in
# _tf_epochs.py), and its first epoch's map functions are instantiated at its first element.
# Both are done ahead, in a short-lived thread started by make_loader (make_iterator releases
# the GIL), with an empty epoch armed and read to its sentinel; the first iteration takes the
# result. The spare is held in _LIVE like any iterator, so the atexit hook frees it; a failure
# to make it is left to the synchronous attempt, which raises.
class SpareIterator:
    """Makes a pipeline's iterator ahead of time (NOTE [spare iterator])."""

    def __init__(self, pipeline: Any, warm: Any = None):
        self._pipeline = pipeline
        self._warm = warm  # warm(key): run in the thread once the iterator is made
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
                if self._warm is not None:
                    self._warm(key)

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
    for feed in list(_FEEDS):
        feed.close()
    _LIVE.clear()
    sweep()


atexit.register(_at_exit)
