"""Building a path index from a tree of class folders: a local folder or a listable URL prefix."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import Any

from .._utils import progress_bar
from ..storage import RemoteOptions
from ..storage.clients import list_prefix, put
from ..storage.urls import is_url, parent, redact
from .path_index import PathIndex
from .write import write_index

__all__ = ["IMAGE_EXTENSIONS", "build_index", "build_report"]

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
    the class folders in that order; their names travel with the index.

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
    if is_url(os.fspath(image_root)):  # s3://bucket/train: list the prefix instead
        return _build_remote(
            os.fspath(image_root),
            None if out is None else os.fspath(out),
            shards=shards,
            compression=compression,
            extensions=extensions,
            unlabeled=unlabeled,
            progress=progress,
        )
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
    return index, build_report(len(paths), classes, skipped, examples, index)


def build_report(
    images: int, classes: Any, skipped: Any, examples: Any, index: PathIndex
) -> dict[str, Any]:
    """What ``index build`` tells the user: images, classes, skips, the files written."""
    return {
        "images": images,
        "classes": len(classes) if classes is not None else 0,
        "skipped": skipped,
        "skipped_examples": examples,
        "files": list(index.files),
    }


def _build_remote(
    image_root: str,
    out: str | None,
    *,
    shards: int,
    compression: str | None,
    extensions: Sequence[str],
    unlabeled: bool,
    progress: bool | None,
    options: RemoteOptions | None = None,
) -> tuple[PathIndex, dict[str, Any]]:
    """:func:`~tfpathloader.index.build_index` over a listable URL prefix (class sub-folders).

    The same rules as for a local folder: class folders and files in sorted order, labels by
    class position, names starting with ``.`` left out.
    """
    options = options or RemoteOptions()
    root = image_root.rstrip("/")
    exts = tuple(e.lower() for e in extensions)
    skipped = {"not an image extension": 0, "not in a class folder": 0}
    examples: dict[str, list[str]] = {k: [] for k in skipped}
    found: list[tuple[str, str]] = []  # (class, relpath)
    for url, _ in list_prefix(root, options):
        rel = url[len(root) + 1 :]
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
                examples[reason].append(redact(url))
            continue
        found.append(("" if unlabeled else parts[0], rel))
    if not found:
        raise ValueError(f"no images found under {redact(root)!r} (looked for {', '.join(exts)})")
    classes = None if unlabeled else sorted({c for c, _ in found})
    label_of = {c: k for k, c in enumerate(classes or [])}
    found.sort(key=lambda cr: (label_of.get(cr[0], -1), cr[1]))
    rels = [r for _, r in found]
    labels = [label_of.get(c, -1) for c, _ in found]
    kw: dict[str, Any] = {"root": root, "shards": shards, "compression": compression,
                          "classes": classes, "progress": progress}  # fmt: skip
    if out is not None and not is_url(out):
        index = write_index(out, rels, labels, **kw)
    else:
        target = out or root + "/index.tfrecord"
        if parent(target) != root:
            raise ValueError(
                f"a remote index must sit in the image prefix {redact(root)!r} (its paths are "
                f"relative to its folder), not at {redact(target)!r}"
            )
        with tempfile.TemporaryDirectory() as tmp:
            local = write_index(
                os.path.join(tmp, target.rsplit("/", 1)[1]), rels, labels, cache=False, **kw
            )
            for f in local.files:
                with open(f, "rb") as fh:
                    put(root + "/" + os.path.basename(f), fh.read(), options)
            names = [root + "/" + os.path.basename(f) for f in local.files]
        index = PathIndex.read(names if len(names) > 1 else names[0])
    return index, build_report(len(rels), classes, skipped, examples, index)
