"""The tf.data backend: the same ids and the same decode function as the PyTorch loader.

The pipeline, built once per loader: a source that asks the loader, at the start of each
iteration, which epoch and which batches it delivers -> a ``map`` whose ``tf.numpy_function``
hands over a whole batch read and decoded by :class:`~.batches.DecodeJob` (NOTE [one decode
path]) in the worker processes (NOTE [tf workers]) -> ``prefetch`` -> a ``map`` on the
consumer's side that counts the batch as delivered. Batches reach
PyTorch by DLPack without a copy (iterating the loader); :meth:`TFLoader.as_tf_dataset` gives
the pipeline as a plain ``tf.data.Dataset`` for TensorFlow users, each of whose iterations is
the next epoch.
"""

from __future__ import annotations

import itertools
import json
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np

from .._tf import import_tensorflow
from ..errors import LoaderWorkerError
from ..index import PathIndex
from ._private import one_openmp_thread
from .base import Loader, LoaderConfig
from .batches import BatchOutcome, DecodeJob
from .workers import Feed

__all__ = ["TFLoader", "import_tensorflow"]


class _Iteration:
    """One pass of the pipeline: the epoch, this rank's ids from its first batch, its number."""

    def __init__(self, ids: np.ndarray, epoch: int, start: int, batch_size: int):
        self.ids, self.epoch, self.start, self.batch_size = ids, epoch, start, batch_size
        self.failures: dict[int, BaseException] = {}  # batch -> why it failed
        self.outcomes: dict[int, BatchOutcome] = {}  # batch -> its skips and remote counts
        self.feed: Feed | None = None  # its batches sent to the workers (num_workers > 0)

    def batch_ids(self, k: int) -> np.ndarray:
        b = self.batch_size
        return self.ids[k * b : (k + 1) * b]

    @property
    def batches(self) -> int:
        return -(-len(self.ids) // self.batch_size)


# NOTE [tf iterations]: the pipeline is built and traced once per loader. Each iteration of it
# begins with a call into the loader (``_begin``) that fixes its epoch and its first batch:
# iterating the loader (torch tensors) starts where the loader stands, like the torch backend;
# an iteration of ``as_tf_dataset()`` goes on to the next epoch once the current one is done
# (as ``shuffle(reshuffle_each_iteration=True)`` behaves), so ``ds.repeat()`` is the stream of
# epochs (Keras: with ``steps_per_epoch=len(loader)``, the tf.data guide). A batch counts as
# delivered when the consumer takes it (a map after the prefetch runs in the consumer's
# ``next``), so ``state_dict()`` (and ``loader.checkpoint``, for ``tf.train.Checkpoint``) is a
# position in the epoch that resumes exactly. A new iterator per epoch costs tf.data's iterator
# set-up once per epoch (``benchmarks/tf_epochs.py`` measures the epochs' rates and first
# batches).
#
# NOTE [tf workers]: the decoders are Python extensions, and libspng (pyspng), with the Python
# around every decoder call, holds the GIL: on tf.data's threads the decode ran on one core, and
# two threads were slower than one (28x28 PNGs, 2 cores: 31,000 images/s with one parallel call,
# 21,500 with two or three, the GIL handed back and forth). So with ``num_workers > 0`` the tf
# backend decodes in the torch backend's worker processes (NOTE [what is shared with workers]),
# ``num_workers`` of them, each batch into a shared-memory slot; its one tf.data map call per
# batch waits for the batch and copies its rows into the array it hands to tf.data.
# ``num_workers`` then means the same in both backends: worker processes, 0 decoding in the
# iterating thread (here tf.data's).
#
# NOTE [no autotune]: with tf.data's autotuning on, some epochs ran on one core at random: on
# 10,000 224px JPEGs (2 parallel calls, 2 cores) epochs of 3,906 images/s at 1.0-1.2 cores
# among epochs of 5,000-6,900 at 1.9 (8 epochs each: 2 of them with an AUTOTUNE prefetch, 5
# with a fixed one); with autotuning off, every epoch ran at 6,084-7,069 images/s on 1.8-1.9
# cores (measured with tf.data's threads decoding, before NOTE [tf workers]). Its parallelism is
# fixed anyway, so there is nothing for it to tune.
#
# NOTE [tf exit]: a tf.data iterator freed while the interpreter finalizes waits forever for its
# threads, which wait, inside ``numpy_function``, for a GIL that a finalizing interpreter no
# longer hands out: a script ending in the middle of an epoch (a suspended ``for`` over the
# loader, an exception traceback holding it) hung at exit (measured: > 90 s, killed). So the
# loader's iteration holds its iterator in a list the loader also knows, and a
# ``weakref.finalize`` on the loader empties those lists at exit, while the interpreter still
# runs: the iterator is freed there and the process exits at once (4.0-4.1 s for the script
# with TensorFlow's import, against the hang). A user's own iterator of ``as_tf_dataset()`` is
# the user's to free (finish the loop, or ``del`` it): left suspended, TensorFlow frees it during
# finalization, where a thread still decoding aborted the exit once in 15 runs under load.
class TFLoader(Loader):
    """The ``backend="tf"`` loader made by :func:`~tfpathloader.make_loader`."""

    backend = "tf"
    held_batches = 3  # prefetch(2) and the consumer-side map's batch (NOTE [batch transport])

    def __init__(self, index: PathIndex, cfg: LoaderConfig, transform: Any, job: DecodeJob):
        super().__init__(index, cfg, transform, job)
        self.tf = import_tensorflow()
        self._iterations: dict[int, _Iteration] = {}
        self._tokens = itertools.count(1)
        self._pipelines: dict[bool, Any] = {}
        self._live: dict[int, list[Any]] = {}  # NOTE [tf exit]
        self._at_exit = weakref.finalize(self, _free_iterators, self._live)
        self._use_workers(job, (cfg.batch_size, *job.shape))
        self._torch: Any = None
        self._checkpoint: Any = None
        # torch's kernels resize and mirror (not needed to decode images kept whole)
        self._torch_kernels = job.recipe.pipeline is not None or job.recipe.callback is not None

    # -- the pipeline -----------------------------------------------------------------------

    def _begin(self, advance: bool) -> tuple[np.int64, np.int64, np.int64]:
        """(On a tf.data thread) start an iteration: its token, epoch and number of batches."""
        if advance and self.sampler.done:
            self.set_epoch(self.epoch + 1)
        start = self._start()
        b = self.config.batch_size
        ids = self.sampler.epoch_ids()[start * b :]
        token = next(self._tokens)
        for old in [t for t in self._iterations if t < token - 1]:
            del self._iterations[old]  # the iteration before stays: it may still be draining
        it = self._iterations[token] = _Iteration(ids, self.epoch, start, b)
        return np.int64(token), np.int64(it.epoch), np.int64(it.batches)

    def _decode(self, token: np.int64, k: np.int64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(On a tf.data thread) batch ``k`` of an iteration, read and decoded."""
        it = self._iterations[int(token)]
        try:
            out = self._from_workers(it) if self.config.num_workers else self._here(it, int(k))
        except LoaderWorkerError as e:
            out = BatchOutcome(
                np.zeros(0, np.int64), np.zeros(0, np.int64), error=self._worker_died(e)
            )
        if out.error is not None:
            it.failures[int(k)] = out.error
            raise out.error  # tf.data ends the iteration with this message
        if out.skipped or out.remote:
            it.outcomes[int(k)] = out
        assert out.array is not None
        return out.array, out.labels, out.ids

    def _feed(self, batches: Any, epoch: int) -> Feed:
        new = self._pool is None or not self._pool.alive
        feed = super()._feed(batches, epoch)
        if new:  # freed at exit before the pool stops (finalizers run newest first): NOTE [tf exit]
            self._at_exit.detach()
            self._at_exit = weakref.finalize(self, _free_iterators, self._live)
        return feed

    def _here(self, it: _Iteration, k: int) -> BatchOutcome:
        """Batch ``k`` decoded on this thread (``num_workers=0``)."""
        if self._torch_kernels:
            one_openmp_thread()  # NOTE [one OpenMP thread]
        return self.job(it.batch_ids(k), it.epoch)

    def _from_workers(self, it: _Iteration) -> BatchOutcome:
        """The iteration's next batch from the workers, its rows a view of their slot."""
        if it.feed is None:
            batches = (it.batch_ids(k) for k in range(it.batches))
            it.feed = self._feed(batches, it.epoch)
        return self._slot_batch(it.feed.pool, next(it.feed))

    def _consumed(self, token: np.int64, k: np.int64) -> np.int64:
        """(On the consumer's thread) batch ``k`` was taken: count it (NOTE [tf iterations])."""
        it = self._iterations.get(int(token))
        if it is not None:
            out = it.outcomes.pop(int(k), None)
            self._add_remote_stats(out.remote if out else None)
            self._delivered(out.skipped if out else [])
            if int(k) == it.batches - 1:
                self._finish()
                if not self.persistent:
                    super().close()  # persistent_workers=False: the workers stop with the epoch
        return k

    def _pipeline(self, advance: bool) -> Any:
        """The loader's dataset (built once per kind: NOTE [tf iterations])."""
        if advance in self._pipelines:
            return self._pipelines[advance]
        tf, cfg = self.tf, self.config
        i64 = tf.int64

        def one_iteration(_: Any) -> Any:
            token, _, n = tf.numpy_function(
                lambda: self._begin(advance), [], [i64, i64, i64], stateful=True
            )
            return tf.data.Dataset.range(n).map(lambda k: (token, k))

        def decode(token: Any, k: Any) -> Any:
            image, label, index = tf.numpy_function(
                self._decode, [token, k], [tf.uint8, i64, i64], stateful=True
            )
            return token, k, image, label, index

        def consumed(token: Any, k: Any, image: Any, label: Any, index: Any) -> Any:
            k = tf.numpy_function(self._consumed, [token, k], i64, stateful=True)
            fixed = cfg.order.drop_last and cfg.on_error == "raise"
            image = tf.ensure_shape(image, [cfg.batch_size if fixed else None, *self.image_shape])
            batch = {
                "image": image,
                "label": tf.ensure_shape(label, [None]),
                "index": tf.ensure_shape(index, [None]),
            }
            return {**batch, "batch": k} if cfg.on_error == "skip" else batch

        ds = tf.data.Dataset.range(1).flat_map(one_iteration)
        # One call at a time: the parallelism is the workers' (NOTE [tf workers]).
        ds = ds.map(decode)
        ds = ds.prefetch(2)
        ds = ds.map(consumed)  # after the prefetch: runs when the consumer takes the batch
        if cfg.on_error == "skip":  # NOTE [all-skipped batch]: counted, not yielded
            ds = ds.filter(lambda x: tf.shape(x["index"])[0] > 0)
        options = tf.data.Options()
        options.deterministic = True
        options.experimental_warm_start = False  # nothing is read before the first next()
        options.autotune.enabled = False  # NOTE [no autotune]
        # The consumer-side map must stay on the consumer's side: no prefetch injected after it.
        options.experimental_optimization.inject_prefetch = False
        ds = ds.with_options(options)
        self._pipelines[advance] = ds
        return ds

    def as_tf_dataset(self) -> Any:
        """The loader as a ``tf.data.Dataset`` of dicts; each iteration is the next epoch.

        Each element: ``image`` uint8 ``[B, H, W, C]`` (``[B, C, H, W]`` with a callable
        transform), ``label`` and ``index`` int64 ``[B]`` (with ``on_error="skip"`` also
        ``batch``, its number). The first iteration delivers the loader's current epoch from
        its position (after ``load_state_dict``, the rest of a resumed epoch); every later
        iteration the next epoch, as ``Dataset.shuffle(reshuffle_each_iteration=True)`` does.
        ``loader.state_dict()`` and :attr:`checkpoint` follow the batches taken from it.
        """
        return self._pipeline(advance=True)

    @property
    def checkpoint(self) -> Any:
        """The loader's position as a ``tf.train.Checkpoint`` dependency.

        ``tf.train.Checkpoint(model=model, data=loader.checkpoint)`` saves ``state_dict()``
        with the model and restores it with ``load_state_dict``.
        """
        if self._checkpoint is None:
            self._checkpoint = _python_state(self.tf, self)
        return self._checkpoint

    # -- iterating in Python ----------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self._torch is None:
            import torch

            self._torch = torch
        holder = [iter(self._pipeline(advance=False))]
        key = id(holder)
        self._live[key] = holder
        try:
            while holder:
                try:
                    batch = next(holder[0])
                except StopIteration:
                    return
                except self.tf.errors.OpError as e:
                    raise self._failure(e) from None
                yield self._to_torch(batch)
        finally:
            holder.clear()  # frees the iterator (NOTE [tf exit])
            self._live.pop(key, None)

    def _failure(self, error: Exception) -> BaseException:
        """The exception the decode raised for the failed batch (the torch backend's)."""
        for it in sorted(self._iterations.items(), reverse=True):
            if it[1].failures:
                k = min(it[1].failures)
                return it[1].failures.pop(k)
        return error

    def _to_torch(self, batch: dict[str, Any]) -> dict[str, Any]:
        torch = self._torch
        out = {k: torch.from_dlpack(batch[k]) for k in ("image", "label", "index")}
        if self.job.channels_last:
            out["image"] = out["image"].permute(0, 3, 1, 2)  # NCHW, channels_last (as torch)
        pin = (
            torch.cuda.is_available() if self.config.pin_memory is None else self.config.pin_memory
        )
        if pin:
            out = {k: v.pin_memory() for k, v in out.items()}
        if self.config.device is not None:
            out = {k: v.to(self.config.device, non_blocking=True) for k, v in out.items()}
        return out

    def close(self) -> None:
        """Free the tf.data iterator of an iteration in progress, then stop the workers."""
        _free_iterators(self._live)
        super().close()


def _free_iterators(live: dict[int, list[Any]]) -> None:
    for holder in list(live.values()):
        holder.clear()
    live.clear()


def _python_state(tf: Any, loader: TFLoader) -> Any:
    """``loader``'s state as a ``tf.train.experimental.PythonState`` (JSON in the checkpoint)."""

    class LoaderState(tf.train.experimental.PythonState):
        def serialize(self) -> str:
            return json.dumps(loader.state_dict())

        def deserialize(self, string_value: Any) -> None:
            text = string_value.decode() if isinstance(string_value, bytes) else string_value
            loader.load_state_dict(json.loads(text))

    return LoaderState()
