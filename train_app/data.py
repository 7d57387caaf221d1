"""The data of a training run: find or make the index, check it, split off the held-out part.

Everything here runs before the first step, so that a run over a user's own folder fails fast
with one line per problem (:class:`~train_app.errors.RunConfigError`) instead of a traceback
an epoch later.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tfpathloader import PathIndex
from tfpathloader.errors import TFPathLoaderError
from tfpathloader.order.spec import Stream

from .errors import RunConfigError

__all__ = [
    "DEFAULT_ROOT",
    "HOLDOUT_STREAM",
    "RunData",
    "check_images",
    "holdout_split",
    "locate_index",
    "obtain_index",
    "prepare_data",
    "subset",
    "write_split",
]

log = logging.getLogger("train")
DEFAULT_ROOT = "data"
_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

# NOTE [held-out split]: without a test index, a run evaluates on a part of its own index that
# it never trains on. The split is a pure function of (labels, fraction, seed): stratified by
# label (every class keeps its share, so a rare class is not left out of the evaluation by
# chance), drawn from its own random stream so that it never shares randomness with the
# order (streams 0-3 are the orders' and the transforms'; see tfpathloader.order), and
# identical on every rank and on resume. Records with label -1 cannot be trained on and are
# rejected before the split.
HOLDOUT_STREAM = int(Stream.HOLDOUT)  # every stream is named in tfpathloader/order/spec.py


@dataclass
class RunData:
    """What a run trains and evaluates on.

    Attributes:
        train: The index the loader shuffles (a subset when a part is held out).
        test: The index evaluated on.
        summary: JSON-able description for ``metrics.json`` (where each part came from).
        held_out_ids: Record ids of the full index held out (empty when a test index is used).
    """

    train: PathIndex
    test: PathIndex
    summary: dict[str, Any] = field(default_factory=dict)
    held_out_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def subset(index: PathIndex, ids: np.ndarray) -> PathIndex:
    """A new index of the records ``ids`` (renumbered ``0..len(ids)-1``, same root and classes).

    Args:
        index: The full index.
        ids: Record ids to keep, in the order they should have in the subset.
    """
    ids = np.asarray(ids, dtype=np.int64)
    offsets = np.asarray(index.offsets, dtype=np.int64)
    starts = offsets[ids]
    lengths = offsets[ids + 1] - starts
    new_offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    gather = np.repeat(starts - new_offsets[:-1], lengths) + np.arange(new_offsets[-1])
    return PathIndex(
        labels=np.asarray(index.labels)[ids].copy(),
        offsets=new_offsets,
        paths=np.asarray(index.path_buffer)[gather].copy(),
        root=index.root,
        classes=index.classes,
    )


def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split record ids into (train, held out), stratified by label; see NOTE [held-out split].

    Every label with ``c >= 2`` records gives ``round(c * fraction)`` of them, at least 1 and at
    most ``c - 1``. Both arrays are sorted.

    Raises:
        ValueError: for a fraction outside (0, 1) or a label with fewer than 2 records.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the held-out fraction must lie in (0, 1), got {fraction}")
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng([seed, HOLDOUT_STREAM])
    held: list[np.ndarray] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < 2:
            raise ValueError(f"label {label} has {len(members)} record; a split needs 2")
        k = min(len(members) - 1, max(1, round(len(members) * fraction)))
        held.append(rng.choice(members, size=k, replace=False))
    out = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    keep = np.ones(len(labels), dtype=bool)
    keep[out] = False
    return np.flatnonzero(keep).astype(np.int64), out.astype(np.int64)


def _has_index(path: str) -> bool:
    from tfpathloader.errors import IndexFormatError
    from tfpathloader.index.names import resolve_index_files
    from tfpathloader.storage import FetchError, is_url, shared_fetcher

    if is_url(path):
        try:
            shared_fetcher().head(path)
        except FetchError:
            return False
        return True

    try:
        resolve_index_files(path)
    except IndexFormatError:
        return False
    return True


def _class_folders(root: str) -> list[str]:
    """Sub-folders of ``root`` that hold images directly (what ``index build`` would index)."""
    found = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir() and not entry.name.startswith("."):
            with os.scandir(entry.path) as it:
                if any(f.name.lower().endswith(_IMAGE_EXT) for f in it):
                    found.append(entry.name)
    return found


def locate_index(
    root: str,
    name: str,
    *,
    default_root: bool,
    make_demo: bool | None,
) -> tuple[str, bool]:
    """Where the run's index is, and whether the demo data must be made first.

    Args:
        root: ``data.root`` (absolute).
        name: ``data.index`` (relative to ``root``, or absolute).
        default_root: Whether ``root`` is the configured default (``data``).
        make_demo: ``data.make_demo_if_missing``: ``None`` makes the demo only at the default
            root, ``True`` at any root, ``False`` never.

    Raises:
        RunConfigError: when there is no index and the demo may not be made there, saying how
            to build an index or make the demo.
    """
    path = os.path.join(root, name)
    if _has_index(path):
        return path, False
    allowed = make_demo if make_demo is not None else default_root
    exists = os.path.isdir(root)
    entries = [e for e in os.listdir(root) if not e.startswith(".")] if exists else []
    demo_leftover = exists and os.path.isfile(os.path.join(root, "demo.json"))
    if allowed and (not entries or demo_leftover):
        return path, True
    if not exists:
        raise RunConfigError(
            f"data.root={root}: no such folder. Point data.root at a folder with an index "
            "(tfpathloader index build IMAGES), or add data.make_demo_if_missing=true to make "
            "the demo digits there (70,000 PNGs, ~350 MB)"
        )
    classes = _class_folders(root)
    if classes:
        shown = ", ".join(classes[:4]) + (" ..." if len(classes) > 4 else "")
        raise RunConfigError(
            f"data.root={root} has {len(classes)} class folders ({shown}) but no path index "
            f"{name}: build it with  tfpathloader index build {root}"
        )
    others = [f for f in os.listdir(root) if f.endswith((".tfrecord", ".tfrecord.gz"))]
    hint = f" (it holds {', '.join(sorted(others)[:3])}: set data.index=...)" if others else ""
    raise RunConfigError(
        f"data.root={root} holds no path index {name}{hint}. Build one from class folders "
        f"with  tfpathloader index build IMAGES --out {path} , or make the demo digits there "
        "with  tfpathloader demo "
        + root
        + ("" if entries else "  (or data.make_demo_if_missing=true)")
    )


def obtain_index(
    root: str,
    name: str,
    *,
    default_root: bool,
    make_demo: bool | None,
    demo: Callable[[], Any],
    dist: Any,
) -> str:
    """:func:`locate_index` on rank 0, making the demo there if allowed; the path on every rank.

    Args:
        root, name, default_root, make_demo: See :func:`locate_index`.
        demo: Makes the demo data in ``root``.
        dist: Rank, broadcast (:class:`train_app.dist.Dist`).

    Raises:
        RunConfigError: on every rank, when rank 0 found no index it may use.
    """
    outcome: tuple[str, list[str]] | None = None
    if dist.rank == 0:
        try:
            path, needs_demo = locate_index(
                root, name, default_root=default_root, make_demo=make_demo
            )
            if needs_demo:
                log.info("making the demo data in %s (70,000 PNGs, ~350 MB; once)", root)
                demo()
                log.info("made the demo data: %s", root)
            outcome = (path, [])
        except RunConfigError as e:
            outcome = ("", e.problems)
    path, problems = dist.broadcast(outcome)
    if problems:
        raise RunConfigError(problems)
    return path


def check_images(index: PathIndex, size: tuple[int, int] | None, *, sample: int = 32) -> list[str]:
    """Problems with a sample of the images (spread over the index): missing, undecodable, sizes.

    Returns:
        One line per problem (empty when the sample is fine).
    """
    import io

    from PIL import Image

    from tfpathloader.errors import ImageLoadError
    from tfpathloader.load.decode import read_file

    n = len(index)
    picks: np.ndarray = np.unique(
        np.linspace(0, max(0, n - 1), num=min(sample, n)).astype(np.int64)
    )
    problems: list[str] = []
    sizes: dict[tuple[int, int], tuple[int, str]] = {}
    for i in picks:
        path = index.path(int(i))
        try:
            with Image.open(io.BytesIO(read_file(path, int(i)))) as im:  # local or a URL
                sizes.setdefault(im.size, (int(i), path))
        except (OSError, ValueError, ImageLoadError) as e:
            problems.append(f"record {i} ({path}): cannot be read as an image: {e}")
    if size is None and len(sizes) > 1:
        shown = "; ".join(
            f"{w}x{h} (record {r}, {p})" for (w, h), (r, p) in list(sizes.items())[:2]
        )
        problems.append(
            f"the images differ in size: {shown}. Set data.size=[HEIGHT,WIDTH] to resize them all"
        )
    return problems


def _read(path: str, what: str, problems: list[str]) -> PathIndex | None:
    try:
        return PathIndex.read(path, progress=False)
    except (TFPathLoaderError, OSError, ValueError) as e:
        problems.append(f"{what} {path}: {e}")
        return None


def prepare_data(
    *,
    path: str,
    root: str,
    test_index: str | None,
    holdout: float,
    seed: int,
    size: tuple[int, int] | None,
    batch_size: int,
    drop_last: bool,
    world_size: int,
) -> RunData:
    """Check the index and split off the evaluation part (the index exists: :func:`locate_index`).

    Args:
        path: The training index (file, shards' name or glob).
        root: ``data.root`` (absolute): where ``test.tfrecord`` and a relative
            ``data.test_index`` are looked for.
        test_index: ``data.test_index``: ``"auto"`` (``test.tfrecord`` in the root if there
            is one, else a held-out part), ``None`` (always a held-out part) or an index path.
        holdout: Fraction of every label held out when there is no test index.
        seed: The run's seed (the held-out split derives from it).
        size: ``data.size`` (``None``: the images must all have one size).
        batch_size, drop_last, world_size: To check that an epoch has at least one step.

    Raises:
        RunConfigError: listing every problem found.
    """
    problems: list[str] = []
    full = _read(path, "data.index", problems)
    if full is None:
        raise RunConfigError(problems)
    labels = np.asarray(full.labels)
    if (labels < 0).any():
        problems.append(
            f"{path}: {(labels < 0).sum():,} records have no label (-1); training needs labels: "
            "rebuild it from class folders with  tfpathloader index build IMAGES"
        )
    classes_present = np.unique(labels[labels >= 0])
    if len(classes_present) < 2:
        problems.append(f"{path}: {len(classes_present)} class(es); training needs at least 2")
    problems += check_images(full, size)

    test_path = None
    if test_index == "auto":
        guess = os.path.join(root, "test.tfrecord")
        test_path = guess if _has_index(guess) else None
    elif test_index is not None:
        test_path = test_index if os.path.isabs(test_index) else os.path.join(root, test_index)

    summary: dict[str, Any] = {"index": path, "records": len(full)}
    held = np.zeros(0, dtype=np.int64)
    if test_path is not None:
        test = _read(test_path, "data.test_index", problems)
        train = full
        if test is not None:
            if test.classes and full.classes and tuple(test.classes) != tuple(full.classes):
                problems.append(
                    f"data.test_index {test_path}: its classes {list(test.classes)} differ from "
                    f"the training index's {list(full.classes)}"
                )
            elif len(test) and int(np.asarray(test.labels).max()) >= full.num_classes:
                problems.append(
                    f"data.test_index {test_path}: labels up to "
                    f"{int(np.asarray(test.labels).max())}, the training index has "
                    f"{full.num_classes} classes"
                )
        summary["evaluation"] = {"kind": "test index", "index": test_path}
    else:
        small = [full.label_name(int(k)) for k, c in enumerate(full.label_counts()) if 0 < c < 2]
        if small:
            problems.append(
                f"{path}: class(es) {', '.join(small)} have a single record; holding out a part "
                "for evaluation needs 2 per class (add images, or give data.test_index)"
            )
        test = train = full
        if not problems:
            keep, held = holdout_split(labels, holdout, seed)
            train, test = subset(full, keep), subset(full, held)
            summary["evaluation"] = {
                "kind": "held out",
                "fraction": holdout,
                "seed": seed,
                "stream": HOLDOUT_STREAM,
                "records": len(held),
                "per_label": {
                    full.label_name(int(k)): int(c)
                    for k, c in enumerate(np.bincount(labels[held], minlength=full.num_classes))
                },
                "note": "label-stratified, never trained on; training record ids are "
                "positions in the remaining records (held-out ids in split.json)",
            }
    summary["train_records"] = len(train)
    global_batch = batch_size * world_size
    if drop_last and len(train) < global_batch:
        problems.append(
            f"{len(train):,} training records make no full global batch of {global_batch} "
            "(loader.batch_size x ranks) with shuffle.drop_last=true: lower loader.batch_size"
        )
    if problems:
        raise RunConfigError(problems)
    assert test is not None
    return RunData(train=train, test=test, summary=summary, held_out_ids=held)


def write_split(folder: str, data: RunData) -> str | None:
    """Write ``split.json`` (the held-out record ids and how they were chosen) into ``folder``.

    Returns:
        The file, or ``None`` when nothing was held out (a test index was used).
    """
    if not len(data.held_out_ids):
        return None
    path = os.path.join(folder, "split.json")
    with open(path, "w") as f:
        json.dump({**data.summary, "held_out_ids": data.held_out_ids.tolist()}, f)
    return path
