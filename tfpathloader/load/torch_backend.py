"""The PyTorch backend: the order's batches decoded by worker processes into shared memory.

Stage two of the design in PyTorch terms: :class:`~tfpathloader.GlobalShuffleSampler` decides the
ids, a :class:`~.workers.WorkerPool` decodes each batch with the one decode path (NOTE [one
decode path]) straight into a reusable shared-memory slot, and the batch reaches the caller as
a tensor viewing that slot: no per-sample collation, no pickled pixels, no copy (NOTE [batch
transport]). Pinned memory and device copies for CUDA happen here, in the main process.
"""

from __future__ import annotations

import collections
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ..errors import LoaderWorkerError
from ..index import PathIndex
from .base import Loader, LoaderConfig
from .batches import BatchOutcome, DecodeJob
from .workers import Reply, WorkerPool, start_method

__all__ = ["TorchLoader"]

# NOTE [batch transport]: a batch leaves a worker through its socket as ids, labels and skips
# only: the pixels are already in the shared-memory slot the main process assigned to the
# request, and the batch is a tensor viewing that slot. A slot returns to the pool when the
# last tensor viewing it is freed (a weakref on the numpy view the tensor holds), so batches a
# user keeps stay valid. When every slot is held, a request goes without one and the worker
# sends its rows through the socket (pickled): slower, never wrong. A torch tensor sent the
# usual way travels as a fresh shared-memory segment: about a millisecond per tensor plus
# first-touch page faults (7.5 ms per 38 MB batch of 224px JPEGs).


def default_prefetch(workers: int, batch_bytes: int) -> int:
    """Batches each worker keeps queued: 4 for small batches, 2 (DataLoader's default) for big.

    NOTE [prefetch depth]: with 2 the main process, competing with busy workers for the cores,
    is often late to send the next request and workers idle (28x28 PNGs on 2 cores: 0.78x the
    raw decode rate with 2, 0.93x with 4). Big batches take long enough to decode that 2 keep
    the workers busy, and each queued batch holds a slot: 4 only while the 4 batches per worker
    hold at most 64 MiB in all.
    """
    return 4 if workers * 4 * batch_bytes <= 64 * 2**20 else 2


# NOTE [slot count]: a slot is taken when a request is sent and given back when the last view of
# its batch dies. The loader keeps workers * prefetch requests out and sends the next one when a
# batch arrives, while the caller's ``for`` variable still holds the previous batch: so the pool
# needs two slots over the requests, or every few batches a request finds none. Fewer slots is
# never wrong (a request without one gets its rows through the socket), only slower.
def pool_slots(workers: int, prefetch: int) -> int:
    """How many batch slots a loader's pool holds (see NOTE [slot count])."""
    return workers * prefetch + 2


class TorchLoader(Loader):
    """The ``backend="torch"`` loader made by :func:`~tfpathloader.make_loader`."""

    backend = "torch"

    def __init__(self, index: PathIndex, cfg: LoaderConfig, transform: Any, job: DecodeJob):
        super().__init__(index, cfg, transform, job)
        self.pin_memory = torch.cuda.is_available() if cfg.pin_memory is None else cfg.pin_memory
        self.device = torch.device(cfg.device) if cfg.device is not None else None
        batch_bytes = cfg.batch_size * int(np.prod(job.shape))
        workers = cfg.num_workers
        self.prefetch = cfg.prefetch_factor or (
            default_prefetch(workers, batch_bytes) if workers else 0
        )
        self.persistent = workers > 0 and cfg.persistent_workers is not False
        self._pool: WorkerPool | None = None

    def _workers(self) -> WorkerPool:
        """The loader's worker pool, started now if it is not running."""
        if self._pool is None or not self._pool.alive:
            cfg = self.config
            self._pool = WorkerPool(
                self.job,
                workers=cfg.num_workers,
                slot_shape=(cfg.batch_size, *self.job.shape),
                slots=pool_slots(cfg.num_workers, self.prefetch),
                method=start_method(remote=self.job.remote_root),
                timeout=float(cfg.timeout),
                preload=("torch",),
            )
        return self._pool

    def close(self) -> None:
        """Stop the worker processes now (they also stop when the loader is freed)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        start = self._start()
        batches = self.sampler.batches(start)
        if self.config.num_workers == 0:
            epoch = self.epoch
            outcomes = (self._deliver(self.job(ids, epoch), None) for ids in batches)
        else:
            outcomes = self._from_workers(batches)
        try:
            for batch in outcomes:
                if batch is not None:
                    yield batch
            self._finish()
        finally:
            if not self.persistent:
                self.close()

    def _from_workers(
        self, batches: Iterator[np.ndarray]
    ) -> Iterator[dict[str, torch.Tensor] | None]:
        """Each batch from the workers, in order, ``prefetch`` per worker in flight."""
        try:
            pool = self._workers()
            epoch = self.epoch
            pending: collections.deque[int] = collections.deque()
            depth = self.prefetch * len(pool)
            for ids in batches:
                pending.append(pool.send(ids, epoch))
                if len(pending) >= depth:
                    yield self._deliver(*self._receive(pool, pending.popleft()))
            while pending:
                yield self._deliver(*self._receive(pool, pending.popleft()))
        except LoaderWorkerError as e:
            self._pool = None  # closed by the pool: the next iteration starts fresh workers
            raise LoaderWorkerError(
                f"{e}. {self.batches_consumed} batches of epoch {self.epoch} were delivered; "
                "iterate again, or give loader.state_dict() to a new loader, to get exactly "
                "the rest of the epoch"
            ) from e

    def _receive(self, pool: WorkerPool, seq: int) -> tuple[BatchOutcome, Any]:
        reply: Reply = pool.receive(seq)
        out: BatchOutcome = reply.result
        if reply.slot is None:
            return out, None
        if out.error is not None or out.n == 0:
            pool.release(reply.slot)
            return out, None
        view = pool.slot_array(reply.slot)[: out.n]
        weakref.finalize(view, pool.release, reply.slot)  # free once no tensor views it
        out.array = view
        return out, view

    def _deliver(self, out: BatchOutcome, _view: Any) -> dict[str, torch.Tensor] | None:
        """A decoded batch as tensors; None for a batch that lost every record (skipped)."""
        self._add_remote_stats(out.remote)
        if out.error is not None:
            raise out.error
        self._delivered(out.skipped)
        if out.n == 0:
            return None  # NOTE [all-skipped batch]
        assert out.array is not None
        image = torch.from_numpy(out.array)
        batch = {
            "image": image,
            "label": torch.from_numpy(out.labels),
            "index": torch.from_numpy(out.ids),
        }
        if self.pin_memory:
            batch = {k: v.pin_memory() for k, v in batch.items()}
        if self.device is not None:
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        if self.job.channels_last:
            batch["image"] = batch["image"].permute(0, 3, 1, 2)  # NCHW view, channels_last memory
        return batch
