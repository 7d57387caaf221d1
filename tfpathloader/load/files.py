"""Read image files safely: regular files only, a size limit, and the root rule on resolved paths.

NOTE [hostile files]: a loader runs for days over folders that other people and programs write,
so a path is opened before anything is trusted about it. ``open`` gets ``O_NONBLOCK`` (opening a
FIFO for reading otherwise waits forever for a writer; on a regular file the flag does nothing)
and ``fstat`` on the open descriptor says what it really is: a FIFO, a device (``/dev/zero``
reads forever), a socket (``open`` fails with ENXIO) or a directory is refused, naming what it
is. The size limit is checked from the same ``fstat`` before a byte is read (a 6 GB sparse file
is refused at once), and the read itself stops one byte over the limit, so a file that grows
while it is read cannot take unbounded memory either. Because the checks and the read use one
descriptor, a file swapped for a FIFO between check and read cannot slip through.

NOTE [root rule]: the index refuses paths whose *text* leaves the root; a symlink inside the root
can still lead anywhere. With the rule on, a file's folder is resolved with ``realpath`` (cached
per folder: most files share a few folders, so the cost is one dict lookup per file) and the
file itself is opened with ``O_NOFOLLOW``; only when it is a symlink (``ELOOP``) is its target
resolved and checked. ``allow_outside_root=True`` turns all of it off. The cache assumes folders
are not re-pointed while a loader runs; a folder swapped for a symlink mid-run is seen by the
next process (workers, a new loader) that resolves it.
"""

from __future__ import annotations

import errno
import os
import stat

from ..errors import ImageLoadError

__all__ = ["DEFAULT_MAX_FILE_BYTES", "FileReader"]

DEFAULT_MAX_FILE_BYTES = 256 * 2**20
"""Default ``max_file_bytes``: large for a photo (a 50 MP JPEG is about 25 MB) and enough for
an uncompressed 8-bit RGB TIFF scan of 89 M pixels (Pillow's own pixel limit)."""

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_MAX_CACHED_FOLDERS = 1 << 16


def check_max_file_bytes(value: object) -> int:
    """``value`` as a file size limit, or a ValueError saying what is valid."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_file_bytes must be an integer >= 1 (bytes), got {value!r}")
    return int(value)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "is a directory, expected an image file"
    if stat.S_ISFIFO(mode):
        return "is a FIFO (named pipe), not a regular file; only regular files are read"
    if stat.S_ISCHR(mode):
        return "is a character device, not a regular file; only regular files are read"
    if stat.S_ISBLK(mode):
        return "is a block device, not a regular file; only regular files are read"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a regular file; only regular files are read"
    return "is not a regular file; only regular files are read"


class FileReader:
    """Opens and reads image files under the rules of NOTE [hostile files] and NOTE [root rule].

    Args:
        root: The index root; ``None`` applies no root rule.
        allow_outside_root: Follow symlinks wherever they lead (no root rule).
        max_file_bytes: Refuse files larger than this many bytes.
    """

    def __init__(
        self,
        *,
        root: str | None = None,
        allow_outside_root: bool = False,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ):
        self.max_file_bytes = check_max_file_bytes(max_file_bytes)
        self.root = os.path.abspath(root) if root is not None else None
        self.allow_outside_root = bool(allow_outside_root)
        self._rule = self.root is not None and not self.allow_outside_root
        self._real_root = os.path.realpath(self.root) if self.root is not None else ""
        self._folders: dict[str, str | None] = {}  # folder -> its realpath when outside, else None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_folders"] = {}
        return state

    def __repr__(self) -> str:
        return (
            f"FileReader(root={self.root!r}, allow_outside_root={self.allow_outside_root}, "
            f"max_file_bytes={self.max_file_bytes})"
        )

    # -- the root rule ----------------------------------------------------------------------

    def _inside(self, real: str) -> bool:
        r = self._real_root
        return real == r or real.startswith(r if r.endswith(os.sep) else r + os.sep)

    def _outside_message(self, real: str, what: str) -> str:
        return (
            f"{what} resolves to {real!r}, outside the index root {self.root!r} (a symlink "
            "leads out); pass allow_outside_root=True (--allow-outside-root) if that is intended"
        )

    def _check_folder(self, path: str, record_id: int) -> None:
        folder = os.path.dirname(path)
        try:
            outside = self._folders[folder]
        except KeyError:
            real = os.path.realpath(folder)
            outside = None if self._inside(real) else real
            if len(self._folders) >= _MAX_CACHED_FOLDERS:
                self._folders.clear()
            self._folders[folder] = outside
        if outside is not None:
            raise ImageLoadError(record_id, path, self._outside_message(outside, "its folder"))

    def _follow(self, path: str, record_id: int) -> str:
        """The target of the symlink ``path`` (checked against the root), or why there is none."""
        try:
            target = os.path.realpath(path, strict=True)
        except FileNotFoundError:
            dest = _readlink(path)
            raise ImageLoadError(
                record_id, path, f"broken symlink: its target {dest!r} does not exist"
            ) from None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise ImageLoadError(record_id, path, "symlink loop (too many levels)") from None
            raise ImageLoadError(record_id, path, f"cannot resolve: {e.strerror or e}") from None
        if not self._inside(target):
            raise ImageLoadError(record_id, path, self._outside_message(target, "the symlink"))
        return target

    # -- opening and reading ----------------------------------------------------------------

    def _open(self, path: str, record_id: int) -> tuple[int, os.stat_result]:
        """A descriptor of ``path`` (a regular file within the limit) and its ``fstat``."""
        flags = os.O_RDONLY | _O_CLOEXEC | _O_NONBLOCK
        try:
            if self._rule:
                self._check_folder(path, record_id)
                try:
                    fd = os.open(path, flags | _O_NOFOLLOW)
                except OSError as e:
                    if e.errno != errno.ELOOP:  # ELOOP: the file is a symlink
                        raise
                    fd = os.open(self._follow(path, record_id), flags | _O_NOFOLLOW)
            else:
                fd = os.open(path, flags)
        except ImageLoadError:
            raise
        except FileNotFoundError:
            cause = "file not found"
            if os.path.islink(path):
                cause = f"broken symlink: its target {_readlink(path)!r} does not exist"
            raise ImageLoadError(record_id, path, cause) from None
        except PermissionError:
            raise ImageLoadError(record_id, path, "permission denied") from None
        except OSError as e:
            raise ImageLoadError(record_id, path, _open_error(path, e)) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ImageLoadError(record_id, path, _kind(st.st_mode))
            if st.st_size > self.max_file_bytes:
                raise ImageLoadError(record_id, path, self._too_large(st.st_size))
        except BaseException:
            os.close(fd)
            raise
        return fd, st

    def _too_large(self, size: int) -> str:
        return (
            f"file is {size:,} bytes, over the max_file_bytes limit of {self.max_file_bytes:,} "
            "(pass a larger max_file_bytes= to read it)"
        )

    def check(self, path: str, record_id: int = -1) -> None:
        """Raise :class:`ImageLoadError` if ``path`` would not be read (nothing is read)."""
        fd, st = self._open(path, record_id)
        os.close(fd)
        if st.st_size == 0:
            raise ImageLoadError(record_id, path, "file is empty (0 bytes), expected an image")

    def read(self, path: str, record_id: int = -1) -> bytes:
        """The bytes of ``path``; an :class:`ImageLoadError` says why they could not be read."""
        fd, st = self._open(path, record_id)
        try:
            size = st.st_size
            data = os.read(fd, size + 1)  # one byte over: getting it means the file grew
            if len(data) != size:  # grew, shrank, a short read, or no size (/proc)
                data += self._read_rest(fd, path, record_id, len(data))
        except OSError as e:
            raise ImageLoadError(
                record_id, path, f"could not read the file: {e.strerror or e}"
            ) from None
        finally:
            os.close(fd)
        if not data:
            raise ImageLoadError(record_id, path, "file is empty (0 bytes), expected an image")
        return data

    def _read_rest(self, fd: int, path: str, record_id: int, have: int) -> bytes:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            have += len(chunk)
            if have > self.max_file_bytes:
                raise ImageLoadError(record_id, path, self._too_large(have) + "; it grew")
            chunks.append(chunk)
        return b"".join(chunks)


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _open_error(path: str, e: OSError) -> str:
    if e.errno == errno.ENXIO:  # opening a socket
        try:
            return _kind(os.stat(path).st_mode)
        except OSError:
            pass
    if e.errno == errno.ELOOP:
        return "symlink loop (too many levels)"
    if e.errno == errno.ENOTDIR:
        return "file not found (a part of the path is not a folder)"
    return f"could not open the file: {e.strerror or e}"
