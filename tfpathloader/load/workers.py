"""Worker processes that decode batches into shared memory, and find out themselves when one dies.

NOTE [what is shared with workers]: each worker has one duplex ``multiprocessing.Pipe`` (a
socketpair) to the main process and nothing else: no ``Queue`` (its feeder thread and its
reader/writer locks are shared by every process that uses it), no ``Event``, no ``Lock``, no
``Manager``. The batch slots are one ``RawArray`` (shared memory without a lock) that the main
process alone hands out: a worker writes only the slot named in its request and the main
process reads it only once the reply has arrived. So a worker killed at any moment, even in the
middle of writing a reply, can leave behind nothing that the main process waits on: the main
process only ever reads *that worker's* socket, with a deadline, and a dead worker's socket
reads as end-of-file (its end was held by it alone: a forked worker closes the main process's
ends it inherited, a forkserver worker never had them). A partly written reply also reads as
end-of-file. DataLoader, by contrast, shares one result queue and a ``_workers_done_event`` (a
lock and a condition) with every worker: a worker killed while holding that lock left the main
process blocked forever in ``_mark_worker_as_unavailable`` (seen in CI), and a worker killed
while writing into the shared queue can corrupt what the others wrote.

NOTE [worker death]: :meth:`WorkerPool.receive` waits on the one socket the next batch comes
from, one second at a time, and a worker's death is end-of-file there (or its process sentinel,
for the children of this process), found within a second whatever the worker held. The loader
then raises :class:`~tfpathloader.LoaderWorkerError` naming the worker, its exit status and the
batches delivered; its state still counts only delivered batches, so iterating again starts
fresh workers and delivers exactly the rest of the epoch. Starting a worker from a dead
forkserver fails the same way, once: a killed forkserver closes its socket a moment before
``waitpid`` sees it exit, and only then does multiprocessing start a new one, so a start that
finds the socket refused retries for up to ``FORKSERVER_RESTART_S`` (under load, two
iterations in a row once both met the dead one). Shutting down has deadlines too: a stop
message, then ``terminate``, then ``kill``.

NOTE [main process death]: a worker blocks only in ``recv`` on its socket, so when the main
process dies (any signal, SIGKILL included) the worker reads end-of-file and exits; a worker in
the middle of a batch finishes it and then fails to send it. The slots are a ``RawArray``,
whose file in ``/dev/shm`` is unlinked as soon as it is made: the memory goes with the last
process that maps it, and nothing is left behind.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing as mp
import multiprocessing.connection
import os
import pickle
import signal
import sys
import time
import traceback
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import LoaderWorkerError

__all__ = [
    "Feed",
    "Reply",
    "Request",
    "WorkerPool",
    "default_prefetch",
    "pool_slots",
    "start_method",
]

_POLL_S = 1.0  # how often a waiting main process looks at the worker's liveness
_STOP_S = 2.0  # how long a stop waits for workers before terminating them


@dataclass(frozen=True)
class Request:
    """What a worker needs for one batch: its sequence number, ids, epoch, and a slot."""

    seq: int
    ids: np.ndarray
    epoch: int
    slot: int | None


@dataclass
class Reply:
    """A worker's answer to one request: what its job returned, and the slot it wrote."""

    seq: int
    slot: int | None
    result: Any = None  # what the job returned (rows, skips, errors; the rows themselves
    # when the request had no slot)
    error: BaseException | None = None  # an unexpected failure in the worker (a bug)


# A job runs in the worker: job(ids, epoch, out) -> result, out a slot's array or a new one.
Job = Callable[[np.ndarray, int, "np.ndarray | None"], Any]


def start_method(*, remote: bool) -> str:
    """How workers start: ``fork`` while that is safe, else a ``forkserver`` (NOTE [start
    method])."""
    # NOTE [start method]: fork is fast and shares the index's pages without a copy. It is
    # unsafe once TensorFlow is imported (its runtime threads' locks are copied in whatever
    # state they are: a forked worker beside live tf.data threads hung at start-up) and with a
    # URL root (the object-store client runs a tokio runtime that does not survive a fork).
    # Then workers come from a forkserver: a clean process, started once, that preloads the
    # decode path (and torch, if this process imported it), so a worker starts in
    # milliseconds. As with spawn, such a worker imports the script's main module: scripts need
    # ``if __name__ == "__main__":``.
    methods = mp.get_all_start_methods()
    if "fork" in methods and not remote and "tensorflow" not in sys.modules:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


def _worker_main(
    conn: mp.connection.Connection,
    job: Job,
    memory: Any,
    slot_shape: tuple[int, ...],
    inherited: list[int],
) -> None:
    """A worker's life: requests in, replies out, until a stop message or end-of-file."""
    for fd in inherited:  # NOTE [what is shared with workers]: the main process's ends
        os.close(fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)  # workers are the parallelism
    slots = _slot_arrays(memory, slot_shape)
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return  # the main process is gone (NOTE [main process death])
        if request is None:
            return
        reply = Reply(request.seq, request.slot)
        try:
            out = slots[request.slot] if slots is not None and request.slot is not None else None
            reply.result = job(request.ids, request.epoch, out)
        except BaseException as e:  # a bug in the job: the main process re-raises it
            reply.error = _picklable(e)
        try:
            conn.send(reply)
        except (OSError, EOFError):
            return


def _picklable(e: BaseException) -> BaseException:
    try:
        pickle.dumps(e)
        return e
    except Exception:
        return RuntimeError("".join(traceback.format_exception(e)))


# tf.numpy_function hands tf.data an array on a 64-byte boundary without copying it (NOTE [batch
# transport]); multiprocessing's heap aligns a RawArray to 8 bytes only, numpy to 16.
ALIGN = 64


def aligned(buf: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` bytes of ``buf`` from its first 64-byte boundary (``buf`` has ``ALIGN`` spare)."""
    start = -buf.ctypes.data % ALIGN
    return buf[start : start + n]


def _stride(slot_shape: tuple[int, ...]) -> int:
    return -(-int(np.prod(slot_shape)) // ALIGN) * ALIGN


def _slot_arrays(memory: Any, slot_shape: tuple[int, ...]) -> np.ndarray | None:
    """The slots in ``memory``, aligned: the same offsets in every process (a mapping starts on
    a page)."""
    if memory is None:
        return None
    buf, stride = np.frombuffer(memory, dtype=np.uint8), _stride(slot_shape)
    n = (len(buf) - ALIGN) // stride
    rows = aligned(buf, n * stride).reshape(n, stride)
    return rows[:, : int(np.prod(slot_shape))].reshape(n, *slot_shape)


@dataclass
class _Worker:
    process: Any
    conn: mp.connection.Connection
    waiting: collections.deque[int] = field(default_factory=collections.deque)  # seqs sent


# A dead forkserver is restarted by multiprocessing once waitpid sees it exit; its socket closes
# a moment before that (NOTE [worker death]).
FORKSERVER_RESTART_S = 5.0


def _start_process(process: mp.process.BaseProcess, method: str) -> None:
    """``process.start()``, retried while a killed forkserver refuses connections."""
    deadline = time.monotonic() + FORKSERVER_RESTART_S
    while True:
        try:
            return process.start()
        except ConnectionRefusedError:
            if method != "forkserver" or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class WorkerPool:
    """``workers`` processes running ``job`` on batch requests, replies in the order sent.

    Args:
        job: Picklable ``job(ids, epoch, out) -> result``; ``out`` is the request's slot (an
            array of ``slot_shape``) or None, when the job makes its own array (and returns it
            in the result).
        workers: How many processes.
        slot_shape: The shape of one slot (a whole batch), uint8.
        slots: How many slots (NOTE [slot count]).
        method: ``"fork"``, ``"forkserver"`` or ``"spawn"`` (see :func:`start_method`).
        timeout: Seconds a batch may take before the worker counts as stalled (0: no limit).
    """

    def __init__(
        self,
        job: Job,
        *,
        workers: int,
        slot_shape: tuple[int, ...],
        slots: int,
        method: str,
        timeout: float = 0.0,
        preload: tuple[str, ...] = (),
    ):
        self._ctx: Any = mp.get_context(method)
        if method == "forkserver":
            self._ctx.set_forkserver_preload(["tfpathloader.load.workers", *preload])
        self.method = method
        self.timeout = timeout
        self.slot_shape = slot_shape
        size = _stride(slot_shape) * slots
        self._memory = self._ctx.RawArray("B", size + ALIGN) if size else None
        self._arrays = _slot_arrays(self._memory, slot_shape)
        self._free = list(range(slots if size else 0))
        self._seq = 0
        self._workers: list[_Worker] = []
        self._next = 0  # the worker the next request goes to
        self._closed = False
        # Stops the workers when the pool is freed, or at interpreter exit (weakref.finalize
        # runs its atexit=True callbacks before the interpreter finalizes).
        self._finalizer = weakref.finalize(self, _stop, self._workers)
        try:
            for _ in range(workers):
                self._start(job)
        except BaseException:
            self.close()
            raise

    def _start(self, job: Job) -> None:
        ours, theirs = self._ctx.Pipe(duplex=True)
        inherited = [w.conn.fileno() for w in self._workers] + [ours.fileno()]
        process = self._ctx.Process(
            target=_worker_main,
            args=(
                theirs,
                job,
                self._memory,
                self.slot_shape,
                inherited if self.method == "fork" else [],
            ),
            name=f"tfpathloader-worker-{len(self._workers)}",
            daemon=True,
        )
        try:
            _start_process(process, self.method)
        except (pickle.PicklingError, AttributeError, TypeError) as e:  # only when not forked
            ours.close()
            theirs.close()
            raise TypeError(
                f"loader workers started by {self.method} (TensorFlow is imported, or the root "
                f"is a URL) get the loader by pickle, and it cannot be pickled: {e}. Define a "
                "transform at a module's top level, not as a lambda or a nested function"
            ) from e
        except (EOFError, ConnectionError, OSError) as e:
            ours.close()
            theirs.close()
            raise LoaderWorkerError(
                f"could not start loader worker {len(self._workers)} ({self.method}): "
                f"{type(e).__name__}: {e}. The {self.method} process may have been killed; "
                "iterating again starts a new one"
            ) from e
        theirs.close()
        self._workers.append(_Worker(process, ours))

    def __len__(self) -> int:
        return len(self._workers)

    @property
    def alive(self) -> bool:
        return not self._closed

    # -- slots ------------------------------------------------------------------------------

    def slot_array(self, slot: int) -> np.ndarray:
        """The main process's view of ``slot`` (a whole batch)."""
        assert self._arrays is not None
        return self._arrays[slot]

    def release(self, slot: int | None) -> None:
        """Give ``slot`` back (its batch is no longer used)."""
        if slot is not None:
            self._free.append(slot)

    # -- requests and replies ---------------------------------------------------------------

    def send(self, ids: np.ndarray, epoch: int) -> int:
        """Send the next batch request (round robin); returns its sequence number."""
        worker = self._workers[self._next]
        self._next = (self._next + 1) % len(self._workers)
        slot = self._free.pop() if self._free else None  # none free: the reply carries rows
        seq = self._seq
        self._seq += 1
        try:
            worker.conn.send(Request(seq, ids, epoch, slot))
        except (OSError, EOFError):
            self.release(slot)
            raise self._died(worker) from None
        worker.waiting.append(seq)
        return seq

    def receive(self, seq: int) -> Reply:
        """The reply to request ``seq``; replies to requests abandoned before it are dropped.

        Raises:
            LoaderWorkerError: the worker died or stalled (NOTE [worker death]).
        """
        worker = next(w for w in self._workers if seq in w.waiting)
        while True:
            reply = self._recv(worker)
            worker.waiting.popleft()
            if reply.seq == seq:
                if reply.error is not None:
                    self.release(reply.slot)
                    raise reply.error
                return reply
            self.release(reply.slot)  # an abandoned iteration's batch

    def _recv(self, worker: _Worker) -> Reply:
        deadline = time.monotonic() + self.timeout if self.timeout else None
        waits = [worker.conn]
        if self.method == "fork":
            waits.append(worker.process.sentinel)  # our child: its exit is seen at once
        while True:
            left = _POLL_S if deadline is None else min(_POLL_S, deadline - time.monotonic())
            ready = mp.connection.wait(waits, timeout=max(0.0, left))
            if worker.conn in ready:
                try:
                    return worker.conn.recv()
                except (EOFError, OSError):
                    raise self._died(worker) from None
            if ready:  # the sentinel: the process exited, with nothing left to read
                raise self._died(worker)
            if deadline is not None and time.monotonic() >= deadline:
                which = f"loader worker {self._workers.index(worker)} (pid {worker.process.pid})"
                self.close()
                raise LoaderWorkerError(
                    f"{which} sent no batch for {self.timeout:g} s (timeout=): it stalled"
                )

    def _died(self, worker: _Worker) -> LoaderWorkerError:
        index = self._workers.index(worker)
        with contextlib.suppress(OSError, ValueError, AssertionError, EOFError):
            worker.process.join(0.1)
        code = worker.process.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        if code is None:
            how = "its connection closed"
        hint = ""
        if code == 1 and self.method != "fork":  # most often: an unguarded script
            hint = (
                f"; a worker started by {self.method} imports the script's main module, so a "
                'script must keep its top-level code under `if __name__ == "__main__":` (its '
                "error is printed above)"
            )
        self.close()
        return LoaderWorkerError(
            f"loader worker {index} (pid {worker.process.pid}) died ({how}){hint}"
        )

    # -- shutdown ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every worker (a stop message, then terminate, then kill; with deadlines)."""
        self._closed = True
        self._finalizer()


def _stop(workers: list[_Worker]) -> None:
    for w in workers:
        with contextlib.suppress(OSError, EOFError):
            w.conn.send(None)
    deadline = time.monotonic() + _STOP_S
    for step in ("join", "terminate", "kill"):
        for w in workers:
            p = w.process
            try:
                if step != "join" and p.is_alive():
                    getattr(p, step)()
                p.join(max(0.0, deadline - time.monotonic()) if step == "join" else 0.5)
            except (OSError, ValueError, AssertionError, EOFError):
                pass  # a forkserver worker whose forkserver is gone: killed by pid below
        if not any(_alive(w.process) for w in workers):
            break
    for w in workers:
        w.conn.close()
    workers.clear()


def _alive(p: Any) -> bool:
    try:
        return bool(p.is_alive())
    except (OSError, ValueError, AssertionError, EOFError):
        try:
            os.kill(p.pid, 0)
            return True
        except OSError:
            return False


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


class Feed:
    """An iteration's batches sent to ``pool`` ``depth`` ahead, their replies taken in order."""

    def __init__(self, pool: WorkerPool, batches: Iterator[np.ndarray], epoch: int, depth: int):
        self.pool, self.batches, self.epoch, self.depth = pool, batches, epoch, depth
        self.pending: collections.deque[int] = collections.deque()
        self._fill()

    def _fill(self) -> None:
        while len(self.pending) < self.depth:
            ids = next(self.batches, None)
            if ids is None:
                return
            self.pending.append(self.pool.send(ids, self.epoch))

    def __iter__(self) -> Feed:
        return self

    def __next__(self) -> Reply:
        if not self.pending:
            raise StopIteration
        reply = self.pool.receive(self.pending.popleft())
        self._fill()
        return reply
