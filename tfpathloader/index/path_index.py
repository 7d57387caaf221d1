"""PathIndex: the records of a path index held columnar (labels, offsets, path bytes)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import IndexFormatError
from ..storage.urls import is_url, redact
from . import _cache
from .names import resolve_index_files
from .parse import _labels_array, _pack, _parse, _relative_paths, content_fingerprint

# NOTE [label range]: a label is -1 (unlabeled) or a class id in [0, 2**31 - 1]; the parser
# refuses anything else (naming file and record). Statistics never allocate by the largest
# label: one corrupt label of 2**31 - 1 among ten records must not ask for a 16 GB array, so
# histograms come from np.unique and the dense label_counts() refuses very sparse labels.
_DENSE_LABELS = 1 << 20


class PathIndex:
    """The records of a path index, ordered by id: ``index.path(i)`` is record ``i``'s file.

    Build one with :meth:`read` (from TFRecord shards) or :meth:`from_paths` (in memory).

    Attributes:
        root: Absolute folder (or URL) the relative paths are resolved against.
        files: The shard files it was read from (empty when built in memory).
        classes: Class names by label, when the index carries them (else ``None``).
        allow_outside_root: Whether it was opened allowing paths (and symlinks) that lead
            outside :attr:`root`; loaders and ``verify`` follow it unless told otherwise.
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
        allow_outside_root: bool = False,
    ):
        if len(offsets) != len(labels) + 1:
            raise ValueError("offsets must have one entry more than labels")
        # Plain ndarray views of (possibly memory-mapped) arrays: slicing a np.memmap is slow.
        self._labels = _plain(labels)
        self._offsets = _plain(offsets)
        self._paths = _plain(paths)
        self._path_view = self._paths.data  # a memoryview: slicing it is cheap
        # A URL root (s3://, https://...) stays as given: paths are root + "/" + relpath.
        self.root = root.rstrip("/") if is_url(root) else os.path.abspath(root)
        self.files = tuple(files)
        self.classes = tuple(classes) if classes is not None else None
        self._meta = dict(meta or {})
        self._cache_folder = cache_folder
        self._ids: np.ndarray | None = None
        self.allow_outside_root = bool(allow_outside_root)

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
            root: Folder (or URL) the paths are relative to; defaults to the folder holding
                the index. ``source`` may be a URL (``s3://bucket/train/index.tfrecord``):
                its shards are downloaded once per content and cached; the root is then
                the URL's folder.
            allow_outside_root: Accept absolute paths and paths climbing out of ``root``.
            cache: Use (and write) the memory-mapped cache beside the shards, or in the user
                cache folder when the shards' folder is read-only.
            progress: Show a progress bar while parsing (``None``: only on a terminal).

        Raises:
            IndexFormatError: naming the file and record, for any malformed input.
        """
        if _is_remote_source(source):
            # NOTE [remote index]: shards are downloaded into the user cache under a name
            # made from their URL and their current ETag, size and modification time (one HEAD
            # each), so a changed remote shard is fetched again, never read stale; the local
            # copies are then parsed and cached like local shards.
            from .remote import download_index

            source, url_root = download_index(source)
            root = url_root if root is None else root
        files = resolve_index_files(source)
        if root is None:
            dirs = {os.path.dirname(f) for f in files}
            if len(dirs) > 1:
                raise ValueError(
                    f"the shards are in different folders ({sorted(dirs)}); pass root= to say "
                    "which folder their paths are relative to"
                )
            root = dirs.pop()
        hit: tuple[dict[str, np.ndarray], dict[str, Any], str | None] | None
        hit = _cache.load(files) if cache else None
        if hit is None:
            signature = _cache.shard_signature(files)
            arrays, meta = _parse(files, progress)
            folder = _cache.store(files, signature, arrays, meta) if cache else None
            # Serve the memory-mapped copy: its pages are shared by worker processes.
            hit = (_cache.load(files) if folder else None) or (arrays, meta, folder)
        arrays, meta, folder = hit
        root = os.fspath(root)
        if meta.get("outside") and (not allow_outside_root or is_url(root)):
            f, r, rel = meta["outside"]
            if is_url(root):  # a URL root is never left (a server normalizes '..')
                shown, how = redact(root), "with a URL root every path must stay inside it"
            else:
                shown = os.path.abspath(root)
                how = "pass allow_outside_root=True (--allow-outside-root) if that is intended"
            raise IndexFormatError(
                f"path {rel!r} leaves the index root {shown!r} (it is absolute or climbs out "
                f"with '..'); {how}",
                file=f,
                record=r,
            )
        return cls(
            labels=arrays["labels"],
            offsets=arrays["offsets"],
            paths=arrays["paths"],
            root=root,
            files=files,
            classes=meta.get("classes"),
            meta=meta,
            cache_folder=folder,
            allow_outside_root=allow_outside_root,
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
        return cls(
            labels=lab,
            offsets=offsets,
            paths=buf,
            root=os.fspath(root),
            classes=classes,
            allow_outside_root=allow_outside_root,
        )

    # -- access ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._labels)

    def __repr__(self) -> str:
        src = self.files[0] if len(self.files) == 1 else f"{len(self.files)} shards"
        return f"PathIndex({len(self)} records, {src!s}, root={redact(self.root)!r})"

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
    def fingerprint(self) -> str:
        """A hash of the index content (ids, labels, paths), for resume states.

        Read from the cache's metadata (computed once at parse time); an index built in
        memory computes it on first use.
        """
        fp = self._meta.get("fingerprint")
        if fp is None:
            fp = content_fingerprint(self._labels, self._offsets, self._paths)
            self._meta["fingerprint"] = fp
        return str(fp)

    @property
    def cache_folder(self) -> str | None:
        """Where the memory-mapped arrays live, if they came from (or went to) the cache."""
        return self._cache_folder

    @property
    def num_classes(self) -> int:
        """Number of classes: the class names' count, else the largest label + 1.

        Labels are -1 (unlabeled) or class ids in ``[0, 2**31 - 1]`` (see NOTE [label range]).
        """
        if self.classes is not None:
            return len(self.classes)
        return int(self._labels.max()) + 1 if len(self) else 0

    def relpath(self, i: int) -> str:
        """Record ``i``'s path as stored (relative to :attr:`root`)."""
        i, n = int(i), len(self)
        if not -n <= i < n:
            raise IndexError(f"record {i} is out of range for an index of {n} records")
        i %= n
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

    def label_histogram(self) -> dict[int, int]:
        """Records per label present, ascending (unlabeled records not counted).

        Found with ``np.unique``: memory grows with the number of records, never with the size
        of the largest label (see NOTE [label range]).
        """
        lab = np.asarray(self._labels)
        values, counts = np.unique(lab[lab >= 0], return_counts=True)
        return {int(v): int(c) for v, c in zip(values.tolist(), counts.tolist(), strict=True)}

    def label_counts(self) -> np.ndarray:
        """Records per label, ``0 .. num_classes - 1`` (unlabeled records not counted).

        Raises:
            ValueError: when the labels are too sparse for a dense array (a largest label far
                beyond the number of records); use :meth:`label_histogram` then.
        """
        k = self.num_classes
        if k > max(_DENSE_LABELS, 4 * len(self)):
            raise ValueError(
                f"labels are sparse (num_classes {k:,} for {len(self):,} records): a dense "
                "count per label would not fit; use label_histogram()"
            )
        counts = np.zeros(k, dtype=np.int64)
        for label, c in self.label_histogram().items():
            if label < k:
                counts[label] = c
        return counts

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
        present = self.label_histogram()
        if self.classes is not None:  # named classes are listed even when empty
            present = {k: present.get(k, 0) for k in range(len(self.classes))} | present
        hist = {self.label_name(k): c for k, c in sorted(present.items())}
        unlabeled = int(np.count_nonzero(np.asarray(self._labels) < 0))
        size = sum(os.path.getsize(f) for f in self.files) if self.files else 0
        return {
            "records": len(self),
            "shards": len(self.files),
            "files": list(self.files),
            "compression": self._meta.get("compression"),
            "root": redact(self.root),
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


def _is_remote_source(source: Any) -> bool:
    if isinstance(source, (str, os.PathLike)):
        return is_url(os.fspath(source))
    return any(is_url(os.fspath(s)) for s in source)


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
