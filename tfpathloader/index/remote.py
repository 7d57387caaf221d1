"""Remote path indexes (s3://, gs://, https://): shards fetched into a local cache by content."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

from ..errors import IndexFormatError
from ..storage import FetchError, RemoteOptions, shared_fetcher
from ..storage.clients import list_prefix
from ..storage.urls import is_url, parent, redact
from ._cache import user_cache_dir
from .names import _SHARD_RE, _stem

__all__ = ["download_index"]


def _remote_files(source: Any, options: RemoteOptions) -> tuple[list[str], list[Any] | None]:
    """The shard URLs of a URL, a list of URLs, or a glob/sharded name in a listable store."""
    if not isinstance(source, (str, os.PathLike)):
        urls = [os.fspath(s) for s in source]
        if not all(is_url(u) for u in urls):
            raise IndexFormatError("an index list must be all URLs or all local paths")
        return urls, None
    url = os.fspath(source)
    name = url.rsplit("/", 1)[1]
    is_glob = any(c in name for c in "*?[")
    if not is_glob:
        head = shared_fetcher(options).head_many([url])[0]
        if not isinstance(head, FetchError):
            return [url], [head]
        if head.status != 404:
            raise IndexFormatError(f"cannot read the index: {head.cause}", file=redact(url))
    # A glob, or a name whose shards exist (index.tfrecord -> index-00000-of-00004.tfrecord).
    try:
        listed = [u for u, _ in list_prefix(parent(url), options)]
    except ValueError:
        raise IndexFormatError(
            "no path index at this URL, and an http(s) server cannot be listed to find its "
            "shards; name each shard",
            file=redact(url),
        ) from None
    if is_glob:
        files = [u for u in listed if fnmatch.fnmatchcase(u.rsplit("/", 1)[1], name)]
    else:
        stem = _stem(name)
        files = [
            u
            for u in listed
            if (m := _SHARD_RE.match(u.rsplit("/", 1)[1])) is not None and m["stem"] == stem
        ]
    if not files:
        raise IndexFormatError("no path index (or shards of one) at this URL", file=redact(url))
    return sorted(files), None


def download_index(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    options: RemoteOptions | None = None,
) -> tuple[list[str], str]:
    """Local copies of a remote index's shards (fetched only when new or changed), and its root.

    Each shard is stored as ``<cache>/remote/<hash of URL and its HEAD>/<name>``: a shard whose
    ETag, size or modification time changed gets a new name, so it is downloaded again.
    """
    options = options or RemoteOptions()
    urls, heads = _remote_files(source, options)
    roots = {parent(u) for u in urls}
    if len(roots) > 1:
        raise ValueError("the shards are under different prefixes; pass root= to say which")
    fetcher = shared_fetcher(options)
    heads = heads or fetcher.head_many(urls)
    local = []
    for url, head in zip(urls, heads, strict=True):
        if isinstance(head, FetchError):
            raise IndexFormatError(f"cannot read the index shard: {head.cause}", file=redact(url))
        key = hashlib.sha256(json.dumps([url, head], sort_keys=True).encode()).hexdigest()[:24]
        folder = os.path.join(user_cache_dir(), "remote", key)
        path = os.path.join(folder, url.rsplit("/", 1)[1])
        if not os.path.isfile(path) or os.path.getsize(path) != head["size"]:
            try:
                data = fetcher.fetch(url)
            except FetchError as e:
                raise IndexFormatError(
                    f"cannot read the index shard: {e.cause}", file=redact(url)
                ) from None
            if len(data) != head["size"]:
                raise IndexFormatError(
                    f"the shard changed while it was read ({len(data)} bytes, expected "
                    f"{head['size']}); read the index again",
                    file=redact(url),
                )
            os.makedirs(folder, exist_ok=True)
            tmp = f"{path}.tmp-{os.getpid()}"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        local.append(path)
    return local, roots.pop()
