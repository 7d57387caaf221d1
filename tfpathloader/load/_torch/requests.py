"""A batch request as DataLoader's batch sampler sends it: ids, epoch, and a batch slot."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BatchRequest", "EpochBatchSampler"]


@dataclass(frozen=True)
class BatchRequest:
    """What a worker needs to build one batch: the ids, in order, the epoch, and a buffer slot."""

    ids: np.ndarray
    epoch: int
    slot: int | None = None

    def __len__(self) -> int:
        return len(self.ids)


class EpochBatchSampler:
    """Yields :class:`BatchRequest` s of the sampler's current epoch, from a start batch.

    It holds no reference to the loader: a cycle through the DataLoader would leave its
    worker shutdown to the garbage collector, which may close the worker queues first (and
    then every worker waits out a 5 s timeout).
    """

    def __init__(self, sampler: Any, dataset: Any):
        self.sampler = sampler
        self.dataset = dataset
        self.start_batch = 0

    def __len__(self) -> int:
        return int(self.sampler.num_steps)

    def __iter__(self) -> Iterator[BatchRequest]:
        epoch = self.sampler.epoch
        pool = self.dataset.pool
        for ids in self.sampler.batches(self.start_batch):
            # Slots are taken lazily, as DataLoader sends each request (see NOTE [batch
            # transport]); a full batch's slot also serves a short last batch.
            slot = pool.acquire() if pool is not None else None
            yield BatchRequest(ids, epoch, slot)
