"""Images and indexes in object storage: URLs, the client, concurrent reads, retries, redaction."""

from __future__ import annotations

from .clients import FetchError
from .fetch import Fetcher, RemoteOptions, shared_fetcher
from .urls import is_url, join, parent, redact, redact_text

__all__ = [
    "FetchError",
    "Fetcher",
    "RemoteOptions",
    "is_url",
    "join",
    "parent",
    "read_url",
    "redact",
    "redact_text",
    "shared_fetcher",
]


def read_url(url: str, record_id: int = -1, options: RemoteOptions | None = None) -> bytes:
    """The bytes at ``url``; an ``ImageLoadError`` naming the record, URL (redacted) and cause."""
    from ..errors import ImageLoadError

    try:
        return shared_fetcher(options).fetch(url)
    except FetchError as e:
        raise ImageLoadError(record_id, redact(url), e.cause) from None
