"""Error types: every failure names the file, the record and what was expected."""

from __future__ import annotations

from typing import Any

from ._redact import redact

__all__ = [
    "BatchShapeError",
    "ImageLoadError",
    "IndexFormatError",
    "LoaderWorkerError",
    "TFPathLoaderError",
    "TransformOutputError",
]


class TFPathLoaderError(Exception):
    """Base class of every error tfpathloader raises on purpose."""


class IndexFormatError(TFPathLoaderError, ValueError):
    """A path-index file is unreadable or does not hold what the format requires.

    Attributes:
        file: The shard the problem was found in (``None`` when it concerns the whole index).
        record: 0-based record number inside ``file`` (``None`` when it concerns the whole file).
        reason: What was wrong and what was expected.
    """

    def __init__(self, reason: str, file: str | None = None, record: int | None = None):
        self.file = file
        self.record = record
        self.reason = reason
        where = [str(file)] if file is not None else []
        if record is not None:
            where.append(f"record {record}")
        super().__init__(f"{', '.join(where)}: {reason}" if where else reason)

    def __reduce__(self) -> tuple[Any, ...]:  # the fields survive crossing a worker process
        return (type(self), (self.reason, self.file, self.record))


class _RecordError(TFPathLoaderError):
    """A failure of one record: its id, its path and what went wrong.

    Attributes:
        record_id: The record id (``index`` feature) of the image.
        path: The absolute path that was read.
        cause: A short description of what failed.
    """

    def __init__(self, record_id: int, path: str, cause: str):
        self.record_id = int(record_id)
        self.path = path
        self.cause = cause
        super().__init__(f"record {record_id} ({path}): {cause}")

    def __reduce__(self) -> tuple[Any, ...]:  # the fields survive crossing a worker process
        return (type(self), (self.record_id, self.path, self.cause))


class ImageLoadError(_RecordError):
    """An image named by the index could not be read or decoded.

    Attributes:
        record_id: The record id (``index`` feature) of the image.
        path: The absolute path that was read (a URL without its credentials).
        cause: A short description of what failed.
    """

    def __init__(self, record_id: int, path: str, cause: str):
        super().__init__(record_id, redact(path), cause)  # no credentials (NOTE [redaction])


class BatchShapeError(_RecordError, ValueError):
    """Images of one batch decode to different shapes (pass ``size=(h, w)`` to resize them).

    Attributes:
        record_id: The first record whose shape differs from the batch's first image.
        path: Its path.
        message: The whole message (also ``cause``).
    """

    def __init__(self, record_id: int, path: str, message: str):
        super().__init__(record_id, path, message)
        self.args = (message,)  # the message names the record and path itself

    @property
    def message(self) -> str:
        return self.cause


class TransformOutputError(_RecordError, TypeError):
    """A loader's ``transform`` returned something other than a ``C x H x W`` uint8 array.

    Raised the same way by both backends, in ``on_error="skip"`` mode too: it is a bug in the
    transform, not a bad image.

    Attributes:
        record_id: The record whose image the transform was given.
        path: That image's path.
        cause: What it returned and what was expected.
    """


class LoaderWorkerError(TFPathLoaderError, RuntimeError):
    """A loader's worker process died mid-epoch (killed, out of memory, crashed).

    The loader has stopped its workers; its state still counts the batches that were delivered,
    so iterating again (or a fresh loader given ``state_dict()``) resumes the epoch there.
    """
