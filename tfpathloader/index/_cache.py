"""On-disk cache of a parsed path index: memory-mapped numpy arrays beside the shards.

NOTE [cache validity]: a cache entry records, for every shard, its size, inode, mtime and ctime
(in nanoseconds). Rewriting a shard in place changes its ctime; replacing it (as every writer
here does) gives it a new inode. Either way the entry no longer matches and the index is parsed
again, so a rebuilt index is never read stale. Entries are written to a temporary folder and
renamed into place, so a reader never sees half an entry.

NOTE [cache integrity]: a cache entry is trusted only after its arrays pass strict dtype and
shape checks and their CRC-32 checksums match the ones written with them: two bytes flipped
in ``labels.npy`` (same size, same mtime after a careless copy) or labels saved as float64
otherwise give wrong labels and paths, silently. A mismatch is rebuilt from the shards, with
a warning. zlib.crc32 runs at about 2.7 GB/s here, so checking costs a read of the arrays at
open (measured at 10 million records: see the README). Temporary folders of writers that
died (SIGKILL mid-write) are removed by the next process that opens or writes the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

__all__ = ["cache_dirs", "load", "shard_signature", "store"]

_VERSION = 4  # 2: array checks in meta; 3: the content fingerprint; 4: CRC-32 per 32 MiB
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
    stats = [(f, os.stat(f)) for f in files]
    return [
        {"file": f, **{k: getattr(st, f"st_{k}") for k in ("size", "ino", "mtime_ns", "ctime_ns")}}
        for f, st in stats
    ]


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
        remove_dead_temporaries(base)
        folder = os.path.join(base, name)
        try:
            with open(os.path.join(folder, "meta.json")) as f:
                meta = json.load(f)
        except (OSError, ValueError):
            continue
        if not isinstance(meta, dict) or meta.get("version") != _VERSION:
            continue
        if meta.get("shards") != signature:
            continue  # stale: the shards changed; rebuilt silently
        try:
            arrays = {
                k: np.load(os.path.join(folder, f"{k}.npy"), mmap_mode="r", allow_pickle=False)
                for k in _ARRAYS
            }
            problem = verify_arrays(arrays, meta)
        except (OSError, ValueError) as e:
            problem = f"unreadable array ({e})"
        if problem is not None:
            warnings.warn(
                f"the path-index cache {folder} is corrupt ({problem}); it is rebuilt from "
                "the shards",
                RuntimeWarning,
                stacklevel=3,
            )
            continue
        return arrays, meta, folder
    return None


# -- integrity (NOTE [cache integrity]) ------------------------------------------------------

_DTYPES = {"labels": "<i8", "offsets": "<i8", "paths": "|u1"}


_CHUNK = 32 * 2**20  # CRC-32 per 32 MiB piece, so that pieces are checked in parallel


def _crc32s(arrays: list[np.ndarray]) -> list[list[int]]:
    """CRC-32 of every 32 MiB piece of each array, computed by a few threads (zlib.crc32
    releases the GIL), so that checking a large cache takes a fraction of a read per core."""
    views = [np.ascontiguousarray(a).reshape(-1).view(np.uint8) for a in arrays]
    pieces = [(k, v[s : s + _CHUNK]) for k, v in enumerate(views) for s in range(0, len(v), _CHUNK)]
    workers = min(8, os.cpu_count() or 1, max(1, len(pieces)))
    with ThreadPoolExecutor(workers) as pool:
        crcs = list(pool.map(lambda piece: zlib.crc32(piece[1].data), pieces))
    out: list[list[int]] = [[] for _ in arrays]
    for (k, _), crc in zip(pieces, crcs, strict=True):
        out[k].append(crc)
    return out


def array_checks(arrays: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Dtype, shape and CRC-32 of each cached array, stored in the entry's meta."""
    arrs = [np.asarray(arrays[k]) for k in _ARRAYS]
    return {
        k: {"dtype": a.dtype.str, "shape": list(a.shape), "crc32": crc}
        for k, a, crc in zip(_ARRAYS, arrs, _crc32s(arrs), strict=True)
    }


def verify_arrays(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> str | None:
    """Why the arrays of a cache entry cannot be trusted, or ``None`` if they can."""
    n = meta.get("records")
    checks = meta.get("arrays")
    if not isinstance(n, int) or not isinstance(checks, dict):
        return "meta.json lacks the record count or the array checks"
    offsets, paths = arrays["offsets"], arrays["paths"]
    expected = {"labels": (n,), "offsets": (n + 1,), "paths": None}
    for k in _ARRAYS:
        arr = arrays[k]
        if arr.dtype.str != _DTYPES[k]:
            return f"{k}.npy holds {arr.dtype}, expected {np.dtype(_DTYPES[k])}"
        shape = expected[k]
        if arr.ndim != 1 or (shape is not None and arr.shape != shape):
            return f"{k}.npy has shape {arr.shape}, expected {shape or '(bytes,)'}"
    if len(offsets) and (int(offsets[0]) != 0 or int(offsets[-1]) != len(paths)):
        return "offsets.npy does not span paths.npy"
    for k, crc in zip(_ARRAYS, _crc32s([arrays[k] for k in _ARRAYS]), strict=True):
        want = checks.get(k)
        if not isinstance(want, dict) or want.get("crc32") != crc:
            return f"{k}.npy fails its CRC-32 checksum"
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


_STALE_AFTER_S = 24 * 3600  # a live pid may be a new process: very old folders go anyway


def remove_dead_temporaries(base: str) -> None:
    """Remove ``.tmp-PID-*`` / ``*.old-PID`` folders whose writer is dead (or a day old)."""
    try:
        names = os.listdir(base)
    except OSError:
        return
    now = time.time()
    for name in names:
        if name.startswith(".tmp-"):
            pid_text = name[5:].split("-", 1)[0]
        elif ".old-" in name:
            pid_text = name.rsplit(".old-", 1)[1]
        else:
            continue
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        path = os.path.join(base, name)
        try:
            old = now - os.stat(path).st_mtime > _STALE_AFTER_S
        except OSError:
            continue
        if old or not _pid_alive(int(pid_text)):
            shutil.rmtree(path, ignore_errors=True)


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
    meta = {**meta, "version": _VERSION, "shards": signature, "arrays": array_checks(arrays)}
    errors = []
    for base in cache_dirs(files):
        remove_dead_temporaries(base)
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
