"""URLs as index roots and image paths: recognizing, joining, splitting and redacting them.

Recognizing and redacting live at the bottom of the package (:mod:`tfpathloader._redact`, NOTE
[redaction]), where the errors can use them; they are re-exported here.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .._redact import is_url, redact, redact_text

__all__ = ["is_url", "join", "parent", "redact", "redact_text", "split"]


def join(root: str, rel: str) -> str:
    """``root + "/" + rel`` (no normalization: the root rule was checked on ``rel``)."""
    return root.rstrip("/") + "/" + rel


def parent(url: str) -> str:
    """The URL's "folder": everything before its last ``/`` (the scheme's ``//`` excluded)."""
    scheme, rest = url.split("://", 1)
    head, _, _ = rest.rstrip("/").rpartition("/")
    return f"{scheme}://{head}" if head else f"{scheme}://{rest.rstrip('/')}"


def split(url: str) -> tuple[str, str, str]:
    """``(scheme, authority, key)``: ``s3://bkt/a/b.png`` -> ``("s3", "bkt", "a/b.png")``."""
    parts = urlsplit(url)
    key = parts.path.lstrip("/")
    if parts.query:
        key += "?" + parts.query
    return parts.scheme.lower(), parts.netloc, key
