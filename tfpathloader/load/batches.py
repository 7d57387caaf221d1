"""One batch, read and decoded: the job both backends run (torch workers, tf.data's map).

A :class:`DecodeJob` is picklable and holds what a batch needs (the index, the reader with its
size limit and root rule, the :class:`~.decode.Recipe`); calling it with a batch's ids reads the
files (a URL root: all at once, NOTE [remote batches]) and runs :func:`~.decode.decode_batch`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ImageLoadError
from ..index import PathIndex
from ..storage import FetchError, RemoteOptions, is_url, redact, shared_fetcher
from .decode import Recipe, decode_batch, inspect, render
from .files import FileReader
from .workers import ALIGN, aligned

__all__ = ["BatchOutcome", "DecodeJob"]


@dataclass
class BatchOutcome:
    """A decoded batch: the ids of its rows (``n`` of them), skips, or the error that ended it.

    ``array`` holds the rows when the job made its own array (no slot was given).
    """

    ids: np.ndarray
    labels: np.ndarray
    skipped: list[tuple[int, str, str]] = field(default_factory=list)
    error: BaseException | None = None
    remote: dict[str, int] | None = None
    array: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.ids)


def _aligned(shape: tuple[int, ...]) -> np.ndarray:
    """A new uint8 array that tf.data takes without a copy (4-10 ms less per 38 MB batch of
    224px images, measured)."""
    n = int(np.prod(shape))
    return aligned(np.empty(n + ALIGN, np.uint8), n).reshape(shape)


class DecodeJob:
    """Read and decode the batch of ``ids`` into ``out`` (NOTE [one decode path]).

    Args:
        index: The path index.
        recipe: How each record is decoded.
        shape: ``(H, W, C)`` of every row.
        reader: Opens the files (the size limit and root rule, NOTE [hostile files]).
        skip: ``on_error="skip"``.
        remote: How a URL root is read.
    """

    def __init__(
        self,
        index: PathIndex,
        recipe: Recipe,
        shape: tuple[int, ...],
        reader: FileReader,
        *,
        skip: bool,
        remote: RemoteOptions,
    ):
        self.index, self.recipe, self.shape = index, recipe, tuple(shape)
        self.reader, self.skip, self.remote = reader, skip, remote
        self.remote_root = is_url(index.root)
        self.probe_stats: dict[str, int] | None = None
        # A forkserver or spawned worker gets Pillow's decompression-bomb limit with the job.
        self.max_image_pixels = Image.MAX_IMAGE_PIXELS

    @property
    def channels_last(self) -> bool:
        """Rows are HxWxC (decoded, or a pipeline's), not a user callable's CxHxW."""
        return self.recipe.callback is None

    @property
    def channels(self) -> int:
        return int(self.shape[2] if self.channels_last else self.shape[0])

    def shape_of(self, i: int) -> tuple[int, ...]:
        """The shape record ``i`` decodes to (from its header; a user callable's by running it).

        Raises:
            ImageLoadError: when record ``i`` cannot be read or decoded.
        """
        path = self.index.path(i)
        data, stats = self._read([i], [path])
        self.probe_stats = stats  # counted by the loader (its retries are the loader's)
        if isinstance(data[0], BaseException):
            raise data[0]
        src = inspect(data[0], self.recipe, record_id=i, path=path, epoch=0)
        if self.recipe.callback is not None:
            return render(src, self.recipe).shape
        return (*src.plan.size, self.recipe.channels or (1 if src.grey else 3))

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        Image.MAX_IMAGE_PIXELS = self.max_image_pixels

    def __call__(self, ids: np.ndarray, epoch: int, out: np.ndarray | None = None) -> BatchOutcome:
        ids = np.asarray(ids, dtype=np.int64)
        array = None
        if out is None:
            out = array = _aligned((len(ids), *self.shape))
        paths = self.index.paths(ids)
        data, remote = self._read(ids.tolist(), paths)
        records = list(
            zip(
                ids.tolist(),
                [redact(p) for p in paths] if self.remote_root else paths,
                data,
                strict=True,
            )
        )
        got = decode_batch(records, self.recipe, out, epoch=int(epoch), skip=self.skip)
        kept = np.asarray(got.kept, dtype=np.int64)
        labels = np.asarray(self.index.labels[kept], dtype=np.int64)
        if array is not None:
            array = array[: len(kept)]
        return BatchOutcome(kept, labels, got.skipped, got.error, remote, array)

    # NOTE [remote batches]: with a URL root, a batch's files are requested all at once (up to
    # remote.in_flight in flight) before any is decoded, and decoded in the batch's order, so
    # latency is paid about once per batch instead of once per image while the batch keeps the
    # order's exact sequence. A local root reads with os.open/os.read, one file at a time.
    def _read(self, ids: list[int], paths: list[str]) -> tuple[list[Any], dict[str, int] | None]:
        if not self.remote_root:
            data: list[Any] = []
            for i, p in zip(ids, paths, strict=True):
                try:
                    data.append(self.reader.read(p, i))
                except ImageLoadError as e:
                    data.append(e)
            return data, None
        fetcher = shared_fetcher(self.remote)
        got = fetcher.fetch_many(paths)
        data = [
            ImageLoadError(i, redact(p), g.cause) if isinstance(g, FetchError) else g
            for i, p, g in zip(ids, paths, got, strict=True)
        ]
        return data, fetcher.take_stats()
