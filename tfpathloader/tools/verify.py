"""Check that every file a path index names would load (and, optionally, decodes).

NOTE [verify = loaders]: verify opens every file with the loaders' own FileReader (regular files
only, the size limit, the root rule on resolved paths) and, with ``decode``, reads and decodes
it with the loaders' one decode path (NOTE [one decode path]: the PNG checks, animated GIFs, the
decompression-bomb limit, the decoders themselves), so what verify flags is exactly what either
loader refuses.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .._utils import progress_bar
from ..errors import ImageLoadError
from ..index import PathIndex
from ..load.decode import decode_image, load_image
from ..load.files import DEFAULT_MAX_FILE_BYTES, FileReader
from ..storage import FetchError, is_url, redact, shared_fetcher

__all__ = ["Failure", "VerifyReport", "verify_index"]


@dataclass(frozen=True)
class Failure:
    """One record whose file is missing or broken."""

    record_id: int
    path: str
    problem: str


@dataclass
class VerifyReport:
    """Outcome of :func:`verify_index`: every failure, none left out."""

    records: int
    decoded: bool
    failures: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _check_chunk(args: tuple[PathIndex, FileReader, bool, np.ndarray]) -> list[Failure]:
    """Open (and with ``decode``, decode) the files of ``ids`` as the loaders would."""
    index, reader, decode, ids = args
    out = []
    for i in ids.tolist():
        try:
            if decode:
                load_image(index.path(i), record_id=i, reader=reader)
            else:
                reader.check(index.path(i), i)
        except ImageLoadError as e:
            out.append(Failure(i, e.path, e.cause))
    return out


def verify_index(
    index: PathIndex,
    *,
    decode: bool = False,
    workers: int | None = None,
    progress: bool | None = None,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    allow_outside_root: bool | None = None,
) -> VerifyReport:
    """Check every record's file as the loaders open it; with ``decode``, also decode it.

    Args:
        index: The index to check.
        decode: Decode every image (slower; uses ``workers`` processes).
        workers: Processes for decoding (default: all cores).
        progress: Progress bar (``None``: only on a terminal).
        max_file_bytes: The loaders' size limit to check against (default 256 MiB).
        allow_outside_root: Accept symlinks leading outside the root (default: the index's
            own setting, as in :func:`~tfpathloader.make_loader`).

    Returns:
        A report listing *every* failure, in record order.
    """
    if allow_outside_root is None:
        allow_outside_root = index.allow_outside_root
    reader = FileReader(
        root=index.root, allow_outside_root=allow_outside_root, max_file_bytes=max_file_bytes
    )
    report = VerifyReport(records=len(index), decoded=decode)
    if is_url(index.root):
        return _verify_remote(index, report, progress)
    ids = np.arange(len(index), dtype=np.int64)
    chunks = [(index, reader, decode, ids[s : s + 512]) for s in range(0, len(ids), 512)]
    workers = (workers or os.cpu_count() or 1) if decode else 1
    desc = "decoding images" if decode else "checking files"
    with (
        progress_bar(progress, desc=desc, total=len(ids), unit=" files") as bar,
        ExitStack() as on_exit,
    ):
        results: Iterable[list[Failure]] = map(_check_chunk, chunks)
        if workers > 1 and len(chunks) > 1:
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else None)
            results = on_exit.enter_context(ctx.Pool(workers)).imap(_check_chunk, chunks)
        for chunk, failures in zip(chunks, results, strict=True):
            report.failures += failures
            bar.update(len(chunk[3]))
    return report


def _verify_remote(index: PathIndex, report: VerifyReport, progress: bool | None) -> VerifyReport:
    """Remote files: a HEAD each (or, with decode, a GET and a decode), many in flight."""
    fetcher = shared_fetcher()
    n = len(index)
    step = 4 * fetcher.options.in_flight
    desc = "decoding remote images" if report.decoded else "checking remote files"
    with progress_bar(progress, desc=desc, total=n, unit=" files") as bar:
        for lo in range(0, n, step):
            ids = np.arange(lo, min(n, lo + step), dtype=np.int64)
            paths = index.paths(ids)
            results = (fetcher.fetch_many if report.decoded else fetcher.head_many)(paths)
            for i, path, r in zip(ids.tolist(), paths, results, strict=True):
                if isinstance(r, FetchError):
                    report.failures.append(Failure(i, redact(path), r.cause))
                elif isinstance(r, bytes):
                    try:
                        decode_image(r, path=redact(path), record_id=i)
                    except ImageLoadError as e:
                        report.failures.append(Failure(i, e.path, e.cause))
            bar.update(len(ids))
    return report
