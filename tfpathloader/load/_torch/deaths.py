"""A DataLoader worker's failure, wherever it surfaces, as the library's LoaderWorkerError.

NOTE [worker death]: PyTorch reports a dead worker in three places. At ``next()`` (a worker
exited, or ``timeout`` passed) and from the pin-memory thread, as a ``RuntimeError`` raised by
the iterator; and from its SIGCHLD handler, which raises ``RuntimeError: DataLoader worker
(pid X) is killed by signal`` in the main thread *wherever it happens to be*: usually in the
training step's forward pass, far from the loader. The first two are caught around the
iterator; for the third, the SIGCHLD handler PyTorch installs is wrapped once, so the error
raised there is a :class:`~tfpathloader.LoaderWorkerError` too (a ``RuntimeError`` subclass, so
code catching ``RuntimeError`` still works). A loader whose worker died this way restarts its
workers on its next iteration; its ``state_dict()`` still counts the batches delivered.
"""

from __future__ import annotations

import signal
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from ...errors import LoaderWorkerError

__all__ = ["install_sigchld_translation", "is_worker_failure", "surface_worker_death"]

_MARKERS = ("DataLoader worker", "pin memory thread", "DataLoader timed out")
_LOADERS: weakref.WeakSet[Any] = weakref.WeakSet()  # torch loaders with workers


def is_worker_failure(error: BaseException) -> bool:
    """Whether ``error`` is PyTorch reporting a failed or stuck DataLoader worker."""
    return (
        isinstance(error, RuntimeError)
        and not isinstance(error, LoaderWorkerError)
        and any(m in str(error) for m in _MARKERS)
    )


def _hint(loader: Any | None) -> str:
    if loader is None:
        return (
            "every loader's state_dict() still counts the batches it delivered; iterate "
            "again, or give loader.state_dict() to a new loader, to resume the epoch there"
        )
    return (
        f"{loader.batches_consumed} batches of epoch {loader.epoch} were delivered; iterate "
        "again, or give loader.state_dict() to a new loader, to resume the epoch from there"
    )


def surface_worker_death(it: Iterator[Any], loader: Any) -> Iterator[Any]:
    """DataLoader's iterator, with a dead or stuck worker turned into a LoaderWorkerError."""
    _LOADERS.add(loader)
    install_sigchld_translation()
    try:
        yield from it
    except RuntimeError as e:
        if not is_worker_failure(e):
            raise
        loader.close()
        raise LoaderWorkerError(
            f"a loader worker process died or stalled: {e}. {_hint(loader)}"
        ) from e


def install_sigchld_translation() -> None:
    """Wrap the SIGCHLD handler (see NOTE [worker death]); once, from the main thread."""
    if not hasattr(signal, "SIGCHLD") or threading.current_thread() is not threading.main_thread():
        return
    current = signal.getsignal(signal.SIGCHLD)
    if getattr(current, "_tfpathloader", False) or not callable(current):
        return  # already wrapped, or PyTorch has not installed its handler yet

    def handler(signum: int, frame: Any) -> None:
        try:
            current(signum, frame)
        except RuntimeError as e:
            if not is_worker_failure(e):
                raise
            for loader in list(_LOADERS):
                loader._workers_failed = True
            raise LoaderWorkerError(
                f"a loader worker process died or stalled: {e}. {_hint(None)}"
            ) from e

    handler._tfpathloader = True  # type: ignore[attr-defined]
    signal.signal(signal.SIGCHLD, handler)
