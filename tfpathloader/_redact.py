"""Credentials out of what we print: recognizing URLs, and redacting them in paths and text.

The bottom of the package (it imports nothing of ours), so that the errors can redact the
paths they name; :mod:`tfpathloader.storage` re-exports these names.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["is_url", "redact", "redact_text"]

_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# A URL inside any text: scheme://, then anything up to whitespace or a quote.
_ANY_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def is_url(path: object) -> bool:
    """Whether ``path`` is a remote URL (``s3://``, ``gs://``, ``https://``, ...).

    ``file://`` URLs count as local paths and are not URLs here.
    """
    return isinstance(path, str) and bool(_URL_RE.match(path)) and not path.startswith("file://")


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
