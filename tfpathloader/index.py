"""The path index: (index, label, path) records from TFRecord shards, held columnar.

Format (``DESIGN.md`` §3): each record is a ``tf.train.Example`` with ``index`` (int64, unique,
0..N-1 across all shards), ``label`` (int64, -1 if unlabeled) and ``path`` (bytes, UTF-8, relative
to the index root). The article's own files, whose path feature is ``path_string``, read too.
An optional ``label_name`` (bytes) feature carries the class names with the index.

In memory a :class:`PathIndex` is three numpy arrays, records ordered by id: ``labels`` (int64),
``offsets`` (int64, N+1) and ``paths`` (uint8, all relative paths back to back). That is
16 bytes per record plus the path bytes, never a Python list of str, and it is shared by worker
processes without copy-on-write growth (see :mod:`tfpathloader._cache`).
"""

from __future__ import annotations

import array
import contextlib
import glob as _glob
import multiprocessing as mp
import os
import posixpath
import re
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from . import _cache
from ._proto import Example
from ._records import RecordWriter, is_gzip, iter_records
from ._utils import progress_bar
from .errors import IndexFormatError

__all__ = [
    "IMAGE_EXTENSIONS",
    "PathIndex",
    "build_index",
    "encode_example",
    "resolve_index_files",
    "shard_names",
    "write_index",
]

INDEX_FEATURE = "index"
LABEL_FEATURE = "label"
LABEL_NAME_FEATURE = "label_name"
PATH_FEATURES = ("path", "path_string")  # ours, then the article's

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")

_MAX_LABEL = 2**31 - 1  # class ids index per-class arrays; larger ones are corruption
_SHARD_RE = re.compile(r"^(?P<stem>.+)-(?P<k>\d{5})-of-(?P<n>\d{5})\.tfrecord(\.gz)?$")


# --------------------------------------------------------------------------- file names


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
    counts: dict[str, set[str]] = {}
    for f in files:
        m = _SHARD_RE.match(os.path.basename(f))
        if m:
            counts.setdefault(os.path.join(os.path.dirname(f), m["stem"]), set()).add(m["n"])
    for stem, ns in counts.items():
        if len(ns) > 1:
            raise IndexFormatError(
                f"shards of {stem!r} from different writes are mixed "
                f"(of-{', of-'.join(sorted(ns))}); delete the stale ones or list the files"
            )


# --------------------------------------------------------------------------- records


def encode_example(
    index: int, label: int, path: str | bytes, label_name: str | None = None
) -> bytes:
    """Serialize one path-index record as a ``tf.train.Example``."""
    ex = Example()
    feat = ex.features.feature
    feat[INDEX_FEATURE].int64_list.value.append(int(index))
    feat[LABEL_FEATURE].int64_list.value.append(int(label))
    feat[PATH_FEATURES[0]].bytes_list.value.append(
        path.encode("utf-8") if isinstance(path, str) else path
    )
    if label_name is not None:
        feat[LABEL_NAME_FEATURE].bytes_list.value.append(label_name.encode("utf-8"))
    return ex.SerializeToString(deterministic=True)


def _escapes_root(rel: str) -> bool:
    if rel.startswith("/") or (len(rel) > 1 and rel[1] == ":"):
        return True
    # Without "..", normalizing cannot climb out (the common case: no normpath per record).
    return ".." in rel and posixpath.normpath(rel).split("/", 1)[0] == ".."


class _Parser:
    """Accumulates validated records of one index into compact arrays."""

    def __init__(self) -> None:
        self.ids = array.array("q")
        self.labels = array.array("q")
        self.offsets = array.array("q", [0])
        self.paths = bytearray()
        self.label_names: dict[int, str] = {}
        self.label_name_origin: dict[int, tuple[str, int]] = {}
        self.outside: tuple[str, int, str] | None = None
        self.shard_records: list[int] = []
        self.path_features: list[str] = []

    def parse_file(self, file: str, bar: Any | None) -> None:
        path_feature_used: str | None = None
        n = 0
        for n, data in enumerate(iter_records(file)):
            path_feature_used = self._parse_record(file, n, data, path_feature_used)
            if n & 1023 == 1023 and bar is not None:
                bar.update(1024)
        count = n + 1 if path_feature_used is not None else 0
        if bar is not None:
            bar.update(count & 1023 if count else 0)
        self.shard_records.append(count)
        self.path_features.append(path_feature_used or PATH_FEATURES[0])

    def _int(self, feat: Any, name: str, file: str, n: int) -> int:
        f = feat.get(name)
        if f is None:
            raise IndexFormatError(
                f"missing feature {name!r}: expected an int64 feature {name!r} with one value",
                file=file,
                record=n,
            )
        if f.WhichOneof("kind") != "int64_list" or len(f.int64_list.value) != 1:
            raise IndexFormatError(
                f"feature {name!r} is {_describe(f)}: expected int64_list with exactly one value",
                file=file,
                record=n,
            )
        return f.int64_list.value[0]

    def _parse_record(self, file: str, n: int, data: bytes, path_feature: str | None) -> str:
        try:
            ex = Example.FromString(data)
        except Exception as e:  # protobuf raises its own DecodeError
            raise IndexFormatError(
                f"record is not a tf.train.Example ({e})", file=file, record=n
            ) from None
        feat = ex.features.feature
        if path_feature is None or path_feature not in feat:
            path_feature = next((p for p in PATH_FEATURES if p in feat), None)
            if path_feature is None:
                raise IndexFormatError(
                    f"missing feature 'path': expected a bytes feature 'path' (or the article's "
                    f"'path_string'); the record has {sorted(feat.keys()) or 'no features'}",
                    file=file,
                    record=n,
                )
        idx = self._int(feat, INDEX_FEATURE, file, n)
        label = self._int(feat, LABEL_FEATURE, file, n)
        f = feat[path_feature]
        if f.WhichOneof("kind") != "bytes_list" or len(f.bytes_list.value) != 1:
            raise IndexFormatError(
                f"feature {path_feature!r} is {_describe(f)}: expected bytes_list with exactly "
                "one value",
                file=file,
                record=n,
            )
        raw = f.bytes_list.value[0]
        try:
            rel = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise IndexFormatError(
                f"path {raw!r} is not valid UTF-8 ({e.reason} at byte {e.start}): paths must be "
                "UTF-8 encoded",
                file=file,
                record=n,
            ) from None
        if not rel:
            raise IndexFormatError("path is empty: expected a file path", file=file, record=n)
        if "\x00" in rel:
            raise IndexFormatError(f"path {rel!r} contains a NUL byte", file=file, record=n)
        if self.outside is None and _escapes_root(rel):
            self.outside = (file, n, rel)
        if label < -1:
            raise IndexFormatError(
                f"label {label} is negative: expected a class id >= 0, or -1 for unlabeled",
                file=file,
                record=n,
            )
        if label > _MAX_LABEL:
            raise IndexFormatError(
                f"label {label} is implausibly large: expected a class id below 2**31",
                file=file,
                record=n,
            )
        if LABEL_NAME_FEATURE in feat:
            self._label_name(feat[LABEL_NAME_FEATURE], label, file, n)
        self.ids.append(idx)
        self.labels.append(label)
        self.paths += raw
        self.offsets.append(len(self.paths))
        return path_feature

    def _label_name(self, f: Any, label: int, file: str, n: int) -> None:
        if f.WhichOneof("kind") != "bytes_list" or len(f.bytes_list.value) != 1:
            raise IndexFormatError(
                f"feature 'label_name' is {_describe(f)}: expected bytes_list with one value",
                file=file,
                record=n,
            )
        self._name(label, f.bytes_list.value[0].decode("utf-8", errors="replace"), file, n)

    def _name(self, label: int, name: str, file: str, n: int) -> None:
        known = self.label_names.get(label)
        if known is None:
            self.label_names[label] = name
            self.label_name_origin[label] = (file, n)
        elif known != name:
            f0, n0 = self.label_name_origin[label]
            raise IndexFormatError(
                f"label {label} is named {name!r} here but {known!r} in {f0}, record {n0}: "
                "each label must have one name",
                file=file,
                record=n,
            )

    def merge(self, later: _Parser) -> None:
        """Take the label names and first outside path of ``later`` (the next shards)."""
        for label, name in later.label_names.items():
            self._name(label, name, *later.label_name_origin[label])
        self.outside = self.outside or later.outside
        self.shard_records += later.shard_records
        self.path_features += later.path_features


def _describe(f: Any) -> str:
    kind = f.WhichOneof("kind")
    if kind is None:
        return "empty"
    return f"{kind} with {len(getattr(f, kind).value)} values"


def _locate(record: int, files: list[str], counts: list[int]) -> tuple[str, int]:
    for f, c in zip(files, counts, strict=True):
        if record < c:
            return f, record
        record -= c
    raise AssertionError("record number beyond the index")


def _validate_ids(ids: np.ndarray, files: list[str], counts: list[int]) -> np.ndarray | None:
    """Check ids are 0..N-1, each once; return the order that sorts them (None if sorted)."""
    n = len(ids)
    if n == 0:
        raise IndexFormatError(
            f"the index is empty: {', '.join(files)} hold no records; expected at least one"
        )
    bad = np.flatnonzero((ids < 0) | (ids >= n))
    if len(bad) == 0:
        counts_per_id = np.bincount(ids, minlength=n)
        dup = np.flatnonzero(counts_per_id > 1)
        if len(dup) == 0:
            if np.all(ids[1:] > ids[:-1]):
                return None
            return np.argsort(ids, kind="stable")
        where = [_locate(int(r), files, counts) for r in np.flatnonzero(ids == dup[0])[:2]]
        missing = np.flatnonzero(counts_per_id == 0)
        raise IndexFormatError(
            f"duplicate id {int(dup[0])}: also in {where[0][0]}, record {where[0][1]} "
            f"({len(dup)} ids are duplicated, {len(missing)} of 0..{n - 1} are missing); "
            "ids must be unique and cover 0..N-1 across all shards",
            file=where[1][0],
            record=where[1][1],
        )
    f, r = _locate(int(bad[0]), files, counts)
    present = np.zeros(n, dtype=bool)
    ok = ids[(ids >= 0) & (ids < n)]
    present[ok] = True
    missing = np.flatnonzero(~present)
    raise IndexFormatError(
        f"id {int(ids[bad[0]])} is out of range: {n} records need ids 0..{n - 1}, each once "
        f"({len(missing)} ids are missing, first {missing[:5].tolist()})",
        file=f,
        record=r,
    )


def _gather_paths(
    paths: np.ndarray, offsets: np.ndarray, order: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Reorder a packed path buffer by ``order``, in chunks to bound temporary memory."""
    lengths = np.diff(offsets)[order]
    new_offsets = np.zeros(len(order) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    out = np.empty(int(new_offsets[-1]), dtype=np.uint8)
    chunk = 1 << 20
    for s in range(0, len(order), chunk):
        o = order[s : s + chunk]
        ln = lengths[s : s + chunk]
        src_start = np.repeat(offsets[o] - new_offsets[s : s + chunk + 1][:-1], ln)
        dst = np.arange(new_offsets[s], new_offsets[min(s + chunk, len(order))], dtype=np.int64)
        out[dst] = paths[dst + src_start]
    return out, new_offsets


# --------------------------------------------------------------------------- the index


class PathIndex:
    """The records of a path index, ordered by id: ``index.path(i)`` is record ``i``'s file.

    Build one with :meth:`read` (from TFRecord shards) or :meth:`from_paths` (in memory).

    Attributes:
        root: Absolute folder the relative paths are resolved against.
        files: The shard files it was read from (empty when built in memory).
        classes: Class names by label, when the index carries them (else ``None``).
    """

    def __init__(
        self,
        *,
        labels: np.ndarray,
        offsets: np.ndarray,
        paths: np.ndarray,
        root: str,
        files: Sequence[str] = (),
        classes: Sequence[str] | None = None,
        meta: dict[str, Any] | None = None,
        cache_folder: str | None = None,
    ):
        if len(offsets) != len(labels) + 1:
            raise ValueError("offsets must have one entry more than labels")
        # Plain ndarray views of (possibly memory-mapped) arrays: slicing a np.memmap is slow.
        self._labels = _plain(labels)
        self._offsets = _plain(offsets)
        self._paths = _plain(paths)
        self._path_view = self._paths.data  # a memoryview: slicing it is cheap
        self.root = os.path.abspath(root)
        self.files = tuple(files)
        self.classes = tuple(classes) if classes is not None else None
        self._meta = meta or {}
        self._cache_folder = cache_folder
        self._ids: np.ndarray | None = None

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def read(
        cls,
        source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        root: str | os.PathLike[str] | None = None,
        allow_outside_root: bool = False,
        cache: bool = True,
        progress: bool | None = None,
    ) -> PathIndex:
        """Read a path index from a file, a list of files or a glob.

        Args:
            source: ``"data/index.tfrecord"``, ``["a.tfrecord", "b.tfrecord"]`` or
                ``"data/index-*.tfrecord"``; GZIP files are recognized by their content.
            root: Folder the paths are relative to; defaults to the folder holding the index.
            allow_outside_root: Accept absolute paths and paths climbing out of ``root``.
            cache: Use (and write) the memory-mapped cache beside the shards, or in the user
                cache folder when the shards' folder is read-only.
            progress: Show a progress bar while parsing (``None``: only on a terminal).

        Raises:
            IndexFormatError: naming the file and record, for any malformed input.
        """
        files = resolve_index_files(source)
        if root is None:
            dirs = {os.path.dirname(f) for f in files}
            if len(dirs) > 1:
                raise ValueError(
                    f"the shards are in different folders ({sorted(dirs)}); pass root= to say "
                    "which folder their paths are relative to"
                )
            root = dirs.pop()
        hit = _cache.load(files) if cache else None
        folder: str | None
        if hit is not None:
            arrays, meta, folder = hit
        else:
            signature = _cache.shard_signature(files)
            arrays, meta = _parse(files, progress)
            folder = _cache.store(files, signature, arrays, meta) if cache else None
            if folder is not None:
                # Serve the memory-mapped copy: its pages are shared by worker processes.
                hit = _cache.load(files)
                if hit is not None:
                    arrays, meta, folder = hit
        outside = meta.get("outside")
        if outside and not allow_outside_root:
            f, r, rel = outside
            raise IndexFormatError(
                f"path {rel!r} leaves the index root {os.path.abspath(root)!r} (it is absolute "
                "or climbs out with '..'); pass allow_outside_root=True "
                "(--allow-outside-root) if that is intended",
                file=f,
                record=r,
            )
        classes = meta.get("classes")
        return cls(
            labels=arrays["labels"],
            offsets=arrays["offsets"],
            paths=arrays["paths"],
            root=os.fspath(root),
            files=files,
            classes=classes,
            meta=meta,
            cache_folder=folder,
        )

    @classmethod
    def from_paths(
        cls,
        paths: Sequence[str],
        labels: Sequence[int] | np.ndarray | None = None,
        *,
        root: str | os.PathLike[str],
        classes: Sequence[str] | None = None,
        allow_outside_root: bool = False,
    ) -> PathIndex:
        """An in-memory index; record ``i`` is ``paths[i]`` (relative to ``root``)."""
        rel = _relative_paths(paths, os.fspath(root), allow_outside_root)
        offsets, buf = _pack(rel)
        lab = _labels_array(labels, len(rel))
        return cls(labels=lab, offsets=offsets, paths=buf, root=os.fspath(root), classes=classes)

    # -- access ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._labels)

    def __repr__(self) -> str:
        src = self.files[0] if len(self.files) == 1 else f"{len(self.files)} shards"
        return f"PathIndex({len(self)} records, {src!s}, root={self.root!r})"

    @property
    def ids(self) -> np.ndarray:
        """Record ids (int64): ``0..N-1``, since records are held ordered by id."""
        if self._ids is None:
            ids = np.arange(len(self), dtype=np.int64)
            ids.flags.writeable = False
            self._ids = ids
        return self._ids

    @property
    def labels(self) -> np.ndarray:
        """Labels by record id (int64, read-only; -1 for unlabeled records)."""
        return self._labels

    @property
    def offsets(self) -> np.ndarray:
        """Start of each record's path in :attr:`path_buffer` (int64, N+1 entries)."""
        return self._offsets

    @property
    def path_buffer(self) -> np.ndarray:
        """All relative paths as UTF-8 bytes, back to back (uint8)."""
        return self._paths

    @property
    def cache_folder(self) -> str | None:
        """Where the memory-mapped arrays live, if they came from (or went to) the cache."""
        return self._cache_folder

    @property
    def num_classes(self) -> int:
        """Number of classes: the class names' count, else the largest label + 1."""
        if self.classes is not None:
            return len(self.classes)
        return int(self._labels.max()) + 1 if len(self) else 0

    def _check(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"record {i} is out of range for an index of {n} records")
        return i % n

    def relpath(self, i: int) -> str:
        """Record ``i``'s path as stored (relative to :attr:`root`)."""
        i = self._check(int(i))
        a, b = self._offsets[i : i + 2].tolist()
        return self._path_view[a:b].tobytes().decode("utf-8")

    def path(self, i: int) -> str:
        """Record ``i``'s absolute path (the root joined with the stored relative path)."""
        return os.path.join(self.root, self.relpath(i))

    def paths(self, ids: Sequence[int] | np.ndarray) -> list[str]:
        """Absolute paths of many records at once (faster than :meth:`path` in a loop)."""
        ids = np.asarray(ids, dtype=np.int64)
        n = len(self)
        if ids.size and (ids.min() < 0 or ids.max() >= n):
            raise IndexError(f"record ids must lie in [0, {n})")
        starts = self._offsets[ids].tolist()
        ends = self._offsets[ids + 1].tolist()
        view, prefix = self._path_view, os.path.join(self.root, "")
        rels = [view[a:b].tobytes().decode("utf-8") for a, b in zip(starts, ends, strict=True)]
        # Concatenation is 5x faster than os.path.join; absolute paths (outside the root,
        # when allowed) stand alone, as os.path.join would leave them.
        return [rel if rel[0] == "/" else prefix + rel for rel in rels]

    def label_counts(self) -> np.ndarray:
        """Records per label (length :attr:`num_classes`; unlabeled records not counted)."""
        lab = np.asarray(self._labels)
        return np.bincount(lab[lab >= 0], minlength=self.num_classes).astype(np.int64)

    def label_name(self, label: int) -> str:
        """The class name of ``label`` (its number as text when the index has no names)."""
        if self.classes is not None and 0 <= label < len(self.classes):
            return self.classes[label]
        return str(label)

    def nbytes(self) -> int:
        """Bytes the index holds (labels, offsets and path bytes)."""
        return int(self._labels.nbytes + self._offsets.nbytes + self._paths.nbytes)

    def info(self) -> dict[str, Any]:
        """A JSON-able summary: records, shards, label histogram, root, sizes."""
        counts = self.label_counts()
        hist = {self.label_name(k): int(c) for k, c in enumerate(counts)}
        unlabeled = int(np.count_nonzero(np.asarray(self._labels) < 0))
        size = sum(os.path.getsize(f) for f in self.files) if self.files else 0
        return {
            "records": len(self),
            "shards": len(self.files),
            "files": list(self.files),
            "compression": self._meta.get("compression"),
            "root": self.root,
            "num_classes": self.num_classes,
            "classes": list(self.classes) if self.classes is not None else None,
            "label_counts": hist,
            "unlabeled": unlabeled,
            "size_bytes": size,
            "path_bytes": int(self._paths.nbytes),
            "memory_bytes": self.nbytes(),
            "cache": self._cache_folder,
        }

    # -- pickling: workers re-map the cache instead of receiving a copy ---------------------

    @property
    def memory_mapped(self) -> bool:
        """Whether the arrays are memory-mapped from the cache (shared between processes)."""
        return _is_mapped(self._paths)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_ids"] = None
        state["_path_view"] = None
        if self._cache_folder is not None and self.memory_mapped:
            for k in ("_labels", "_offsets", "_paths"):
                state[k] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._labels is None:
            folder = self._cache_folder
            assert folder is not None
            for attr, name in (("_labels", "labels"), ("_offsets", "offsets"), ("_paths", "paths")):
                arr: np.ndarray = np.load(os.path.join(folder, f"{name}.npy"), mmap_mode="r")
                setattr(self, attr, _plain(arr))
        self._path_view = self._paths.data


def _plain(arr: np.ndarray) -> np.ndarray:
    """``arr`` as a base ndarray (a view, no copy), read-only."""
    out = arr.view(np.ndarray) if isinstance(arr, np.memmap) else arr
    if out.flags.writeable:
        out = out.view()
        out.flags.writeable = False
    return out


def _is_mapped(arr: np.ndarray) -> bool:
    import mmap

    base: Any = arr
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    return isinstance(base, mmap.mmap)


# NOTE [parallel parse]: parsing is about 5 us per record of Python and protobuf, so a large
# sharded index is parsed one shard per process, as many processes as cores (only the first
# open: later opens map the cache). Records, label names and errors are merged in shard order,
# so the result is the one a single process makes. A forked process costs tens of
# milliseconds: small indexes, and single shards, are parsed in this process.
_PARALLEL_MIN_BYTES = 16 << 20


def _parse_shard(file: str) -> _Parser:
    parser = _Parser()
    parser.parse_file(file, None)
    return parser


def _parsed_shards(files: list[str], bar: Any) -> Iterator[_Parser]:
    """A parser per shard, in order (in parallel processes when it pays: NOTE above)."""
    workers = _workers(len(files), sum(os.path.getsize(f) for f in files), _PARALLEL_MIN_BYTES)
    if not workers:
        for f in files:
            parser = _Parser()
            parser.parse_file(f, bar)
            yield parser
        return
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
        for parser in pool.map(_parse_shard, files):
            bar.update(parser.shard_records[0])
            yield parser


def _int64s(values: array.array) -> np.ndarray:
    return np.frombuffer(values, dtype=np.int64) if len(values) else np.zeros(0, np.int64)


def _parse(files: list[str], progress: bool | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    merged = _Parser()
    ids: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    offsets: list[np.ndarray] = []
    paths: list[bytearray] = []
    base = 0
    with progress_bar(progress, desc="reading path index", unit=" records") as bar:
        for parser in _parsed_shards(files, bar):
            merged.merge(parser)
            ids.append(_int64s(parser.ids))
            labels.append(_int64s(parser.labels))
            offsets.append(_int64s(parser.offsets)[:-1] + base)
            paths.append(parser.paths)
            base += len(parser.paths)
    all_ids = np.concatenate(ids)
    all_labels = np.concatenate(labels)
    all_offsets = np.concatenate([*offsets, np.array([base], dtype=np.int64)])
    all_paths = np.frombuffer(b"".join(paths), dtype=np.uint8)
    order = _validate_ids(all_ids, files, merged.shard_records)
    if order is not None:
        all_labels = all_labels[order]
        all_paths, all_offsets = _gather_paths(all_paths, all_offsets, order)
    classes = None
    if merged.label_names:
        n_classes = int(all_labels.max()) + 1
        missing = [k for k in range(n_classes) if k not in merged.label_names]
        if not missing:
            classes = [merged.label_names[k] for k in range(n_classes)]
    meta = {
        "records": len(all_labels),
        "shard_records": merged.shard_records,
        "path_features": merged.path_features,
        "compression": "gzip" if any(is_gzip(f) for f in files) else None,
        "classes": classes,
        "outside": list(merged.outside) if merged.outside else None,
    }
    return {"labels": all_labels, "offsets": all_offsets, "paths": all_paths}, meta


def _pack(rel: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Relative paths as (offsets, one UTF-8 byte buffer): the columnar layout."""
    encoded = [p.encode("utf-8") for p in rel]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in encoded], out=offsets[1:])
    return offsets, np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()


def _labels_array(labels: Sequence[int] | np.ndarray | None, n: int) -> np.ndarray:
    if labels is None:
        return np.full(n, -1, dtype=np.int64)
    lab = np.asarray(labels, dtype=np.int64)
    if lab.shape != (n,):
        raise ValueError(f"labels must have one entry per path ({n}), got shape {lab.shape}")
    if n and lab.min() < -1:
        raise ValueError(f"labels must be >= 0 (or -1 for unlabeled), got {int(lab.min())}")
    return lab


def _relative_paths(paths: Iterable[str], root: str, allow_outside_root: bool) -> list[str]:
    root_abs = os.path.abspath(root)
    out = []
    for i, p in enumerate(paths):
        p = os.fspath(p)
        if not p:
            raise ValueError(f"path {i} is empty")
        rel = os.path.relpath(p, root_abs) if os.path.isabs(p) else p
        rel = rel.replace(os.sep, "/")
        if _escapes_root(rel):
            if not allow_outside_root:
                raise ValueError(
                    f"path {i} ({p!r}) is outside the index root {root_abs!r}; put the index in "
                    "a folder that contains the images, or pass allow_outside_root=True"
                )
            rel = os.path.abspath(os.path.join(root_abs, p)) if not os.path.isabs(p) else p
        out.append(rel)
    return out


# --------------------------------------------------------------------------- writing


def write_index(
    out: str | os.PathLike[str],
    paths: Sequence[str],
    labels: Sequence[int] | np.ndarray | None = None,
    *,
    root: str | os.PathLike[str] | None = None,
    shards: int = 1,
    compression: str | None = None,
    classes: Sequence[str] | None = None,
    allow_outside_root: bool = False,
    progress: bool | None = None,
    cache: bool = True,
) -> PathIndex:
    """Write a path index (record ``i`` = ``paths[i]``) and return it, opened.

    Shards hold contiguous id ranges. They are written under temporary names and renamed into
    place only when all are complete, so an error or Ctrl-C leaves the previous index (if any)
    untouched; shards of an earlier write with another shard count are then removed.

    Args:
        out: ``data/index.tfrecord``; with ``shards=4`` the files are
            ``data/index-00000-of-00004.tfrecord`` ... (``.tfrecord.gz`` with GZIP).
        paths: Image paths, absolute or relative to ``root``.
        labels: Class id per path (``None``: all -1, unlabeled).
        root: Folder the stored paths are relative to; defaults to the folder of ``out``.
        shards: Number of files.
        compression: ``None`` or ``"gzip"``.
        classes: Class names by label; stored as a ``label_name`` feature on each record.
        allow_outside_root: Store paths outside ``root`` (as absolute paths).
        progress: Show a progress bar (``None``: only on a terminal).
        cache: Also write the parsed-index cache, so the first open is instant.
    """
    out = os.path.abspath(os.fspath(out))
    root = os.path.abspath(os.fspath(root)) if root is not None else os.path.dirname(out)
    if compression not in (None, "gzip"):
        raise ValueError(f"compression must be None or 'gzip', got {compression!r}")
    rel = _relative_paths(paths, root, allow_outside_root)
    n = len(rel)
    if n == 0:
        raise ValueError("cannot write an empty path index: no paths were given")
    lab = _labels_array(labels, n)
    if classes is not None and lab.max() >= len(classes):
        raise ValueError(f"label {int(lab.max())} has no name in classes (of {len(classes)})")
    shards = min(shards, n)
    names = shard_names(out, shards, compression=compression)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    stale = [f for f in _sibling_shards(out) if f not in names]
    bounds = [n * k // shards for k in range(shards + 1)]
    jobs: list[_ShardJob] = [
        (
            name,
            compression,
            rel[bounds[k] : bounds[k + 1]],
            lab[bounds[k] : bounds[k + 1]],
            classes,
            bounds[k],
        )
        for k, name in enumerate(names)
    ]
    finished: list[str] = []
    try:
        with progress_bar(progress, desc="writing path index", unit=" records", total=n) as bar:
            for tmp in _written_shards(jobs, bar):
                finished.append(tmp)
        for tmp, name in zip(finished, names, strict=True):  # all complete: into place
            os.replace(tmp, name)
    except BaseException:
        for tmp in finished:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    for f in stale:
        os.unlink(f)
    if not cache:
        return PathIndex.read(names, root=root, allow_outside_root=allow_outside_root, cache=False)
    return _open_fresh(
        names, root, rel, lab, classes, compression, allow_outside_root, shards, bounds
    )


# (shard file, compression, relative paths, labels, class names, id of the first record)
_ShardJob = tuple[str, str | None, Sequence[str], np.ndarray, Sequence[str] | None, int]


def _write_shard(job: _ShardJob, bar: Any | None = None) -> str:
    """Write one shard under a temporary name (returned); nothing is left behind on failure."""
    name, compression, rel, labels, classes, first_id = job
    w = RecordWriter(name, compression=compression)
    try:
        for k, (path, label) in enumerate(zip(rel, labels.tolist(), strict=True)):
            label_name = classes[label] if classes is not None and label >= 0 else None
            w.write(encode_example(first_id + k, label, path, label_name))
            if bar is not None and k & 8191 == 8191:
                bar.update(8192)
        if bar is not None:
            bar.update(len(rel) & 8191)
        return w.finish()
    except BaseException:
        w.abort()
        raise


# Shards are written by parallel processes (one per core) from this many records: encoding is
# about 3 us per record, a forked process tens of milliseconds (see NOTE [parallel parse]).
_PARALLEL_MIN_RECORDS = 200_000


def _written_shards(jobs: list[_ShardJob], bar: Any) -> Iterator[str]:
    """The temporary file of every shard, in order (written in parallel when it pays)."""
    workers = _workers(len(jobs), sum(len(job[2]) for job in jobs), _PARALLEL_MIN_RECORDS)
    if not workers:
        for job in jobs:
            yield _write_shard(job, bar)
        return
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"))
    futures = [pool.submit(_write_shard, job) for job in jobs]
    handed_out = 0
    try:
        for job, future in zip(jobs, futures, strict=True):
            tmp = future.result()
            bar.update(len(job[2]))
            handed_out += 1
            yield tmp
    finally:
        for future in futures:
            future.cancel()
        pool.shutdown(wait=True)
        # After a failure: shards other workers completed meanwhile, never handed out.
        for future in futures[handed_out:]:
            if future.done() and not future.cancelled() and future.exception() is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(future.result())


def _workers(shards: int, work: int, min_work: int) -> int:
    """Processes for ``shards`` shards of ``work`` in all: one per core, or 0 to stay in this
    process (one core or shard, too little work, no fork, or a daemon such as a loader worker).
    """
    workers = min(shards, os.cpu_count() or 1)
    if workers < 2 or work < min_work or "fork" not in mp.get_all_start_methods():
        return 0
    return 0 if mp.current_process().daemon else workers


def _open_fresh(
    names: list[str],
    root: str,
    rel: list[str],
    lab: np.ndarray,
    classes: Sequence[str] | None,
    compression: str | None,
    allow_outside_root: bool,
    shards: int,
    bounds: list[int],
) -> PathIndex:
    """Store the cache from the arrays already in memory, then open the index through it."""
    files = [os.path.abspath(f) for f in names]
    offsets, paths = _pack(rel)
    outside = next(
        (
            (files[_shard_of(i, bounds)], i - bounds[_shard_of(i, bounds)], p)
            for i, p in enumerate(rel)
            if _escapes_root(p)
        ),
        None,
    )
    meta = {
        "records": len(rel),
        "shard_records": [bounds[k + 1] - bounds[k] for k in range(shards)],
        "path_features": [PATH_FEATURES[0]] * shards,
        "compression": compression,
        "classes": list(classes) if classes is not None else None,
        "outside": list(outside) if outside else None,
    }
    arrays = {"labels": lab, "offsets": offsets, "paths": paths}
    _cache.store(files, _cache.shard_signature(files), arrays, meta)
    return PathIndex.read(files, root=root, allow_outside_root=allow_outside_root)


def _shard_of(i: int, bounds: list[int]) -> int:
    return int(np.searchsorted(bounds, i, side="right")) - 1


# --------------------------------------------------------------------------- building


def build_index(
    image_root: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    shards: int = 1,
    compression: str | None = None,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    unlabeled: bool = False,
    progress: bool | None = None,
) -> tuple[PathIndex, dict[str, Any]]:
    """Index the images under ``image_root``: one class per sub-folder, in sorted order.

    Class sub-folders are visited in sorted order and files within them in sorted order
    (recursively), so the same tree always gives the same index. Labels are the positions of
    the class folders in that order; their names travel with the index.

    Args:
        image_root: Folder with one sub-folder per class (or any tree, with ``unlabeled``).
        out: Index file; defaults to ``IMAGE_ROOT/index.tfrecord``. Paths are stored relative
            to its folder, which must therefore contain the images.
        shards, compression, progress: As for :func:`write_index`.
        extensions: File name endings counted as images (case-insensitive).
        unlabeled: Index every image under ``image_root`` with label -1.

    Returns:
        The opened index, and a report: counts of images and of files left out and why.
    """
    image_root = os.path.abspath(os.fspath(image_root))
    if not os.path.isdir(image_root):
        raise FileNotFoundError(f"image folder {image_root!r} does not exist")
    out = (
        os.path.abspath(os.fspath(out))
        if out is not None
        else os.path.join(image_root, "index.tfrecord")
    )
    index_dir = os.path.dirname(out)
    if os.path.commonpath([index_dir, image_root]) != index_dir:
        raise ValueError(
            f"the index folder {index_dir!r} does not contain the images under {image_root!r}; "
            "paths are stored relative to the index folder, so write the index inside the "
            "image folder (the default) or one of its parents"
        )
    exts = tuple(e.lower() for e in extensions)
    paths: list[str] = []
    labels: list[int] = []
    skipped: dict[str, int] = {"not an image extension": 0, "not in a class folder": 0}
    examples: dict[str, list[str]] = {k: [] for k in skipped}

    def skip(reason: str, path: str) -> None:
        skipped[reason] += 1
        if len(examples[reason]) < 5:
            examples[reason].append(path)

    with progress_bar(progress, desc="finding images", unit=" files") as bar:
        if unlabeled:
            groups = [(-1, image_root)]
            classes: list[str] | None = None
        else:
            entries = sorted(os.scandir(image_root), key=lambda e: e.name)
            classes = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
            for e in entries:
                if e.is_file() and not e.name.startswith("."):
                    skip("not in a class folder", e.path)
            groups = [(k, os.path.join(image_root, c)) for k, c in enumerate(classes)]
        for label, folder in groups:
            for dirpath, dirnames, filenames in os.walk(folder):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for fname in sorted(filenames):
                    if fname.startswith("."):
                        continue
                    full = os.path.join(dirpath, fname)
                    if not fname.lower().endswith(exts):
                        if not full.endswith((".tfrecord", ".tfrecord.gz")):
                            skip("not an image extension", full)
                        continue
                    paths.append(full)
                    labels.append(label)
                    bar.update(1)
    if not paths:
        raise ValueError(
            f"no images found under {image_root!r} (looked for {', '.join(exts)} files"
            + ("" if unlabeled else " inside class sub-folders")
            + ")"
        )
    index = write_index(
        out,
        paths,
        labels,
        shards=shards,
        compression=compression,
        classes=classes,
        progress=progress,
    )
    report = {
        "images": len(paths),
        "classes": len(classes) if classes is not None else 0,
        "skipped": skipped,
        "skipped_examples": examples,
        "files": list(index.files),
    }
    return index, report
