"""Concurrent reads of remote objects: many requests in flight, retries with backoff, counts."""

from __future__ import annotations

import logging
import os
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from .clients import FetchError, Transient, _Client, client_for
from .urls import redact

__all__ = ["FetchError", "Fetcher", "RemoteOptions", "shared_fetcher"]

log = logging.getLogger("tfpathloader.storage")
T = TypeVar("T")


@dataclass(frozen=True)
class RemoteOptions:
    """How remote images are read.

    Attributes:
        in_flight: Requests kept in flight per loader worker (per tf.data batch call). A batch's
            files are requested together, up to this many at once, and decoded in order. The
            default, 256, puts a whole 256-image batch in flight: at 50 ms per request that is
            up to ~5,000 images/s per worker (64 measured 0.45-0.58x of the 0 ms rate at 50 ms
            with 2 workers, 256 measured 0.87-1.00x: see benchmarks/remote_bench.py).
        timeout: Seconds one request may take, body included: a stalled connection fails
            after this long (and is retried).
        connect_timeout: Seconds to establish a connection.
        retries: Further attempts after a transient failure (timeout, connection reset, 5xx,
            429/503 throttling). 404, 403 and other 4xx are permanent and not retried.
        backoff: Seconds before the first retry; doubled per attempt (with a deterministic
            jitter of up to half), at most ``max_backoff``.
        max_backoff: The longest wait between attempts.
    """

    in_flight: int = 256
    timeout: float = 10.0
    connect_timeout: float = 5.0
    retries: int = 5
    backoff: float = 0.05
    max_backoff: float = 2.0

    def __post_init__(self) -> None:
        if not isinstance(self.in_flight, int) or self.in_flight < 1:
            raise ValueError(f"in_flight must be an integer >= 1, got {self.in_flight!r}")
        if not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries must be an integer >= 0, got {self.retries!r}")
        for name in ("timeout", "connect_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)!r}")
        for name in ("backoff", "max_backoff"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0 seconds, got {getattr(self, name)!r}")

    @property
    def worst_case_s(self) -> float:
        """The longest one read can take before it fails: every attempt times out."""
        waits = sum(min(self.max_backoff, self.backoff * 2.0**k) for k in range(self.retries))
        return (self.retries + 1) * (self.timeout + self.connect_timeout) + waits


# NOTE [retry counts]: counts are kept per Fetcher (one per process that reads: a loader
# worker, the tf.data host process) and handed out as deltas by take_stats(), which the loaders
# add into loader.remote_stats. Keys: requests (attempts made), retries, one key per transient
# kind (timeout, connection, throttled, server_error), and failed (records given up on).
class Fetcher:
    """Reads remote objects, ``options.in_flight`` at a time, retrying transient failures.

    Not fork-safe by design: use :func:`shared_fetcher` (one per process) or create one per
    process; its threads and connections belong to the process that made it.
    """

    def __init__(self, options: RemoteOptions | None = None):
        self.options = options or RemoteOptions()
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._stats: Counter[str] = Counter()
        self._pid = os.getpid()

    # -- counts ----------------------------------------------------------------------------

    def _count(self, key: str, k: int = 1) -> None:
        with self._lock:
            self._stats[key] += k

    def take_stats(self) -> dict[str, int]:
        """The counts since the last call (and reset them)."""
        with self._lock:
            out = dict(self._stats)
            self._stats.clear()
        return out

    # -- reads -----------------------------------------------------------------------------

    def _delay(self, url: str, attempt: int) -> float:
        o = self.options
        # Jitter from the URL and attempt: spreads retries of one batch apart, repeatably.
        frac = (zlib.crc32(f"{attempt}:{url}".encode()) & 0xFFFF) / 0xFFFF
        return float(min(o.max_backoff, o.backoff * 2**attempt) * (0.5 + 0.5 * frac))

    def fetch(self, url: str) -> bytes:
        """The object's bytes.

        Raises:
            FetchError: a permanent failure (its HTTP status), or transient ones on every attempt.
        """
        return self._retrying(url, lambda c: c.get(url))

    def head(self, url: str) -> dict[str, Any]:
        """The object's size, ETag and modification time (retried like :meth:`fetch`)."""
        return self._retrying(url, lambda c: c.head(url))

    def _retrying(self, url: str, op: Callable[[_Client], T]) -> T:
        o = self.options
        client = client_for(url, o)
        last: Transient | None = None
        for attempt in range(o.retries + 1):
            if attempt:
                self._count("retries")
                time.sleep(self._delay(url, attempt - 1))
            self._count("requests")
            try:
                return op(client)
            except Transient as e:
                self._count(e.kind)
                last = e
                log.debug("attempt %d of %s failed: %s", attempt + 1, redact(url), e.kind)
            except FetchError:
                self._count("failed")
                raise
        self._count("failed")
        assert last is not None
        raise FetchError(
            f"{last.detail} on all {o.retries + 1} attempts (retried with backoff)",
            status=last.status,
        )

    def _executor(self) -> ThreadPoolExecutor:
        if self._pid != os.getpid():
            raise RuntimeError("a Fetcher cannot be used in a forked child; make one there")
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                self.options.in_flight, thread_name_prefix="tfpathloader-fetch"
            )
        return self._pool

    def _many(self, op: Callable[[str], T], urls: Sequence[str]) -> list[T | FetchError]:
        """``op`` of every URL (or its :class:`FetchError`), in order, ``in_flight`` at once."""

        def one(url: str) -> T | FetchError:
            try:
                return op(url)
            except FetchError as e:
                return e

        if len(urls) <= 1:
            return [one(u) for u in urls]
        return list(self._executor().map(one, urls))

    def fetch_many(self, urls: Sequence[str]) -> list[bytes | FetchError]:
        """Every URL's bytes (or its :class:`FetchError`), in the order given.

        Up to ``in_flight`` requests run at once; results are put back in order, whatever
        order the responses arrive in.
        """
        return self._many(self.fetch, urls)

    def head_many(self, urls: Sequence[str]) -> list[dict[str, Any] | FetchError]:
        """Size, ETag and modification time of every object (or its error), in order."""
        return self._many(self.head, urls)

    def close(self) -> None:
        """Stop the threads (they also stop with the process)."""
        if self._pool is not None and self._pid == os.getpid():
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = None


_SHARED: dict[tuple[int, RemoteOptions], Fetcher] = {}
_SHARED_LOCK = threading.Lock()


def shared_fetcher(options: RemoteOptions | None = None) -> Fetcher:
    """This process's Fetcher for ``options`` (a new one in a forked child)."""
    key = (os.getpid(), options or RemoteOptions())
    with _SHARED_LOCK:
        f = _SHARED.get(key)
        if f is None:
            f = _SHARED[key] = Fetcher(key[1])
    return f
