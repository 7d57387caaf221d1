"""Parsing path-index records: validation of every Example, in parallel processes per shard."""

from __future__ import annotations

import array
import hashlib
import multiprocessing as mp
import os
import posixpath
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from .._utils import progress_bar
from ..errors import IndexFormatError
from ..storage.urls import is_url, redact
from ._proto import Example
from ._records import is_gzip, iter_records

INDEX_FEATURE = "index"
LABEL_FEATURE = "label"
LABEL_NAME_FEATURE = "label_name"
PATH_FEATURES = ("path", "path_string")  # ours, then the article's
_MAX_LABEL = 2**31 - 1  # class ids index per-class arrays; larger ones are corruption


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
            try:
                path_feature_used = self._parse_record(file, n, data, path_feature_used)
            except _Bad as e:
                raise IndexFormatError(str(e), file=file, record=n) from None
            if n & 1023 == 1023 and bar is not None:
                bar.update(1024)
        count = n + 1 if path_feature_used is not None else 0
        if bar is not None:
            bar.update(count & 1023 if count else 0)
        self.shard_records.append(count)
        self.path_features.append(path_feature_used or PATH_FEATURES[0])

    def _parse_record(self, file: str, n: int, data: bytes, path_feature: str | None) -> str:
        try:
            ex = Example.FromString(data)
        except Exception as e:  # protobuf raises its own DecodeError
            raise _Bad(f"record is not a tf.train.Example ({e})") from None
        feat = ex.features.feature
        if path_feature is None or path_feature not in feat:
            path_feature = next((p for p in PATH_FEATURES if p in feat), None)
            if path_feature is None:
                raise _Bad(
                    f"missing feature 'path': expected a bytes feature 'path' (or the article's "
                    f"'path_string'); the record has {sorted(feat.keys()) or 'no features'}"
                )
        idx = _value(feat, INDEX_FEATURE, "int64_list")
        label = _value(feat, LABEL_FEATURE, "int64_list")
        raw = _value(feat, path_feature, "bytes_list")
        try:
            rel = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _Bad(
                f"path {raw!r} is not valid UTF-8 ({e.reason} at byte {e.start}): paths must be "
                "UTF-8 encoded"
            ) from None
        if not rel:
            raise _Bad("path is empty: expected a file path")
        if "\x00" in rel:
            raise _Bad(f"path {rel!r} contains a NUL byte")
        if self.outside is None and _escapes_root(rel):
            self.outside = (file, n, rel)
        if label < -1:
            raise _Bad(f"label {label} is negative: expected a class id >= 0, or -1 for unlabeled")
        if label > _MAX_LABEL:
            raise _Bad(f"label {label} is implausibly large: expected a class id below 2**31")
        if LABEL_NAME_FEATURE in feat:
            name = _value(feat, LABEL_NAME_FEATURE, "bytes_list")
            name = name.decode("utf-8", errors="replace")
            self._name(label, name, file, n)
        self.ids.append(idx)
        self.labels.append(label)
        self.paths += raw
        self.offsets.append(len(self.paths))
        return path_feature

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


class _Bad(Exception):
    """What is wrong with a record; :meth:`_Parser.parse_file` names the file and record."""


def _value(feat: Any, name: str, kind: str) -> Any:
    """The one value of feature ``name``, of ``kind`` (``int64_list``, ``bytes_list``)."""
    f = feat.get(name)
    if f is None:
        raise _Bad(f"missing feature {name!r}: expected {kind} feature {name!r} with one value")
    got = f.WhichOneof("kind")
    if got != kind or len(getattr(f, kind).value) != 1:
        got = f"{got} with {len(getattr(f, got).value)} values" if got else "empty"
        raise _Bad(f"feature {name!r} is {got}: expected {kind} with exactly one value")
    return getattr(f, kind).value[0]


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
    per_id = np.bincount(ids[(ids >= 0) & (ids < n)], minlength=n)
    missing = np.flatnonzero(per_id == 0)
    if len(bad):
        f, r = _locate(int(bad[0]), files, counts)
        raise IndexFormatError(
            f"id {int(ids[bad[0]])} is out of range: {n} records need ids 0..{n - 1}, each once "
            f"({len(missing)} ids are missing, first {missing[:5].tolist()})",
            file=f,
            record=r,
        )
    dup = np.flatnonzero(per_id > 1)
    if len(dup):
        first, again = (_locate(int(r), files, counts) for r in np.flatnonzero(ids == dup[0])[:2])
        raise IndexFormatError(
            f"duplicate id {int(dup[0])}: also in {first[0]}, record {first[1]} "
            f"({len(dup)} ids are duplicated, {len(missing)} of 0..{n - 1} are missing); "
            "ids must be unique and cover 0..N-1 across all shards",
            file=again[0],
            record=again[1],
        )
    return None if np.all(ids[1:] > ids[:-1]) else np.argsort(ids, kind="stable")


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
        "fingerprint": content_fingerprint(all_labels, all_offsets, all_paths),
        "records": len(all_labels),
        "shard_records": merged.shard_records,
        "path_features": merged.path_features,
        "compression": "gzip" if any(is_gzip(f) for f in files) else None,
        "classes": classes,
        "outside": list(merged.outside) if merged.outside else None,
    }
    return {"labels": all_labels, "offsets": all_offsets, "paths": all_paths}, meta


def content_fingerprint(labels: np.ndarray, offsets: np.ndarray, paths: np.ndarray) -> str:
    """A hash of an index's content: ids (implied by the order), labels and paths.

    Computed once when the shards are parsed and kept in the cache's metadata, so opening a
    cached index costs nothing; resume states carry it (NOTE [resume state]) so that a state
    of another dataset with the same number of records is refused. BLAKE2b of the columnar
    arrays: about 1 s per GB, a few percent of the parse it rides along with.
    """
    h = hashlib.blake2b(digest_size=16, person=b"tfpathloader-ix")
    h.update(np.int64(len(labels)).tobytes())
    for arr in (labels, offsets - offsets[0] if len(offsets) else offsets, paths):
        h.update(np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).data)
    return "blake2b:" + h.hexdigest()


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
    if n and lab.max() > _MAX_LABEL:
        raise ValueError(f"labels must be below 2**31 (class ids), got {int(lab.max())}")
    return lab


def _relative_paths(paths: Iterable[str], root: str, allow_outside_root: bool) -> list[str]:
    """Paths as stored: relative to ``root``; absolute where one may leave a local root."""
    url = is_url(root)
    root = root.rstrip("/") if url else os.path.abspath(root)
    out = []
    for i, p in enumerate(map(os.fspath, paths)):
        if url:  # a URL root is never left (see path_index)
            rel = p[len(root) + 1 :] if p.startswith(root + "/") else p
            if not rel or is_url(rel) or _escapes_root(rel):
                raise ValueError(
                    f"path {i} ({redact(p)!r}) is outside the index root {redact(root)!r}; with "
                    "a URL root every path must be relative to it and stay inside it"
                )
        elif not p:
            raise ValueError(f"path {i} is empty")
        else:
            rel = (os.path.relpath(p, root) if os.path.isabs(p) else p).replace(os.sep, "/")
            if _escapes_root(rel):
                if not allow_outside_root:
                    raise ValueError(
                        f"path {i} ({p!r}) is outside the index root {root!r}; put the index in "
                        "a folder that contains the images, or pass allow_outside_root=True"
                    )
                rel = p if os.path.isabs(p) else os.path.abspath(os.path.join(root, p))
        out.append(rel)
    return out


def _workers(shards: int, work: int, min_work: int) -> int:
    """Processes for ``shards`` shards of ``work`` in all: one per core, or 0 to stay in this
    process (one core or shard, too little work, no fork, or a daemon such as a loader worker).
    """
    workers = min(shards, os.cpu_count() or 1)
    if workers < 2 or work < min_work or "fork" not in mp.get_all_start_methods():
        return 0
    return 0 if mp.current_process().daemon else workers
