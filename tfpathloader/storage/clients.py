"""The object-store client (obstore) behind one small interface, with failures classified.

NOTE [client choice]: obstore (Rust's object_store: reqwest + tokio) was measured against
urllib3 / requests thread pools and fsspec's aiohttp HTTPFileSystem on 127.0.0.1 with 64
requests in flight (benchmarks/remote_clients.py): it spends the least client CPU per request
(222 us vs 235 fsspec, 477 urllib3, 866 requests), releases the GIL for the whole request, and
speaks s3://, gs://, az:// and http(s):// from one wheel with no dependencies. Its own retries
are turned off: retries, backoff and their counts are ours (fetch.py), the same for every scheme.
"""

from __future__ import annotations

import datetime
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from .urls import split

__all__ = ["FetchError", "Transient", "client_for", "list_prefix", "put"]


class FetchError(Exception):
    """A read that failed for good: a permanent status (404, 403, ...) or retries used up.

    Attributes:
        cause: What failed, without the URL (callers name the URL, redacted).
        status: The HTTP status, if there was one.
    """

    def __init__(self, cause: str, *, status: int | None = None):
        super().__init__(cause)
        self.cause = cause
        self.status = status


class Transient(Exception):
    """A failure worth retrying. ``kind``: timeout, connection, throttled or server_error."""

    def __init__(self, kind: str, detail: str, status: int | None = None):
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.status = status


_STATUS_RE = re.compile(r"status code: (\d{3})")
_REASONS = {401: "unauthorized", 403: "permission denied", 404: "not found", 410: "gone"}


def _classify(e: BaseException, timeout: float, elapsed: float) -> Exception:
    """obstore's exception as a :class:`FetchError` (permanent) or :class:`Transient`."""
    text = str(e)
    m = _STATUS_RE.search(text)
    named = {"PermissionDeniedError": 403, "UnauthenticatedError": 401}
    status = 404 if isinstance(e, FileNotFoundError) else int(m.group(1)) if m else None
    status = status or named.get(type(e).__name__)
    if status is not None:
        if status in (429, 503):
            return Transient("throttled", f"HTTP {status} (throttled)", status)
        if status >= 500 or status == 408:
            return Transient("server_error", f"HTTP {status} (server error)", status)
        reason = _REASONS.get(status, "client error")
        return FetchError(f"HTTP {status} ({reason})", status=status)
    # (The debug text always names the "retry_timeout" setting: look for the error's kind.)
    if "kind: Timeout" in text or "timed out" in text or elapsed >= 0.95 * timeout:
        return Transient("timeout", f"timed out after {timeout:g} s")
    return Transient("connection", "connection failed or was reset")


class _Client:
    """One store (a bucket, or an HTTP host) and how to read from it."""

    def __init__(self, store: Any, timeout: float):
        self.store = store
        self.timeout = timeout

    def _call(self, op: Callable[..., Any], url: str) -> Any:
        t0 = time.monotonic()
        try:
            return op(self.store, split(url)[2])
        except Exception as e:
            raise _classify(e, self.timeout, time.monotonic() - t0) from None

    def get(self, url: str) -> bytes:
        import obstore

        # The body is read inside the call: a stalled body is a timeout like a stalled header.
        return self._call(lambda store, key: bytes(obstore.get(store, key).bytes()), url)

    def head(self, url: str) -> dict[str, Any]:
        import obstore

        meta = self._call(obstore.head, url)
        mtime = meta.get("last_modified")
        return {
            "size": int(meta["size"]),
            "etag": meta.get("e_tag"),
            "mtime": mtime.isoformat() if mtime is not None else None,
        }


_CLIENTS: dict[tuple[Any, ...], _Client] = {}
_LOCK = threading.Lock()


def _make_store(scheme: str, netloc: str, options: Any) -> Any:
    try:
        import obstore.store as st
    except ImportError:
        raise ImportError("remote paths need obstore: pip install 'tfpathloader[remote]'") from None
    retry: Any = {"max_retries": 0, "retry_timeout": datetime.timedelta(seconds=options.timeout)}
    client: Any = {
        "timeout": f"{int(options.timeout * 1000)}ms",
        "connect_timeout": f"{int(options.connect_timeout * 1000)}ms",
        "pool_max_idle_per_host": str(max(64, options.in_flight)),
    }
    if scheme in ("http", "https"):
        client["allow_http"] = True
        if "@" in netloc:
            raise FetchError("user:password@ in http URLs is not supported; use a token header")
        return st.HTTPStore.from_url(
            f"{scheme}://{netloc}", client_options=client, retry_config=retry
        )
    if scheme == "s3":
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint and endpoint.startswith("http://"):
            client["allow_http"] = True
        return st.S3Store(netloc, client_options=client, retry_config=retry)
    if scheme in ("gs", "gcs"):
        return st.GCSStore(netloc, client_options=client, retry_config=retry)
    if scheme in ("az", "abfs", "abfss", "azure"):
        return st.from_url(f"{scheme}://{netloc}", client_options=client, retry_config=retry)
    raise FetchError(f"unsupported URL scheme {scheme!r}; supported: s3, gs, az, http, https")


def client_for(url: str, options: Any) -> _Client:
    """This process's client for the URL's store (created on first use)."""
    scheme, netloc, _ = split(url)
    key = (os.getpid(), scheme, netloc, options.timeout, options.connect_timeout)
    with _LOCK:
        c = _CLIENTS.get(key)
        if c is None:
            c = _CLIENTS[key] = _Client(_make_store(scheme, netloc, options), options.timeout)
    return c


def list_prefix(url: str, options: Any) -> list[tuple[str, int]]:
    """``(url, size)`` of every object under the prefix ``url``, sorted by URL."""
    import obstore

    scheme, netloc, key = split(url)
    if scheme in ("http", "https"):
        raise ValueError("an http(s) server cannot be listed; index the files where they are")
    store = client_for(url, options).store
    prefix = key.rstrip("/") + "/" if key else None
    out = []
    for chunk in obstore.list(store, prefix=prefix):
        for meta in chunk:
            out.append((f"{scheme}://{netloc}/{meta['path']}", int(meta["size"])))
    return sorted(out)


def put(url: str, data: bytes, options: Any) -> None:
    """Write ``data`` to ``url`` (for writing an index next to remote images)."""
    import obstore

    obstore.put(client_for(url, options).store, split(url)[2], data)
