"""The PyTorch backend: the order's batches decoded by worker processes into shared memory.

Stage two of the design in PyTorch terms: :class:`~tfpathloader.GlobalShuffleSampler` decides the
ids, a :class:`~.workers.WorkerPool` decodes each batch with the one decode path (NOTE [one
decode path]) straight into a reusable shared-memory slot, and the batch reaches the caller as
a tensor viewing that slot: no per-sample collation, no pickled pixels, no copy (NOTE [batch
transport]). Pinned memory and device copies for CUDA happen here, in the main process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ..errors import LoaderWorkerError
from ..index import PathIndex
from .base import Loader, LoaderConfig
from .batches import BatchOutcome, DecodeJob
from .device import DeviceDecoder, PlanJob, PlannedBatch
from .workers import Reply, WorkerPool

__all__ = ["TorchLoader"]


class TorchLoader(Loader):
    """The ``backend="torch"`` loader made by :func:`~tfpathloader.make_loader`."""

    backend = "torch"

    def __init__(self, index: PathIndex, cfg: LoaderConfig, transform: Any, job: DecodeJob):
        super().__init__(index, cfg, transform, job)
        self.device = torch.device(cfg.device) if cfg.device is not None else None
        on_device = cfg.decode_on == "device"
        if on_device and self.device is None:
            self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.pin_memory = (
            (torch.cuda.is_available() and not on_device)
            if cfg.pin_memory is None
            else cfg.pin_memory
        )
        # What workers run, and what a slot holds: a whole batch of pixels, or of file bytes
        # (NOTE [device decode]).
        self._decoder = DeviceDecoder(job, self.device) if on_device else None
        if on_device:
            self._use_workers(PlanJob(job), (_byte_slot(index, cfg.batch_size),))
        else:
            self._use_workers(job, (cfg.batch_size, *job.shape))

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        start = self._start()
        batches = self.sampler.batches(start)
        outcomes: Iterator[dict[str, torch.Tensor] | None]
        if self.config.num_workers == 0:
            epoch = self.epoch
            outcomes = (
                self._deliver(self._outcome(self._work(ids, epoch), None)) for ids in batches
            )
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
            feed = self._feed(batches, self.epoch)
            for reply in feed:
                yield self._deliver(self._receive(feed.pool, reply))
        except LoaderWorkerError as e:
            raise self._worker_died(e) from e

    def _receive(self, pool: WorkerPool, reply: Reply) -> BatchOutcome:
        """A worker's reply as a decoded batch; its slot, viewed by the batch's tensor, is free
        once no tensor views it (NOTE [batch transport])."""
        if reply.slot is None:
            return self._outcome(reply.result, None)
        if self._decoder is not None:  # decoded from the slot's bytes, then it is free
            try:
                return self._outcome(reply.result, pool.slot_array(reply.slot))
            finally:
                self._decoder.release_after(pool.release, reply.slot)
        return self._slot_batch(pool, reply)

    def _outcome(self, result: Any, slot: np.ndarray | None) -> Any:
        """A worker's result as a decoded batch (decoded here, NOTE [device decode])."""
        if self._decoder is None:
            return result
        planned: PlannedBatch = result
        out = BatchOutcome(
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            planned.skipped,
            planned.error,
            planned.remote,
        )
        if planned.error is None:
            images, kept, skipped = self._decoder(planned, slot)
            out.ids = np.asarray(kept, dtype=np.int64)
            out.labels = np.asarray(self.index.labels[out.ids], dtype=np.int64)
            out.skipped = planned.skipped + skipped
            out.array = images
        return out

    def _deliver(self, out: BatchOutcome) -> dict[str, torch.Tensor] | None:
        """A decoded batch as tensors; None for a batch that lost every record (skipped)."""
        self._add_remote_stats(out.remote)
        if out.error is not None:
            raise out.error
        self._delivered(out.skipped)
        if out.n == 0:
            return None  # NOTE [all-skipped batch]
        assert out.array is not None
        image = out.array if isinstance(out.array, torch.Tensor) else torch.from_numpy(out.array)
        batch = {
            "image": image,
            "label": torch.from_numpy(out.labels),
            "index": torch.from_numpy(out.ids),
        }
        if self.pin_memory:
            batch = {k: v if v.device.type != "cpu" else v.pin_memory() for k, v in batch.items()}
        if self.device is not None:
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        if self.job.channels_last:
            batch["image"] = batch["image"].permute(0, 3, 1, 2)  # NCHW view, channels_last memory
        return batch


def _byte_slot(index: PathIndex, batch_size: int) -> int:
    """Bytes a slot holds for a batch's files: twice the batch at the first files' mean size."""
    sizes = []
    for i in range(min(len(index), 64)):
        try:
            sizes.append(os.stat(index.path(i)).st_size)
        except (OSError, ValueError):  # a URL, or a missing file: a generous guess
            sizes.append(512 * 1024)
    return max(1 << 20, int(2 * batch_size * float(np.mean(sizes))))
