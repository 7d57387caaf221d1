"""URLs as index roots and image paths: recognizing, joining, splitting and redacting them."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["is_url", "join", "parent", "redact", "redact_text", "split"]

_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# A URL inside any text: scheme://, then anything up to whitespace or a quote.
_ANY_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def is_url(path: object) -> bool:
    """Whether ``path`` is a remote URL (``s3://``, ``gs://``, ``https://``, ...).

    ``file://`` URLs count as local paths and are not URLs here.
    """
    return isinstance(path, str) and bool(_URL_RE.match(path)) and not path.startswith("file://")


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


# NOTE [redaction]: credentials reach a URL as user:password@ or as query parameters
# (pre-signed URLs carry X-Amz-Signature, sig=, token=...). Every URL that goes into an error,
# a warning, a log line or a repr passes through redact(): userinfo becomes "***@" and every
# query value "***", so the URL still says which file it was and nothing that grants access.
# Credentials from the environment (AWS_SECRET_ACCESS_KEY, ...) are read by the client library
# only and never formatted into anything of ours.
def redact(url: str) -> str:
    """``url`` without credentials: no user info, no query values, no fragment."""
    if not is_url(url):
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = "&".join(q.split("=", 1)[0] + "=***" for q in parts.query.split("&") if q)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact_text(text: str) -> str:
    """``text`` with every URL in it redacted (see :func:`redact`)."""
    return _ANY_URL_RE.sub(lambda m: redact(m.group(0)), text)
