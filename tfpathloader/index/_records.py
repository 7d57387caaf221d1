"""TFRecord framing: read records with their CRCs checked, write them atomically.

A TFRecord file is a sequence of ``uint64 length | uint32 masked_crc32c(length) | data |
uint32 masked_crc32c(data)``, optionally GZIP-compressed as a whole. The ``tfrecord`` package's
reader skips both CRCs and reports truncation without a position, so the framing is done here;
the checksum itself is the well-kept ``crc32c`` package (the one ``tfrecord`` uses).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import struct
import zlib
from collections.abc import Iterator
from typing import Any, BinaryIO, cast

import crc32c

from ..errors import IndexFormatError

__all__ = ["RecordWriter", "is_gzip", "iter_records", "masked_crc"]

_HEADER = struct.Struct("<QI")
_CRC = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8
_GZIP_MAGIC = b"\x1f\x8b"
# A path-index record is a few hundred bytes; anything this large is a corrupt length field.
_MAX_RECORD_BYTES = 1 << 30


def masked_crc(data: bytes | memoryview) -> int:
    """The masked CRC-32C that TFRecord stores after the length and after the data."""
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def is_gzip(path: str) -> bool:
    """Whether ``path`` starts with the GZIP magic bytes."""
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def _open_for_read(path: str) -> BinaryIO:
    if is_gzip(path):
        return cast(BinaryIO, gzip.open(path, "rb"))
    return open(path, "rb", buffering=1 << 20)


def iter_records(path: str) -> Iterator[bytes]:
    """Yield the data of every record in ``path``, checking both CRCs of each.

    Raises:
        IndexFormatError: naming the file and the 0-based record number, for a truncated
            file, a CRC mismatch, an absurd length, or a GZIP stream that does not decompress.
    """
    record = 0

    def bad(reason: str) -> IndexFormatError:
        return IndexFormatError(reason, file=path, record=record)

    with _open_for_read(path) as f:
        try:
            while header := f.read(12):
                if len(header) < 12:
                    raise bad(
                        f"file is truncated: expected a 12-byte record header, found "
                        f"{len(header)} bytes"
                    )
                length, length_crc = _HEADER.unpack(header)
                if masked_crc(header[:8]) != length_crc:
                    raise bad(
                        "CRC mismatch in the record length: the file is corrupt or not a TFRecord"
                    )
                if length > _MAX_RECORD_BYTES:
                    raise bad(f"record length {length} bytes is implausible for a path index")
                body = _read_exactly(f, length + 4)
                if len(body) < length + 4:
                    raise bad(
                        f"file is truncated: expected {length} data bytes and a 4-byte CRC, "
                        f"found {len(body)} bytes"
                    )
                data = body[:length]
                if masked_crc(data) != _CRC.unpack_from(body, length)[0]:
                    raise bad("CRC mismatch in the record data: the file is corrupt")
                yield data
                record += 1
        except (zlib.error, EOFError, gzip.BadGzipFile) as e:
            raise bad(f"GZIP stream is broken: {e}") from e
        except OSError as e:
            raise bad(f"could not read the file: {e}") from e


def _read_exactly(f: BinaryIO, n: int, chunk: int = 1 << 20) -> bytes:
    """Up to ``n`` bytes; a corrupt length field must not allocate gigabytes up front."""
    if n <= chunk:
        return f.read(n)
    parts = []
    while n > 0:
        part = f.read(min(n, chunk))
        if not part:
            break
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


class RecordWriter:
    """Writes TFRecord records to ``path``, optionally GZIP-compressed.

    Use as a context manager; the file appears complete or not at all: it is written under a
    temporary name and renamed into place when closed.
    """

    def __init__(self, path: str, *, compression: str | None = None):
        if compression not in (None, "gzip"):
            raise ValueError(f"compression must be None or 'gzip', got {compression!r}")
        self.path = path
        self._tmp = _tmp_name(path)
        raw = open(self._tmp, "wb")  # noqa: SIM115 - closed in close()
        self._raw = raw
        self._f: BinaryIO = (
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0)  # type: ignore[assignment]
            if compression == "gzip"
            else raw
        )
        self._done = False

    def write(self, data: bytes) -> None:
        """Append one record."""
        header = struct.pack("<Q", len(data))
        self._f.write(header)
        self._f.write(_CRC.pack(masked_crc(header)))
        self._f.write(data)
        self._f.write(_CRC.pack(masked_crc(data)))

    def close(self) -> None:
        """Finish the file and move it into place."""
        if not self._done:
            os.replace(self.finish(), self.path)

    def finish(self) -> str:
        """Complete the file under its temporary name, returned; moving it is up to the caller."""
        self._done = True
        if self._f is not self._raw:
            self._f.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        return self._tmp

    def abort(self) -> None:
        """Discard what was written; ``path`` is left untouched."""
        if self._done:
            return
        self._done = True
        with contextlib.suppress(Exception):
            if self._f is not self._raw:
                self._f.close()
            self._raw.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _tmp_name(path: str) -> str:
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}.tmp-{os.getpid()}")
