"""Building a path index from a tree of class folders: a local folder or a listable URL prefix."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

from .._utils import progress_bar
from ..storage import RemoteOptions
from ..storage.clients import list_prefix, put
from ..storage.urls import is_url, parent, redact
from .path_index import PathIndex
from .write import write_index

__all__ = ["IMAGE_EXTENSIONS", "build_index"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


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
    the class folders in that order; their names travel with the index. Names starting with
    ``.`` are left out.

    Args:
        image_root: Folder with one sub-folder per class (or any tree, with ``unlabeled``), or
            a listable URL prefix (``s3://bucket/train``, ``gs://...``): then the index is
            written to ``IMAGE_ROOT/index.tfrecord`` in the store, or to a local ``out``
            (read it with ``root=IMAGE_ROOT``).
        out: Index file; defaults to ``IMAGE_ROOT/index.tfrecord``. Paths are stored relative
            to its folder, which must therefore contain the images.
        shards, compression, progress: As for :func:`write_index`.
        extensions: File name endings counted as images (case-insensitive).
        unlabeled: Index every image under ``image_root`` with label -1.

    Returns:
        The opened index, and a report: counts of images and of files left out and why.
    """
    root = os.fspath(image_root)
    remote = is_url(root)
    if remote:
        root = root.rstrip("/")
        target = os.fspath(out) if out is not None else root + "/index.tfrecord"
        files = [url[len(root) + 1 :] for url, _ in list_prefix(root, RemoteOptions())]
    else:
        root = os.path.abspath(root)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"image folder {root!r} does not exist")
        target = os.path.abspath(os.fspath(out if out is not None else f"{root}/index.tfrecord"))
        index_dir = os.path.dirname(target)
        if os.path.commonpath([index_dir, root]) != index_dir:
            raise ValueError(
                f"the index folder {index_dir!r} does not contain the images under {root!r}; "
                "paths are stored relative to the index folder, so write the index inside the "
                "image folder (the default) or one of its parents"
            )
        with progress_bar(progress, desc="finding images", unit=" files") as bar:
            files = list(_walk(root, bar))
    exts = tuple(e.lower() for e in extensions)
    found: list[tuple[str, str]] = []  # (class folder, path relative to root)
    skipped: dict[str, int] = {"not an image extension": 0, "not in a class folder": 0}
    examples: dict[str, list[str]] = {k: [] for k in skipped}
    for rel in files:
        parts = rel.split("/")
        if any(p.startswith(".") for p in parts) or rel.endswith((".tfrecord", ".tfrecord.gz")):
            continue
        reason = None
        if not unlabeled and len(parts) < 2:
            reason = "not in a class folder"
        elif not parts[-1].lower().endswith(exts):
            reason = "not an image extension"
        if reason:
            skipped[reason] += 1
            if len(examples[reason]) < 5:
                examples[reason].append(redact(f"{root}/{rel}"))
        else:
            found.append((parts[0], rel))
    if not found:
        raise ValueError(
            f"no images found under {redact(root)!r} (looked for {', '.join(exts)} files"
            + ("" if unlabeled else " inside class sub-folders")
            + ")"
        )
    classes = None
    if not unlabeled:
        if remote:
            names = {c for c, _ in found}
        else:  # a class folder counts even when it holds no image
            names = {e.name for e in os.scandir(root) if e.is_dir()}
        classes = sorted(c for c in names if not c.startswith("."))
    label_of = {c: k for k, c in enumerate(classes or [])}
    labeled = [(label_of.get(c, -1), r) for c, r in found]
    if remote:
        labeled.sort()  # by class, then path (local files keep the walk's order)
    rels = [r for _, r in labeled]
    labels = [label for label, _ in labeled]
    kw: dict[str, Any] = {"shards": shards, "compression": compression, "classes": classes}
    kw["progress"] = progress
    if remote and is_url(target):
        index = _write_remote(target, root, rels, labels, kw)
    else:  # a local index: paths relative to its folder, or to the URL root
        paths = rels if remote else [os.path.join(root, r) for r in rels]
        index = write_index(target, paths, labels, root=root if remote else None, **kw)
    report = {
        "images": len(found),
        "classes": len(classes) if classes is not None else 0,
        "skipped": skipped,
        "skipped_examples": examples,
        "files": list(index.files),
    }
    return index, report


def _walk(root: str, bar: Any) -> Iterator[str]:
    """Every file under ``root`` (relative, ``/``-separated): a folder's files in sorted order,
    then its sub-folders', each in sorted order; hidden folders left out."""
    entries = sorted(os.scandir(root), key=lambda e: e.name)
    yield from (e.name for e in entries if e.is_file())
    for e in entries:
        if e.is_dir() and not e.name.startswith("."):
            for dirpath, dirnames, filenames in os.walk(e.path):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
                yield from (f"{rel}/{f}" for f in sorted(filenames))
                bar.update(len(filenames))


def _write_remote(
    target: str, root: str, rels: list[str], labels: list[int], kw: dict[str, Any]
) -> PathIndex:
    """Write the index beside remote images: locally first, then each shard uploaded."""
    if parent(target) != root:
        raise ValueError(
            f"a remote index must sit in the image prefix {redact(root)!r} (its paths are "
            f"relative to its folder), not at {redact(target)!r}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, target.rsplit("/", 1)[1])
        index = write_index(local, rels, labels, root=root, cache=False, **kw)
        names = [root + "/" + os.path.basename(f) for f in index.files]
        for f, name in zip(index.files, names, strict=True):
            with open(f, "rb") as fh:
                put(name, fh.read(), RemoteOptions())
    return PathIndex.read(names if len(names) > 1 else names[0])
