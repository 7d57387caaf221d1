"""Index file names: shard naming; a file, list, glob or sharded name; complete shard sets."""

from __future__ import annotations

import glob as _glob
import os
import re
from collections.abc import Sequence

from ..errors import IndexFormatError

_SHARD_RE = re.compile(r"^(?P<stem>.+)-(?P<k>\d{5})-of-(?P<n>\d{5})\.tfrecord(\.gz)?$")


def shard_names(out: str, shards: int, *, compression: str | None = None) -> list[str]:
    """File names a ``shards``-way index written to ``out`` gets.

    One shard keeps ``out`` itself (``data/index.tfrecord``); more become
    ``data/index-00000-of-00004.tfrecord`` and so on.
    """
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    suffix = ".tfrecord.gz" if compression == "gzip" else ".tfrecord"
    stem = _stem(out)
    if shards == 1:
        if out.endswith((".tfrecord", ".tfrecord.gz")):
            return [out]
        return [stem + suffix]
    return [f"{stem}-{k:05d}-of-{shards:05d}{suffix}" for k in range(shards)]


def _stem(path: str) -> str:
    for ext in (".tfrecord.gz", ".tfrecord", ".gz"):
        if path.endswith(ext):
            return path[: -len(ext)]
    return path


def _sibling_shards(path: str) -> list[str]:
    """Every shard of the index named ``path``, whatever its shard count."""
    stem = _stem(path)
    found = [path] if os.path.isfile(path) else []
    for f in _glob.glob(_glob.escape(stem) + "-*-of-*.tfrecord*"):
        m = _SHARD_RE.match(os.path.basename(f))
        if m and os.path.join(os.path.dirname(f), m["stem"]) == stem:
            found.append(f)
    for ext in (".tfrecord", ".tfrecord.gz"):
        if stem + ext != path and os.path.isfile(stem + ext):
            found.append(stem + ext)
    return sorted(set(found))


def _folder_hint(folder: str) -> str:
    """The error for a folder given where an index is expected: name the index inside it."""
    found = {
        os.path.join(folder, m["stem"] + ".tfrecord" if (m := _SHARD_RE.match(f)) else f)
        for f in os.listdir(folder)
        if f.endswith((".tfrecord", ".tfrecord.gz")) and os.path.isfile(os.path.join(folder, f))
    }
    # "index.tfrecord" (what `index build` writes) first; the demo's images.tfrecord is not one.
    names = sorted(found, key=lambda n: (os.path.basename(n) != "index.tfrecord", n))
    if names:
        shown = " or ".join(repr(n) for n in names[:3])
        return f"{folder!r} is a folder, not a path index; did you mean {shown}?"
    return (
        f"{folder!r} is a folder with no path index in it; build one from its class "
        f"sub-folders with: tfpathloader index build {folder}"
    )


def resolve_index_files(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> list[str]:
    """Absolute shard paths for a file, a list of files, or a glob.

    A file name that does not exist but whose shards do (``index.tfrecord`` ->
    ``index-00000-of-00004.tfrecord`` ...) resolves to those shards.

    Raises:
        IndexFormatError: if nothing matches, or shard sets are mixed.
    """
    if isinstance(source, (str, os.PathLike)):
        spec = os.fspath(source)
        if os.path.isfile(spec):
            files = [spec]
        elif _glob.has_magic(spec):
            files = sorted(f for f in _glob.glob(spec) if os.path.isfile(f))
            if not files:
                raise IndexFormatError(f"no files match the glob {spec!r}")
        elif os.path.isdir(spec):
            raise IndexFormatError(_folder_hint(spec))
        else:
            files = [f for f in _sibling_shards(spec) if f != spec]
            if not files:
                raise IndexFormatError(
                    f"no path index at {spec!r} (no such file, and no shards named "
                    f"{os.path.basename(_stem(spec))}-NNNNN-of-NNNNN.tfrecord beside it)"
                )
    else:
        files = [os.fspath(f) for f in source]
        if not files:
            raise IndexFormatError("the list of index files is empty")
        for f in files:
            if not os.path.isfile(f):
                raise IndexFormatError(f"no such index file: {f!r}")
    files = [os.path.abspath(f) for f in files]
    if len(set(files)) != len(files):
        raise IndexFormatError(f"the same shard is listed twice in {files}")
    _check_shard_set(files)
    return files


def _check_shard_set(files: list[str]) -> None:
    """Every ``-k-of-N`` set named must be whole: one N, each k in 0..N-1 present once.

    NOTE [complete shard sets]: a half-synced mirror or a shard deleted by hand otherwise
    reads as a smaller index without a word (7 classes of 10). A set is recognized by its
    stem; the files given must hold all of its shards. A listed shard that is missing from
    disk is named, so the error says what to copy.
    """
    sets: dict[str, dict[str, set[int]]] = {}
    for f in files:
        m = _SHARD_RE.match(os.path.basename(f))
        if m:
            stem = os.path.join(os.path.dirname(f), m["stem"])
            sets.setdefault(stem, {}).setdefault(m["n"], set()).add(int(m["k"]))
    for stem, by_n in sets.items():
        if len(by_n) > 1:
            raise IndexFormatError(
                f"shards of {stem!r} from different writes are mixed "
                f"(of-{', of-'.join(sorted(by_n))}); delete the stale ones or list the files"
            )
        ((n_text, ks),) = by_n.items()
        n = int(n_text)
        bad = sorted(k for k in ks if k >= n)
        if n < 1 or bad:
            raise IndexFormatError(
                f"shard {bad[0] if bad else 0:05d}-of-{n_text} of {stem!r} cannot exist "
                f"(shard numbers run from 0 to N-1)"
            )
        missing = [k for k in range(n) if k not in ks]
        if missing:
            suffix = ".tfrecord.gz" if any(f.endswith(".gz") for f in files) else ".tfrecord"
            names = [f"{stem}-{k:05d}-of-{n_text}{suffix}" for k in missing]
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            raise IndexFormatError(
                f"the shard set is incomplete: {len(missing)} of {n} shards missing: "
                f"{', '.join(names[:3])}{more}; a partial copy would read as a smaller index",
                file=names[0],
            )
