"""On-disk cache of a parsed path index: memory-mapped numpy arrays beside the shards.

NOTE [cache validity]: a cache entry records, for every shard, its size, inode, mtime and ctime
(in nanoseconds). Rewriting a shard in place changes its ctime; replacing it (as every writer
here does) gives it a new inode. Either way the entry no longer matches and the index is parsed
again, so a rebuilt index is never read stale. Entries are written to a temporary folder and
renamed into place, so a reader never sees half an entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import warnings
from typing import Any

import numpy as np

__all__ = ["cache_dirs", "load", "shard_signature", "store"]

_VERSION = 2  # 2: the metadata holds the content fingerprint
_CACHE_FOLDER = ".tfpathloader-cache"
_ARRAYS = ("labels", "offsets", "paths")


def user_cache_dir() -> str:
    """The per-user cache folder (``$TFPATHLOADER_CACHE_DIR``, else ``$XDG_CACHE_HOME``)."""
    explicit = os.environ.get("TFPATHLOADER_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tfpathloader")


def cache_dirs(files: list[str]) -> list[str]:
    """Candidate cache folders, best first: beside the first shard, then the user cache."""
    return [os.path.join(os.path.dirname(files[0]), _CACHE_FOLDER), user_cache_dir()]


def shard_signature(files: list[str]) -> list[dict[str, Any]]:
    """What identifies the current content of each shard without reading it."""
    sig = []
    for f in files:
        st = os.stat(f)
        sig.append(
            {
                "file": f,
                "size": st.st_size,
                "ino": st.st_ino,
                "mtime_ns": st.st_mtime_ns,
                "ctime_ns": st.st_ctime_ns,
            }
        )
    return sig


def _entry_name(files: list[str]) -> str:
    key = hashlib.sha256(json.dumps([_VERSION, files]).encode()).hexdigest()[:20]
    stem = os.path.basename(files[0]).split(".")[0][:40]
    return f"{stem}-{key}"


def load(files: list[str]) -> tuple[dict[str, np.ndarray], dict[str, Any], str] | None:
    """Return ``(arrays, meta, folder)`` of a valid cache entry for ``files``, else ``None``.

    The arrays are read-only memory maps, so worker processes share their pages.
    """
    name = _entry_name(files)
    signature = shard_signature(files)
    for base in cache_dirs(files):
        folder = os.path.join(base, name)
        try:
            with open(os.path.join(folder, "meta.json")) as f:
                meta = json.load(f)
            if meta.get("version") != _VERSION or meta.get("shards") != signature:
                continue
            arrays = {
                k: np.load(os.path.join(folder, f"{k}.npy"), mmap_mode="r", allow_pickle=False)
                for k in _ARRAYS
            }
        except (OSError, ValueError):
            continue
        if (
            len(arrays["offsets"]) != meta["records"] + 1
            or len(arrays["labels"]) != meta["records"]
        ):
            continue
        return arrays, meta, folder
    return None


def store(
    files: list[str],
    signature: list[dict[str, Any]],
    arrays: dict[str, np.ndarray],
    meta: dict[str, Any],
) -> str | None:
    """Write a cache entry; returns its folder, or ``None`` (with a warning) if none is writable.

    ``signature`` must be taken *before* the shards were read, so that a shard changed while it
    was being parsed makes the entry stale instead of wrong.
    """
    name = _entry_name(files)
    meta = {**meta, "version": _VERSION, "shards": signature}
    errors = []
    for base in cache_dirs(files):
        folder = os.path.join(base, name)
        tmp = os.path.join(base, f".tmp-{os.getpid()}-{name}")
        try:
            os.makedirs(tmp, exist_ok=True)
            for k in _ARRAYS:
                np.save(os.path.join(tmp, f"{k}.npy"), np.ascontiguousarray(arrays[k]))
            with open(os.path.join(tmp, "meta.json"), "w") as f:
                json.dump(meta, f)
            _replace_dir(tmp, folder)
            return folder
        except OSError as e:
            errors.append(f"{base}: {e.strerror or e}")
            shutil.rmtree(tmp, ignore_errors=True)
    warnings.warn(
        "could not write the path-index cache (" + "; ".join(errors) + "); the index will be "
        "parsed again on every open. Set TFPATHLOADER_CACHE_DIR to a writable folder.",
        RuntimeWarning,
        stacklevel=3,
    )
    return None


def _replace_dir(tmp: str, folder: str) -> None:
    if os.path.exists(folder):
        trash = f"{folder}.old-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            os.replace(folder, trash)
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.replace(tmp, folder)
    except OSError:
        # Another process put an entry in place first; theirs is as good as ours.
        shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.isdir(folder):
            raise
