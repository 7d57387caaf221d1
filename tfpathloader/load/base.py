"""What every loader is, in either backend: its settings, epochs, skip reports and resume state.

The sampler's position is the one resume counter: a loader counts a batch as consumed when it
hands it to the caller (not when it was decoded ahead), and its state is the sampler's (NOTE
[resume state] in :mod:`tfpathloader.order.state`) plus the epoch's skips.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..errors import LoaderWorkerError
from ..index import PathIndex
from ..order.sampler import GlobalShuffleSampler
from ..order.spec import OrderSpec
from ..storage import RemoteOptions
from .batches import BatchOutcome, DecodeJob
from .files import DEFAULT_MAX_FILE_BYTES
from .workers import Feed, Reply, WorkerPool, default_prefetch, pool_slots, start_method

__all__ = ["DecodeOn", "JpegDct", "Loader", "LoaderConfig", "OnError"]

OnError = Literal["raise", "skip"]
JpegDct = Literal["accurate", "fast"]
DecodeOn = Literal["workers", "device"]


@dataclass(frozen=True)
class LoaderConfig:
    """A loader's settings: the order (one :class:`OrderSpec`), the rank, and how to load."""

    order: OrderSpec
    rank: int = 0
    channels: int = 3
    size: tuple[int, int] | None = None
    on_error: OnError = "raise"
    jpeg_dct: JpegDct = "accurate"
    decode_on: DecodeOn = "workers"
    num_workers: int = 0
    prefetch_factor: int | None = None
    persistent_workers: bool | None = None
    pin_memory: bool | None = None
    device: str | None = None
    timeout: float = 0.0
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    allow_outside_root: bool = False
    remote: RemoteOptions = RemoteOptions()  # noqa: RUF009 (frozen, so one shared default is safe)

    @property
    def batch_size(self) -> int:
        return self.order.batch_size

    @property
    def seed(self) -> int:
        return self.order.seed


class Loader:
    """What :func:`make_loader` returns, in either backend.

    Iterate it for one epoch of ``{"image", "label", "index"}`` batches of torch tensors; call
    :meth:`set_epoch` before each epoch; :meth:`state_dict` / :meth:`load_state_dict` resume
    mid-epoch exactly; :meth:`close` (or ``with``) stops its workers.
    """

    backend: str = "base"

    def __init__(self, index: PathIndex, cfg: LoaderConfig, transform: Any, job: DecodeJob):
        self.index = index
        self.config = cfg
        self.transform = transform
        self.job = job  # reads and decodes one batch (NOTE [one decode path])
        self.image_shape = job.shape  # (H, W, C) of every image a batch holds
        self.sampler = GlobalShuffleSampler(
            len(index), spec=cfg.order, rank=cfg.rank, fingerprint=index.fingerprint
        )
        self.skipped: list[dict[str, Any]] = []  # this epoch's skipped records
        # Remote reads (root is a URL): requests, retries and failures by kind, summed over
        # every worker since the loader was made (NOTE [retry counts] in storage/fetch.py).
        self.remote_stats: dict[str, int] = {}
        self._add_remote_stats(job.probe_stats)

    def _add_remote_stats(self, delta: dict[str, int] | None) -> None:
        for k, v in (delta or {}).items():
            self.remote_stats[k] = self.remote_stats.get(k, 0) + v

    # -- epochs ----------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        """The epoch the next (or current) iteration delivers."""
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch the next iteration delivers, from its first batch.

        Call it before every epoch; otherwise every epoch repeats the same order.
        """
        self.sampler.set_epoch(epoch)
        self.skipped = []

    def __len__(self) -> int:
        """Batches per epoch on this rank (a whole epoch, under the current layout)."""
        return self.sampler.steps_per_epoch

    @property
    def batches_left(self) -> int:
        """Batches this rank still delivers in the current epoch (after a resume: fewer)."""
        return self.sampler.num_steps - self.sampler.steps_consumed

    @property
    def batches_consumed(self) -> int:
        """Batches of the current epoch delivered to the caller since it (or a resume) began."""
        return self.sampler.steps_consumed

    def _start(self) -> int:
        """Called when an iteration begins; returns the first batch to deliver."""
        self.sampler.start_iteration()
        if self.sampler.steps_consumed == 0 and self.sampler.layout.start == 0:
            self.skipped = []
        return self.sampler.steps_consumed

    def _delivered(self, skipped: list[tuple[int, str, str]] = ()) -> None:  # type: ignore[assignment]
        for rid, path, cause in skipped:
            self.skipped.append({"record_id": int(rid), "path": path, "cause": cause})
        self.sampler.consume_step()

    def _finish(self) -> None:
        self.sampler.mark_epoch_done()
        if self.skipped:
            warnings.warn(self.skip_report(), RuntimeWarning, stacklevel=3)

    # NOTE [all-skipped batch]: with on_error="skip", a batch whose every record is unreadable is
    # not yielded (an empty batch breaks a training step: batch norm, a mean over nothing), in
    # either backend. It still counts as consumed (batches_consumed, the resume state), its
    # records are listed in `skipped`, and the epoch yields fewer than len(loader) batches.
    def skip_report(self) -> str:
        """One line per skipped record of this epoch (``on_error="skip"``)."""
        if not self.skipped:
            return f"epoch {self.epoch}: nothing skipped"
        lines = [f"epoch {self.epoch}: skipped {len(self.skipped)} unreadable image(s):"]
        lines += [f"  record {s['record_id']} ({s['path']}): {s['cause']}" for s in self.skipped]
        return "\n".join(lines)

    # -- resume ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: the position in the epoch's global order that the caller consumed.

        Loaded into a fresh loader (either backend, any world size, batch size or number of
        workers), it delivers exactly the rest of the epoch, whatever was decoded ahead. See
        NOTE [resume state] and NOTE [elastic resume] in :mod:`tfpathloader.order.state`.
        """
        return {**self.sampler.state_dict(), "skipped": [dict(s) for s in self.skipped]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict` (of either backend, of any layout).

        Raises:
            StateError: naming the field, for a state that cannot be resumed exactly.
        """
        got = self.sampler.load_state_dict(state)
        self.skipped = got.skipped

    # -- worker processes (both backends) ---------------------------------------------------

    # NOTE [batch transport]: a batch leaves a worker through its socket as ids, labels and
    # skips only: the pixels are already in the shared-memory slot the main process assigned to
    # the request, and the batch is a tensor viewing that slot, in both backends
    # (tf.numpy_function hands tf.data a 64-byte-aligned array without copying it, and holds it
    # while any tensor made from it lives; the tf backend copied each batch out of its slot
    # before, 7-18 ms per 38 MB batch on its main thread). A slot returns to the pool when the
    # last tensor viewing it is freed (a weakref on the numpy view the tensor holds), so batches
    # a user keeps stay valid. When every slot is held, a request goes without one and the
    # worker sends its rows through the socket (pickled): slower, never wrong. A torch tensor
    # sent the usual way travels as a fresh shared-memory segment: about a millisecond per
    # tensor plus first-touch page faults (7.5 ms per 38 MB batch of 224px JPEGs).

    # Batches a backend holds beyond the requests in flight, each in a slot (NOTE [batch
    # transport]): tf.data's prefetch buffer and the batch its consumer-side map passes on.
    held_batches = 0

    def _use_workers(self, work: Any, slot_shape: tuple[int, ...]) -> None:
        """What the workers run (``work(ids, epoch, out)``) and what one slot holds."""
        cfg = self.config
        self._pool: WorkerPool | None = None
        self._work, self._slot_shape = work, slot_shape
        n = cfg.num_workers
        self.prefetch = cfg.prefetch_factor or (
            default_prefetch(n, int(np.prod(slot_shape))) if n else 0
        )
        self.persistent = n > 0 and cfg.persistent_workers is not False

    def _feed(self, batches: Iterator[np.ndarray], epoch: int) -> Feed:
        """This iteration's batches, sent to the workers (started now if not running)."""
        cfg = self.config
        if self._pool is None or not self._pool.alive:
            self._pool = WorkerPool(
                self._work,
                workers=cfg.num_workers,
                slot_shape=self._slot_shape,
                slots=pool_slots(cfg.num_workers, self.prefetch) + self.held_batches,
                method=start_method(remote=self.job.remote_root),
                timeout=float(cfg.timeout),
                preload=("torch",),
            )
        return Feed(self._pool, batches, epoch, self.prefetch * cfg.num_workers)

    @staticmethod
    def _slot_batch(pool: WorkerPool, reply: Reply) -> BatchOutcome:
        """A worker's reply, its rows a view of their slot, which is free again once nothing
        views it (NOTE [batch transport])."""
        out: BatchOutcome = reply.result
        if reply.slot is None:
            return out
        if out.error is not None or out.n == 0:
            pool.release(reply.slot)
            return out
        view = pool.slot_array(reply.slot)[: out.n]
        weakref.finalize(view, pool.release, reply.slot)  # free once no tensor views it
        out.array = view
        return out

    def _worker_died(self, e: LoaderWorkerError) -> LoaderWorkerError:
        """``e`` with where the epoch stands (the pool closed itself: the next iteration
        starts fresh workers)."""
        self._pool = None
        return LoaderWorkerError(
            f"{e}. {self.batches_consumed} batches of epoch {self.epoch} were delivered; "
            "iterate again, or give loader.state_dict() to a new loader, to get exactly "
            "the rest of the epoch"
        )

    def close(self) -> None:
        """Stop the loader's worker processes now (they also stop when the loader is freed);
        iterating again starts them anew."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    # -- the rest is the backend's ---------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:  # pragma: no cover - backends override
        raise NotImplementedError

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
